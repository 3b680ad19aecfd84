package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/safegen/safegen-go"
)

// attemptPrinter prints one line per attempt (--verbose): what the attempt
// met, what the client decided, and the key shortened. Calls may run at
// once (resume), so lines are written whole, one at a time.
type attemptPrinter struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *attemptPrinter) print(i safegen.AttemptInfo) {
	line := attemptLine(i)
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, line)
}

// attemptLine is one attempt as a line:
//
//	safegen: attempt 2 POST /v1/generations key=3f1c9a0e…: 503 service_unavailable, retrying in 412ms
func attemptLine(i safegen.AttemptInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "safegen: attempt %d %s %s", i.Attempt, i.Method, i.Path)
	if i.IdempotencyKey != "" {
		b.WriteString(" key=" + shortKey(i.IdempotencyKey))
	}
	b.WriteString(": ")
	switch {
	case i.StatusCode != 0:
		fmt.Fprintf(&b, "%d", i.StatusCode)
		if i.Code != "" {
			b.WriteString(" " + oneLine(i.Code))
		}
		if i.Replayed {
			b.WriteString(" (replayed)")
		}
	default:
		b.WriteString(i.Cause)
		if i.Err != nil {
			b.WriteString(" (" + shorten(oneLine(i.Err.Error()), 120) + ")")
		}
	}
	switch {
	case i.Retry:
		fmt.Fprintf(&b, ", retrying in %s", i.Wait.Round(time.Millisecond))
		if i.RetryAfter > 0 {
			fmt.Fprintf(&b, " (Retry-After %s)", i.RetryAfter)
		}
	case i.Cause != "ok" && i.Reason != "":
		b.WriteString(", " + i.Reason)
	}
	return b.String()
}

// shortKey is enough of a key to tell calls apart on a terminal.
func shortKey(k string) string {
	if len(k) <= 8 {
		return k
	}
	return k[:8] + "…"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// runVersion prints the CLI's version: the SDK's, the Go that built it,
// and the module version when the binary was built from one.
func runVersion(_ context.Context, e *env, args []string) int {
	fs := newFlagSet("version", "version [--json]")
	jsonOut := fs.Bool("json", false, "print JSON for scripts")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return fail(e, *jsonOut, usageError("version takes no arguments: "+strings.Join(pos, " ")))
	}
	module := ""
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		module = bi.Main.Path + " " + bi.Main.Version
	}
	if *jsonOut {
		printJSON(e, map[string]string{"version": safegen.Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH, "module": module})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "safegen %s (%s %s/%s)\n", safegen.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if module != "" {
		fmt.Fprintf(e.stdout, "module %s\n", module)
	}
	return exitOK
}
