package safegen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		name   string
		header map[string]string
		status int
		want   time.Duration
		ok     bool
	}{
		{"ms", map[string]string{"Retry-After-Ms": "1500"}, 429, 1500 * time.Millisecond, true},
		{"ms wins over seconds", map[string]string{"Retry-After-Ms": "20", "Retry-After": "9"}, 503, 20 * time.Millisecond, true},
		{"seconds", map[string]string{"Retry-After": "2"}, 429, 2 * time.Second, true},
		{"zero", map[string]string{"Retry-After": "0"}, 429, 0, true},
		{"decimal seconds", map[string]string{"Retry-After": "1.5"}, 503, 1500 * time.Millisecond, true},
		{"IMF-fixdate", map[string]string{"Retry-After": at(3 * time.Second).Format(http.TimeFormat)}, 429, 3 * time.Second, true},
		{"RFC 850 date", map[string]string{"Retry-After": at(4 * time.Second).Format(time.RFC850)}, 429, 4 * time.Second, true},
		{"asctime date", map[string]string{"Retry-After": at(5 * time.Second).Format(time.ANSIC)}, 429, 5 * time.Second, true},
		{"date in the past", map[string]string{"Retry-After": at(-time.Hour).Format(http.TimeFormat)}, 429, 0, true},
		{"negative", map[string]string{"Retry-After": "-1"}, 429, 0, false},
		{"NaN", map[string]string{"Retry-After": "NaN"}, 429, 0, false},
		{"Inf", map[string]string{"Retry-After": "+Inf"}, 429, 0, false},
		{"overflow", map[string]string{"Retry-After": "99999999999999999999"}, 429, 0, false},
		{"garbage", map[string]string{"Retry-After": "soon, maybe"}, 429, 0, false},
		{"negative ms", map[string]string{"Retry-After-Ms": "-5"}, 429, 0, false},
		{"RateLimit-Reset seconds on 429", map[string]string{"RateLimit-Reset": "7"}, 429, 7 * time.Second, true},
		{"RateLimit-Reset ignored on 503", map[string]string{"RateLimit-Reset": "7"}, 503, 0, false},
		{"rimp X-RateLimit-Reset unix time", map[string]string{"X-RateLimit-Reset": strconv.FormatInt(at(30*time.Second).Unix(), 10)}, 429, 30 * time.Second, true},
		{"X-RateLimit-Reset seconds", map[string]string{"X-RateLimit-Reset": "12"}, 429, 12 * time.Second, true},
		{"none", map[string]string{}, 429, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			got, ok := retryAfter(h, tt.status, now)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestRetriedStatusesKeepKeyAndBytes: every retried status re-sends the same
// key and the same bytes, numbering the attempts.
func TestRetriedStatusesKeepKeyAndBytes(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(w http.ResponseWriter)
		wantMin time.Duration // the smallest wait the client must have slept
	}{
		{"500", func(w http.ResponseWriter) { writeJSON(w, 500, apiErrBody("internal_error", "boom")) }, 0},
		{"502 HTML", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"))
		}, 0},
		{"502 empty", func(w http.ResponseWriter) { w.WriteHeader(502) }, 0},
		{"503", func(w http.ResponseWriter) { writeJSON(w, 503, apiErrBody("service_unavailable", "later")) }, 0},
		{"429 seconds", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "2")
			writeJSON(w, 429, apiErrBody("rate_limit_exceeded", "slow down"))
		}, 2 * time.Second},
		{"429 ms", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After-Ms", "1200")
			writeJSON(w, 429, apiErrBody("rate_limit_exceeded", "slow down"))
		}, 1200 * time.Millisecond},
		{"409 request_in_progress", func(w http.ResponseWriter) {
			writeJSON(w, 409, apiErrBody("request_in_progress", "still working"))
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= 2 {
					tt.fail(w)
					return
				}
				writeJSON(w, 202, genBody)
			})
			c, clk := newTestClient(t, rec.URL)
			g, err := c.Generations.Create(context.Background(), testParams)
			require.NoError(t, err)
			assert.Equal(t, 3, g.Meta.Attempts)
			seen := rec.Seen()
			require.Len(t, seen, 3)
			for i, s := range seen {
				assert.Equal(t, seen[0].Key, s.Key, "same key on every attempt")
				assert.Equal(t, seen[0].Body, s.Body, "same bytes on every attempt")
				assert.Equal(t, strconv.Itoa(i+1), s.Attempt)
			}
			assert.Equal(t, g.Meta.IdempotencyKey, seen[0].Key)
			assert.NoError(t, ValidateIdempotencyKey(DialectDefault, seen[0].Key))
			sleeps := clk.Sleeps()
			require.Len(t, sleeps, 2)
			for _, d := range sleeps {
				assert.GreaterOrEqual(t, d, tt.wantMin)
				assert.LessOrEqual(t, d, max(tt.wantMin, 8*time.Second))
			}
		})
	}
}

func TestNotRetried(t *testing.T) {
	tests := []struct {
		status   int
		code     string
		sentinel error
	}{
		{400, "invalid_request", ErrInvalidRequest},
		{400, "invalid_idempotency_key", ErrInvalidIdempotencyKey},
		{401, "invalid_api_key", ErrAuthentication},
		{403, "insufficient_scope", ErrAuthentication},
		{402, "insufficient_credits", ErrInsufficientCredits},
		{404, "not_found", ErrNotFound},
		{409, "idempotency_key_reuse", ErrIdempotencyKeyReuse},
		{409, "IDEMPOTENCY_CONFLICT", ErrIdempotencyKeyReuse},
		{409, "idempotency_key_conflict", ErrIdempotencyKeyReuse},
		{422, "model_input_invalid", ErrInvalidRequest},
		{429, "quota_exceeded", ErrQuotaExceeded},
		{501, "not_implemented", ErrServer},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status)+" "+tt.code, func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tt.status, apiErrBody(tt.code, "no"))
			})
			c, _ := newTestClient(t, rec.URL)
			g, err := c.Generations.Create(context.Background(), testParams)
			require.Nil(t, g)
			require.ErrorIs(t, err, tt.sentinel)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tt.status, apiErr.StatusCode)
			assert.Equal(t, tt.code, apiErr.Code)
			assert.Equal(t, 1, apiErr.Attempts)
			assert.Equal(t, "req_test", apiErr.RequestID)
			assert.Equal(t, rec.Seen()[0].Key, apiErr.IdempotencyKey)
			assert.Len(t, rec.Seen(), 1)
		})
	}
}

func TestExhaustedRetriesKeepLastAnswer(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, apiErrBody("service_unavailable", "attempt "+strconv.Itoa(n)))
	})
	c, clk := newTestClient(t, rec.URL, WithMaxRetries(2))
	_, err := c.Generations.Create(context.Background(), testParams)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.ErrorIs(t, err, ErrServer)
	assert.Equal(t, 503, apiErr.StatusCode)
	assert.Equal(t, 3, apiErr.Attempts)
	assert.Equal(t, "attempt 3", apiErr.Message)
	assert.Contains(t, string(apiErr.Body), "attempt 3")
	assert.Len(t, rec.Seen(), 3)
	assert.Len(t, clk.Sleeps(), 2)
	assert.NotContains(t, err.Error(), "giving up")
}

func TestRetryAfterLongerThanBound(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1800")
		writeJSON(w, 429, apiErrBody("anomaly_paused", "paused"))
	})
	c, clk := newTestClient(t, rec.URL)
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrRetryAfterTooLong)
	require.ErrorIs(t, err, ErrRateLimited)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 30*time.Minute, apiErr.RetryAfter)
	assert.Equal(t, 1, apiErr.Attempts)
	assert.Empty(t, clk.Sleeps(), "a wait past the bound is handed back, not slept")
	assert.Len(t, rec.Seen(), 1)
}

func TestWaitPastDeadlineNotStarted(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 503, apiErrBody("service_unavailable", "later"))
	})
	c, clk := newTestClient(t, rec.URL)
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(5*time.Second))
	defer cancel()
	_, err := c.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ErrServer)
	assert.Empty(t, clk.Sleeps())
	assert.Len(t, rec.Seen(), 1)
}

// TestCancelDuringWait: a cancelled context ends a backoff wait at once,
// on the real clock.
func TestCancelDuringWait(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 503, apiErrBody("service_unavailable", "later"))
	})
	c, err := NewClient(testAPIKey, WithBaseURL(rec.URL))
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Generations.Create(ctx, testParams)
		done <- err
	}()
	require.Eventually(t, func() bool { return len(rec.Seen()) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(5 * time.Millisecond) // let the client enter its 30 s wait
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		elapsed := time.Since(start)
		require.ErrorIs(t, err, context.Canceled)
		var re *RetryError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 1, re.Attempts)
		assert.Less(t, elapsed, 50*time.Millisecond, "cancellation must end the wait at once (took %v)", elapsed)
		t.Logf("returned %v after cancel", elapsed)
	case <-time.After(10 * time.Second):
		t.Fatal("Create still waiting 10 s after cancel")
	}
}

func TestTransportErrorsRetried(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
			return
		}
		if n == 2 { // a body cut mid-way after a 2xx
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"id":"gen_1",`))
			conn, _, _ := w.(http.Hijacker).Hijack()
			if conn != nil {
				conn.Close()
			}
			return
		}
		writeJSON(w, 202, genBody)
	})
	c, _ := newTestClient(t, rec.URL)
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, "gen_1", g.ID)
	assert.Equal(t, 3, g.Meta.Attempts)
	seen := rec.Seen()
	require.Len(t, seen, 3)
	assert.Equal(t, seen[0].Key, seen[2].Key)
	assert.Equal(t, seen[0].Body, seen[2].Body)
}

func TestTLSFailureNotRetried(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 202, genBody)
	}))
	defer srv.Close()
	c, clk := newTestClient(t, srv.URL) // the default transport does not trust the test CA
	_, err := c.Generations.Create(context.Background(), testParams)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.Empty(t, clk.Sleeps())
}

func TestAttemptTimeoutBoundsABlackHole(t *testing.T) {
	release := make(chan struct{})
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			select { // a black hole: no answer until the client gives up
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		writeJSON(w, 202, genBody)
	})
	defer close(release)
	c, _ := newTestClient(t, rec.URL, WithAttemptTimeout(30*time.Millisecond))
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, 3, g.Meta.Attempts)
	seen := rec.Seen()
	assert.Equal(t, seen[0].Key, seen[2].Key)

	// The context still wins over retries of timed-out attempts.
	rec2 := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	c2, err := NewClient(testAPIKey, WithBaseURL(rec2.URL), WithAttemptTimeout(20*time.Millisecond), WithBackoff(time.Millisecond, 2, 2*time.Millisecond), WithMaxRetries(100))
	require.NoError(t, err)
	defer c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err = c2.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, len(rec2.Seen()), 100)
}

func TestRetryBudget(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, apiErrBody("service_unavailable", "down"))
	})
	// 20 tokens: four retries at 5 each, then none.
	c, _ := newTestClient(t, rec.URL, WithRetryBudget(20))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrServer)
	assert.NotErrorIs(t, err, ErrRetryBudgetExhausted)
	_, err = c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrRetryBudgetExhausted)
	require.ErrorIs(t, err, ErrServer, "the server's error stays reachable")
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 2, apiErr.Attempts, "one retry was left in the bucket")
	assert.Contains(t, err.Error(), "client-side retry budget")
	_, err = c.Generations.Create(context.Background(), testParams)
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 1, apiErr.Attempts, "an empty bucket allows no retry")
	assert.Len(t, rec.Seen(), 4+2+1)
	assert.Equal(t, 0, c.budget.Tokens())

	// Successes refill the bucket.
	ok := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, genBody) })
	c2, _ := newTestClient(t, ok.URL, WithRetryBudget(20))
	c2.budget.take(20)
	for i := 0; i < 5; i++ {
		_, err := c2.Generations.Create(context.Background(), testParams)
		require.NoError(t, err)
	}
	assert.Equal(t, 5, c2.budget.Tokens())
}

func TestBackoffGrowsWithFullJitter(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 500, apiErrBody("internal_error", "x"))
	})
	c, clk := newTestClient(t, rec.URL, WithMaxRetries(6), WithBackoff(100*time.Millisecond, 2, 400*time.Millisecond))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.Error(t, err)
	sleeps := clk.Sleeps()
	require.Len(t, sleeps, 6)
	ceilings := []time.Duration{100, 200, 400, 400, 400, 400}
	for i, d := range sleeps {
		assert.LessOrEqual(t, d, ceilings[i]*time.Millisecond, "wait %d", i)
		assert.GreaterOrEqual(t, d, time.Duration(0))
	}
}

func TestAttemptHookAndLogs(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			writeJSON(w, 503, apiErrBody("service_unavailable", "x"))
			return
		}
		writeJSON(w, 202, genBody)
	})
	var infos []AttemptInfo
	c, _ := newTestClient(t, rec.URL, WithAttemptHook(func(i AttemptInfo) { infos = append(infos, i) }))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	require.Len(t, infos, 2)
	assert.True(t, infos[0].Retry)
	assert.Equal(t, "503", infos[0].Cause)
	assert.Equal(t, 1, infos[0].Attempt)
	assert.False(t, infos[1].Retry)
	assert.Equal(t, "ok", infos[1].Cause)
	assert.Equal(t, infos[0].IdempotencyKey, infos[1].IdempotencyKey)
}

// TestAttemptHookBodyCut: an attempt whose 2xx body is cut mid-way is one
// failed attempt. The hook must hear of it once, as the transport failure
// that was retried, not first as "ok, done" and then again as a failure.
func TestAttemptHookBodyCut(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Content-Length", "500")
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"id":"gen_1","sta`))
			return // net/http closes the connection: the body is short
		}
		writeJSON(w, 202, genBody)
	})
	var infos []AttemptInfo
	c, _ := newTestClient(t, rec.URL, WithAttemptHook(func(i AttemptInfo) { infos = append(infos, i) }))
	gen, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, 2, gen.Meta.Attempts)
	require.Len(t, infos, 2, "one report per attempt: %+v", infos)
	assert.Equal(t, 1, infos[0].Attempt)
	assert.Equal(t, "transport", infos[0].Cause)
	assert.True(t, infos[0].Retry)
	assert.Error(t, infos[0].Err)
	assert.Equal(t, 2, infos[1].Attempt)
	assert.Equal(t, "ok", infos[1].Cause)
	assert.False(t, infos[1].Retry)
}

func TestContextAlreadyCancelled(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, genBody) })
	c, _ := newTestClient(t, rec.URL)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Generations.Create(ctx, testParams)
	require.True(t, errors.Is(err, context.Canceled), "got %v", err)
}
