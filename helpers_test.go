package safegen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/safegen/safegen-go/internal/leakcheck"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(quotaWorkerEnv); cfg != "" {
		os.Exit(quotaWorker(cfg))
	}
	leakcheck.VerifyTestMain(m)
}

// fakeClock never sleeps: Sleep records the wait and moves time forward.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sleeps = append(f.sleeps, d)
	f.now = f.now.Add(d)
	return nil
}

func (f *fakeClock) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.sleeps...)
}

const testAPIKey = "sk_test_secret_0123456789"

// newTestClient returns a Client on url with a fake clock, so retries never
// sleep for real.
func newTestClient(t testing.TB, url string, opts ...Option) (*Client, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	all := append([]Option{WithBaseURL(url), WithClock(clk)}, opts...)
	c, err := NewClient(testAPIKey, all...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, clk
}

// seen is one request as a test server saw it.
type seen struct {
	Method, Path, Key, Attempt string
	Header                     http.Header
	Body                       string
}

// recorder is an httptest server whose handler answers from a script and
// records every request.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecorder(t testing.TB, h func(n int, w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 0, 256)
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{Method: r.Method, Path: r.URL.RequestURI(), Key: r.Header.Get("Idempotency-Key"),
			Attempt: r.Header.Get(AttemptHeader), Header: r.Header.Clone(), Body: string(body)})
		n := len(rec.reqs)
		rec.mu.Unlock()
		h(n, w, r)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (r *recorder) Seen() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", "req_test")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func apiErrBody(code, msg string) string {
	return `{"error":{"type":"api_error","code":"` + code + `","message":"` + msg + `"}}`
}

const genBody = `{"id":"gen_1","request_id":"req_b","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`

var testParams = &GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox in snow", DurationS: 4}
