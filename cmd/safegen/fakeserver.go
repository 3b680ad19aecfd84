package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/safegen/safegen-go/safegentest"
)

func runFakeServer(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("fake-server", "fake-server [--addr 127.0.0.1:8080] [--dialect D] [--faults drop=0.05,503=0.1] [flags]")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (use port 0 for any free port)")
	dialect := fs.String("dialect", "default", "vendor dialect: default, rimp, realm, relaystation, clipia, patomic")
	faults := fs.String("faults", "", "fault rates on billable POSTs: comma-separated 500=, 502=, 503=, 429=, reset=, drop=, latency= (0 to 1)")
	seed := fs.Int64("seed", 1, "seed of the fault draws")
	retryAfter := fs.String("retry-after", "1", "Retry-After of the random 429s")
	latency := new(time.Duration)
	durationFlag(fs, latency, "latency", 200*time.Millisecond, "added latency of the latency fault")
	perMinute := fs.Int("rate-limit", 120, "requests a minute per API key (0: no limit)")
	concurrent := fs.Int("concurrent", 10, "requests in flight per API key (0: no limit)")
	credits := fs.Int64("credits", 1_000_000, "credits of each account")
	workTime := new(time.Duration)
	durationFlag(fs, workTime, "work-time", 0, "time a create spends working (makes 409 request_in_progress reachable)")
	jsonOut := fs.Bool("json", false, "print the URL and keys as JSON")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return fail(e, *jsonOut, usageError("fake-server takes no positional arguments"))
	}
	d, err := parseServerDialect(*dialect)
	if err != nil {
		return fail(e, *jsonOut, err)
	}
	rates, err := parseFaults(*faults)
	if err != nil {
		return fail(e, *jsonOut, err)
	}
	rates.RetryAfter, rates.LatencyDur = *retryAfter, *latency
	if *perMinute < 0 || *concurrent < 0 || *credits < 0 || *workTime < 0 {
		return fail(e, *jsonOut, usageError("--rate-limit, --concurrent, --credits and --work-time must not be negative"))
	}
	opts := []safegentest.Option{safegentest.WithDialect(d), safegentest.WithRateLimit(*perMinute, *concurrent),
		safegentest.WithCredits(*credits), safegentest.WithWorkTime(*workTime)}
	if *faults != "" {
		opts = append(opts, safegentest.WithFaultRates(rates, *seed))
	}
	srv, err := safegentest.Listen(*addr, opts...)
	if err != nil {
		return fail(e, *jsonOut, err)
	}
	defer srv.Close()
	if *jsonOut {
		printJSON(e, map[string]any{"url": srv.URL, "api_key": srv.APIKey, "webhook_secret": srv.WebhookSecret, "dialect": string(d)})
	} else {
		fmt.Fprintf(e.stdout, "fake Generation API (dialect %s) listening on %s\n", d, srv.URL)
		fmt.Fprintf(e.stdout, "export SAFEGEN_BASE_URL=%s\n", srv.URL)
		fmt.Fprintf(e.stdout, "export SAFEGEN_API_KEY=%s\n", srv.APIKey)
		fmt.Fprintf(e.stdout, "webhook secret: %s\n", srv.WebhookSecret)
		fmt.Fprintln(e.stdout, "stop with Ctrl-C")
	}
	<-ctx.Done()
	l := srv.Ledger()
	fmt.Fprintf(e.stderr, "fake-server: stopping; %d requests, %d charges, %d keys charged twice\n", len(srv.Requests()), l.Total(), len(l.Duplicates()))
	return exitOK
}

func parseServerDialect(s string) (safegentest.Dialect, error) {
	for _, d := range []safegentest.Dialect{safegentest.DialectDefault, safegentest.DialectRimp, safegentest.DialectRealm,
		safegentest.DialectRelaystation, safegentest.DialectClipia, safegentest.DialectPatomic} {
		if string(d) == s {
			return d, nil
		}
	}
	return "", usageError(fmt.Sprintf("unknown dialect %q", s))
}

// parseFaults reads "500=0.02,502=0.02,drop=0.05".
func parseFaults(s string) (safegentest.FaultRates, error) {
	var r safegentest.FaultRates
	if s == "" {
		return r, nil
	}
	total := 0.0
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return r, usageError(fmt.Sprintf("--faults: %q is not name=rate", part))
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || f < 0 || f > 1 {
			return r, usageError(fmt.Sprintf("--faults: rate of %s must be a number from 0 to 1", name))
		}
		total += f
		switch name {
		case "500":
			r.Status500 = f
		case "502":
			r.Status502HTML = f
		case "503":
			r.Status503 = f
		case "429":
			r.RateLimit429 = f
		case "reset":
			r.Reset = f
		case "drop":
			r.DropAfterCommit = f
		case "latency":
			r.Latency = f
		default:
			return r, usageError(fmt.Sprintf("--faults: unknown fault %q (want 500, 502, 503, 429, reset, drop, latency)", name))
		}
	}
	if total > 1 {
		return r, usageError("--faults: rates add up to more than 1")
	}
	return r, nil
}
