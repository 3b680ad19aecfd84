package safegen_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// TestBadInputCatalogue: every kind of bad answer gives a clear typed error
// (an *APIError or a *RetryError, or a sentinel), with bounded memory and no
// panic. leakcheck (TestMain) checks that no goroutine is left behind.
func TestBadInputCatalogue(t *testing.T) {
	huge := bytes.Repeat([]byte("E"), 10<<20)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{"response cut mid-JSON, every time", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "300")
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"id":"gen_1","status":"que`))
			if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
				c.Close()
			}
		}, func(t *testing.T, err error) {
			var re *safegen.RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, 3, re.Attempts, "a cut body is retried like a transport failure")
		}},
		{"200 with an HTML page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Welcome to nginx!</body></html>"))
		}, func(t *testing.T, err error) {
			require.ErrorIs(t, err, safegen.ErrMalformedResponse)
			assert.Contains(t, err.Error(), "text/html")
		}},
		{"2xx with an empty body", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) },
			func(t *testing.T, err error) { require.ErrorIs(t, err, safegen.ErrMalformedResponse) }},
		{"10 MB error body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(400)
			_, _ = w.Write(huge)
		}, func(t *testing.T, err error) {
			var apiErr *safegen.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 400, apiErr.StatusCode)
			assert.LessOrEqual(t, len(apiErr.Body), 64<<10)
			assert.Less(t, len(err.Error()), 1000)
		}},
		{"10 MB 503 bodies, retried", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			_, _ = w.Write(huge)
		}, func(t *testing.T, err error) {
			var apiErr *safegen.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 3, apiErr.Attempts)
			assert.LessOrEqual(t, len(apiErr.Body), 64<<10)
		}},
		{"a body that drips forever", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"id":"gen_1",`))
			for {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(5 * time.Millisecond):
					if _, err := w.Write([]byte(" ")); err != nil {
						return
					}
					w.(http.Flusher).Flush()
				}
			}
		}, func(t *testing.T, err error) {
			var re *safegen.RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, 3, re.Attempts, "each attempt is bounded by the attempt timeout")
		}},
		{"invalid UTF-8 in the error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(422)
			_, _ = w.Write([]byte("{\"error\":{\"code\":\"model_input_invalid\",\"message\":\"bad \xff\xfe input\"}}"))
		}, func(t *testing.T, err error) {
			require.ErrorIs(t, err, safegen.ErrInvalidRequest)
			assert.True(t, strings.ToValidUTF8(err.Error(), "") == err.Error())
		}},
		{"JSON under a wrong content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(409)
			_, _ = w.Write([]byte(`{"error":{"code":"idempotency_key_reuse","message":"other body"}}`))
		}, func(t *testing.T, err error) { require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse) }},
		{"repeated headers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Retry-After", "0")
			w.Header().Add("Retry-After", "3600")
			w.Header().Add("X-Request-Id", "req_a")
			w.Header().Add("X-Request-Id", "req_b")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(429)
			_, _ = w.Write([]byte(`{"error":{"code":"rate_limit_exceeded"}}`))
		}, func(t *testing.T, err error) {
			var apiErr *safegen.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, "req_a", apiErr.RequestID, "the first value counts")
			assert.Equal(t, 3, apiErr.Attempts, "Retry-After: 0 (the first) was honored")
		}},
	}
	for _, ra := range []string{"-5", "99999999999999999999999", "soon", "NaN", "1e400"} {
		tests = append(tests, struct {
			name    string
			handler http.HandlerFunc
			check   func(t *testing.T, err error)
		}{"Retry-After " + ra, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", ra)
			w.WriteHeader(429)
		}, func(t *testing.T, err error) {
			var apiErr *safegen.APIError
			require.ErrorAs(t, err, &apiErr)
			require.ErrorIs(t, err, safegen.ErrRateLimited)
			assert.Zero(t, apiErr.RetryAfter, "a bad Retry-After is ignored")
			assert.Equal(t, 3, apiErr.Attempts, "and the call backs off as usual")
		}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c, err := safegen.NewClient("sk_catalogue_secret", safegen.WithBaseURL(srv.URL), safegen.WithMaxRetries(2),
				safegen.WithBackoff(time.Millisecond, 2, 2*time.Millisecond), safegen.WithAttemptTimeout(100*time.Millisecond))
			require.NoError(t, err)
			defer c.Close()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			g, err := c.Generations.Create(context.Background(), params)
			require.Nil(t, g)
			require.Error(t, err)
			var apiErr *safegen.APIError
			var re *safegen.RetryError
			typed := errors.As(err, &apiErr) || errors.As(err, &re) || errors.Is(err, safegen.ErrMalformedResponse)
			assert.True(t, typed, "untyped error %T: %v", err, err)
			assert.NotContains(t, err.Error(), "sk_catalogue_secret")
			assert.NotContains(t, err.Error(), "\n")
			tt.check(t, err)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "memory stays bounded whatever the body size")
		})
	}
}

// TestNoSecretAnywhere scans everything a run leaves behind for the API key:
// log lines, errors, the journal file, and a panic's message.
func TestNoSecretAnywhere(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	var logs bytes.Buffer
	path := filepath.Join(t.TempDir(), "j", "intents.journal")
	j, err := journal.Open(path)
	require.NoError(t, err)
	c := newClient(t, srv, safegen.WithJournal(j), safegen.WithLogger(newDebugLogger(&logs)), safegen.WithMaxRetries(1))
	srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 502, HTML: true},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503},
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
	)
	var errs []string
	for i := 0; i < 4; i++ {
		_, err := c.Generations.Create(context.Background(), params)
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	_, err = c.Resume(context.Background())
	require.NoError(t, err)
	require.NoError(t, j.Close())
	require.NotEmpty(t, errs)

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), di.Mode().Perm())

	// A panic inside the caller's own hook must not carry the key either.
	var panicMsg string
	func() {
		defer func() { panicMsg, _ = recover().(string) }()
		c2 := newClient(t, srv, safegen.WithAttemptHook(func(info safegen.AttemptInfo) { panic("hook saw " + info.Method + " " + info.Path) }))
		_, _ = c2.Generations.Create(context.Background(), params)
	}()
	require.NotEmpty(t, panicMsg)

	for what, s := range map[string]string{"logs": logs.String(), "errors": strings.Join(errs, "\n"), "journal": string(raw), "panic": panicMsg} {
		assert.NotContains(t, s, srv.APIKey, "the API key leaked into the %s", what)
	}
	assert.Contains(t, logs.String(), "retrying", "the logs did record the run")
}
