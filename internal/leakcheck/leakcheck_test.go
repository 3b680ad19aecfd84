package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func TestFindsALeakAndIgnoresTheRuntime(t *testing.T) {
	if leaks := Find(time.Second); len(leaks) > 0 {
		t.Fatalf("leaks before the test started: %v", leaks)
	}
	stop := make(chan struct{})
	go leaky(stop)
	leaks := Find(50 * time.Millisecond)
	if len(leaks) != 1 || !strings.Contains(leaks[0], "leakcheck.leaky") {
		t.Fatalf("want the one leaky goroutine, got %q", leaks)
	}
	close(stop)
	if leaks := Find(time.Second); len(leaks) > 0 {
		t.Fatalf("a goroutine that ended is not a leak: %v", leaks)
	}
}

func leaky(stop chan struct{}) { <-stop }

func TestFuncName(t *testing.T) {
	for in, want := range map[string]string{
		"net/http.(*conn).serve(0xc000123456, {0x7f0, 0xc0})": "net/http.(*conn).serve",
		"created by testing.(*T).Run in goroutine 1":          "testing.(*T).Run",
		"main.main()": "main.main",
	} {
		if got := funcName(in); got != want {
			t.Errorf("funcName(%q) = %q, want %q", in, got, want)
		}
	}
}
