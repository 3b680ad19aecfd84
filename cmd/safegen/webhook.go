package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/safegen/safegen-go"
)

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runWebhook(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		out := e.stdout
		code := exitOK
		if len(args) == 0 {
			out, code = e.stderr, exitUsage
		}
		fmt.Fprintln(out, "usage: safegen webhook verify --secret S [--header 'Name: value']... [--body-file F]")
		return code
	}
	if args[0] != "verify" {
		return fail(e, false, usageError(fmt.Sprintf("unknown webhook command %q (want verify)", args[0])))
	}
	fs := newFlagSet("webhook verify", "webhook verify --secret S [--header 'Name: value']... [--body-file F] [flags]\n\n"+
		"Checks a delivery's signature (X-Signature, X-Clipia-Signature or Standard Webhooks) and prints the event.\n"+
		"Exit 0: valid; 1: rejected (bad signature, stale timestamp, malformed); 2: usage.")
	var secrets, headers multiFlag
	fs.Var(&secrets, "secret", "webhook secret, repeatable while rotating (default $SAFEGEN_WEBHOOK_SECRET)")
	fs.Var(&headers, "header", "a delivery header as 'Name: value', repeatable")
	bodyFile := fs.String("body-file", "-", "file holding the raw body ('-': standard input)")
	tolerance := new(time.Duration)
	durationFlag(fs, tolerance, "tolerance", 5*time.Minute, "accepted clock skew of the signature timestamp")
	jsonOut := fs.Bool("json", false, "print JSON")
	pos, code, done := parseFlags(fs, e, args[1:])
	if done {
		return code
	}
	if len(pos) > 0 {
		return fail(e, *jsonOut, usageError("webhook verify takes no positional arguments"))
	}
	if len(secrets) == 0 {
		if s := e.getenv("SAFEGEN_WEBHOOK_SECRET"); s != "" {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		return fail(e, *jsonOut, usageError("no secret: pass --secret or set SAFEGEN_WEBHOOK_SECRET"))
	}
	h := make(map[string][]string)
	for _, raw := range headers {
		name, value, ok := strings.Cut(raw, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fail(e, *jsonOut, usageError(fmt.Sprintf("--header %q is not 'Name: value'", raw)))
		}
		h[canonical(name)] = append(h[canonical(name)], strings.TrimSpace(value))
	}
	var in io.Reader = e.stdin
	if *bodyFile != "-" {
		f, err := os.Open(*bodyFile)
		if err != nil {
			return fail(e, *jsonOut, err)
		}
		defer f.Close()
		in = f
	}
	body, err := io.ReadAll(io.LimitReader(in, 1<<20+1))
	if err != nil {
		return fail(e, *jsonOut, err)
	}
	ev, err := safegen.ParseEvent(h, body, secrets, safegen.WithWebhookTolerance(*tolerance))
	if err != nil {
		if errors.Is(err, safegen.ErrWebhookSignature) || errors.Is(err, safegen.ErrWebhookTimestamp) || errors.Is(err, safegen.ErrWebhookMalformed) {
			if *jsonOut {
				printJSON(e, map[string]any{"valid": false, "error": message(err)})
			}
			fmt.Fprintf(e.stderr, "safegen: rejected: %s\n", message(err))
			return exitAPI
		}
		return fail(e, *jsonOut, err)
	}
	if *jsonOut {
		printJSON(e, map[string]any{"valid": true, "id": ev.ID, "type": ev.Type, "request_id": ev.RequestID, "generation": ev.Data})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "valid: %s %s generation=%s status=%s\n", ev.ID, ev.Type, ev.Data.ID, ev.Data.Status)
	return exitOK
}

func canonical(name string) string {
	return strings.TrimSpace(http.CanonicalHeaderKey(strings.TrimSpace(name)))
}
