// Package leakcheck fails a test binary that leaves goroutines running after
// its tests, like go.uber.org/goleak's VerifyTestMain. It lives here, in a
// few lines, because a test-only requirement of the root module is still
// listed in every importer's module graph (go list -m all), and the root
// module promises importers only what its package needs at run time plus
// testify.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// VerifyTestMain runs the tests, then fails the binary (exit 1) if any
// goroutine other than the runtime's and the testing package's own is still
// alive once a grace period has passed. Use it from TestMain.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := Find(5 * time.Second); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutine(s) left running after the tests:\n\n%s\n",
				len(leaks), strings.Join(leaks, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// Find returns the stacks of the goroutines still running that are not the
// caller's, the runtime's or the testing package's, retrying with a growing
// pause for up to grace so that goroutines on their way out can finish.
func Find(grace time.Duration) []string {
	deadline := time.Now().Add(grace)
	pause := time.Millisecond
	for {
		leaks := others()
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// ignored are functions whose goroutines belong to the runtime or to the
// testing package, never to the code under test.
var ignored = []string{
	"testing.RunTests",
	"testing.(*T).Run",
	"testing.(*T).Parallel",
	"testing.(*F).Fuzz",
	"testing.runFuzzing",
	"testing.runFuzzTests",
	"testing.(*M).startAlarm",
	"testing.tRunner",
	"runtime.ensureSigM",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime/trace.Start",
	"runtime.goexit",
}

func others() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaks []string
	stacks := strings.Split(strings.TrimSpace(string(buf)), "\n\n")
	for i, s := range stacks {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		if !isIgnored(s) {
			leaks = append(leaks, s)
		}
	}
	return leaks
}

// isIgnored reports whether a goroutine's stack is the runtime's or the
// testing package's: its top function, or the function that created it.
func isIgnored(stack string) bool {
	lines := strings.Split(stack, "\n")
	if len(lines) < 2 {
		return true
	}
	top := funcName(lines[1])
	creator := ""
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "created by "); ok {
			creator = funcName(rest)
		}
	}
	for _, f := range ignored {
		if top == f || creator == f {
			return true
		}
	}
	return false
}

// funcName is the function of a stack line such as
// "net/http.(*conn).serve(0xc000)" or "created by x.y in goroutine 7".
func funcName(line string) string {
	line = strings.TrimPrefix(strings.TrimSpace(line), "created by ")
	if i := strings.LastIndex(line, "("); i > 0 && strings.HasSuffix(line, ")") {
		line = line[:i]
	}
	if i := strings.Index(line, " in goroutine"); i > 0 {
		line = line[:i]
	}
	return line
}
