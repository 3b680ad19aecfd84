// Command safegen calls a Generation API through the safegen SDK, runs the
// SDK's fake server on its own, and shows the SDK's promise at work in a demo.
//
//	safegen demo [--size N] [--crash]       the embedded fake API with faults, and the tally
//	safegen demo --fleet N --database-url URL   N River worker processes on PostgreSQL (runs safegen-fleet)
//	safegen fake-server --addr 127.0.0.1:8080 --dialect realm --faults drop=0.05,503=0.1
//	safegen generate --model veo-3-1-fast --prompt "..." [--wait]
//	safegen run --model veo-3-1-fast --prompt "..." --output fox.mp4 [--journal j --intent-id order-17]
//	safegen download ID --output FILE · cancel ID
//	safegen get|wait ID · estimate · account · resume · webhook verify · version
//
// Every command that calls the API takes --verbose: one line per attempt on
// stderr (status or cause, the wait before the next, the key shortened).
//
// The API key and base URL come from --api-key and --base-url, or from
// SAFEGEN_API_KEY and SAFEGEN_BASE_URL. Exit codes: 0 success, 1 the API
// answered with an error, 2 usage error, 3 network failure or timeout,
// 4 local failure (journal, files, spend limit), 5 the generation ended failed or canceled.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/safegen/safegen-go"
)

// Exit codes.
const (
	exitOK          = 0
	exitAPI         = 1
	exitUsage       = 2
	exitNetwork     = 3
	exitLocal       = 4
	exitGenFailed   = 5
	exitInterrupted = 130
)

// env is what a command reads from its surroundings, so tests can run it
// in-process.
type env struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	getenv         func(string) string
	// isTerminal reports whether stdout is a terminal (live progress).
	isTerminal bool
	// sdkOptions are added to every client a command makes (tests: a
	// clock that does not sleep).
	sdkOptions []safegen.Option
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
	hidden  bool
}

func commands() map[string]command {
	list := []command{
		{name: "demo", summary: "run the embedded fake API with faults through the SDK and show the tally", run: runDemo},
		{name: "fake-server", summary: "serve the fake Generation API on an address, for tests in any language", run: runFakeServer},
		{name: "generate", summary: "start a generation (billable; one idempotency key, safe retries)", run: runGenerate},
		{name: "run", summary: "the whole job: create, wait, download the output verified (resumable with --journal)", run: runRun},
		{name: "download", summary: "download a generation's output, resuming a cut transfer, verified", run: runDownload},
		{name: "cancel", summary: "cancel a generation (refunded while still queued)", run: runCancel},
		{name: "get", summary: "show one generation", run: runGet},
		{name: "wait", summary: "wait until a generation finishes", run: runWait},
		{name: "estimate", summary: "price a parameter set (never charges)", run: runEstimate},
		{name: "account", summary: "show the credits left", run: runAccount},
		{name: "resume", summary: "finish the pending intents of a journal, same keys, same bytes", run: runResume},
		{name: "webhook", summary: "webhook tools: verify a delivery's signature", run: runWebhook},
		{name: "version", summary: "print the SDK's version and the Go that built the tool", run: runVersion},
		{name: "demo-worker", summary: "internal: the worker process of demo --crash", run: runDemoWorker, hidden: true},
	}
	m := make(map[string]command, len(list))
	for _, c := range list {
		m[c.name] = c
	}
	return m
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: safegen <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n, c := range cmds {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'safegen <command> --help' for a command's flags.")
	fmt.Fprintln(w, "API key and base URL: --api-key/--base-url or SAFEGEN_API_KEY/SAFEGEN_BASE_URL.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 API error, 2 usage, 3 network, 4 local failure (journal, files, spend limit), 5 generation failed.")
}

// run is the whole command, testable in-process.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(e.stdout)
		return exitOK
	}
	c, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "safegen: unknown command %q\n\n", args[0])
		usage(e.stderr)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv, isTerminal: isTerminal(os.Stdout)}
	os.Exit(run(ctx, e, os.Args[1:]))
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
