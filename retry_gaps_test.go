package safegen

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests written for gaps a mutation run found (issue #18): each fails on a
// planted bug that the older tests let through. scripts/mutate.sh plants
// them again on demand; docs/mutation.md lists them.

// TestFullJitterSpread: 1000 waits under one ceiling spread over the whole
// range, so a wait of zero every time, the ceiling every time, or any
// narrow band fails. The bounds sit more than ten standard deviations from
// what uniform draws give, so the test cannot flake.
func TestFullJitterSpread(t *testing.T) {
	const n = 1000
	const ceiling = time.Second
	st := &callState{s: &settings{backoffInit: ceiling, backoffMult: 1, backoffMax: ceiling}}
	var sum time.Duration
	low, high := 0, 0
	for range n {
		d := st.nextBackoff()
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, ceiling)
		sum += d
		if d < ceiling/4 {
			low++
		}
		if d > ceiling*3/4 {
			high++
		}
	}
	mean := sum / n
	assert.GreaterOrEqual(t, mean, ceiling*3/10, "mean wait %v", mean)
	assert.LessOrEqual(t, mean, ceiling*7/10, "mean wait %v", mean)
	assert.Greater(t, low, n/10, "waits under a quarter of the ceiling")
	assert.Greater(t, high, n/10, "waits over three quarters of the ceiling")
}

// TestBackoffWaitsArePositiveAndGrow: through the whole pipeline, on an
// injected clock, the waits a failing call asks for are above zero, stay
// under each retry's ceiling, and grow from one retry to the next. A client
// that does not back off at all, or never grows its waits, fails.
func TestBackoffWaitsArePositiveAndGrow(t *testing.T) {
	const calls, retries = 100, 4
	// Long ceilings (the clock is fake): a draw of exactly zero, which full
	// jitter allows, then has odds of about one in 10^10.
	ceilings := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second}
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 500, apiErrBody("internal_error", "x"))
	})
	c, clk := newTestClient(t, rec.URL, WithMaxRetries(retries), WithBackoff(10*time.Second, 2, time.Hour), WithRetryBudget(0))
	for range calls {
		_, err := c.Generations.Create(context.Background(), testParams)
		require.ErrorIs(t, err, ErrServer)
	}
	sleeps := clk.Sleeps()
	require.Len(t, sleeps, calls*retries)
	require.Len(t, rec.Seen(), calls*(retries+1))
	var mean, largest [retries]time.Duration
	for i, d := range sleeps {
		k := i % retries
		require.Greater(t, d, time.Duration(0), "wait %d of call %d", k+1, i/retries+1)
		require.LessOrEqual(t, d, ceilings[k], "wait %d of call %d", k+1, i/retries+1)
		mean[k] += d / calls
		largest[k] = max(largest[k], d)
	}
	for k := 1; k < retries; k++ {
		assert.Greater(t, mean[k], mean[k-1], "mean wait %d > mean wait %d: %v", k+1, k, mean)
		assert.Greater(t, largest[k], ceilings[k-1], "wait %d goes past the previous ceiling", k+1)
	}
}

// TestRealClockSleeps: the real clock waits at least what it is asked, and
// a cancelled context ends the wait at once.
func TestRealClockSleeps(t *testing.T) {
	start := time.Now()
	require.NoError(t, realClock{}.Sleep(context.Background(), 5*time.Millisecond))
	assert.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	require.ErrorIs(t, realClock{}.Sleep(ctx, time.Hour), context.Canceled)
	assert.Less(t, time.Since(start), time.Minute)
}

// TestDeadlineStopsBeforeAWait: with waits of exactly 2 s (Retry-After 2,
// backoff ceilings of 1 ms), the call makes every attempt whose wait ends
// before the deadline and never starts the wait that would pass it: it
// returns with the typed error, and the server saw exactly N attempts.
func TestDeadlineStopsBeforeAWait(t *testing.T) {
	tests := []struct {
		deadline time.Duration
		attempts int
		sleeps   []time.Duration
	}{
		{time.Second, 1, nil},
		{3 * time.Second, 2, []time.Duration{2 * time.Second}},
		{5 * time.Second, 3, []time.Duration{2 * time.Second, 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.deadline.String(), func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "2")
				writeJSON(w, 503, apiErrBody("service_unavailable", "later"))
			})
			c, clk := newTestClient(t, rec.URL, WithMaxRetries(10), WithBackoff(time.Millisecond, 1, time.Millisecond))
			ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(tt.deadline))
			defer cancel()
			_, err := c.Generations.Create(ctx, testParams)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, ErrServer)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 503, apiErr.StatusCode)
			assert.Equal(t, tt.attempts, apiErr.Attempts)
			assert.Equal(t, 2*time.Second, apiErr.RetryAfter)
			assert.Equal(t, tt.sleeps, clk.Sleeps(), "no wait past the deadline was started")
			seen := rec.Seen()
			require.Len(t, seen, tt.attempts)
			for _, s := range seen {
				assert.Equal(t, seen[0].Key, s.Key)
				assert.Equal(t, seen[0].Body, s.Body)
			}
		})
	}

	// On the real clock, the call returns at once instead of sleeping up
	// to its deadline.
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 503, apiErrBody("service_unavailable", "later"))
	})
	c, err := NewClient(testAPIKey, WithBaseURL(rec.URL))
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Generations.Create(ctx, testParams)
	elapsed := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ErrServer)
	assert.Less(t, elapsed, 2*time.Second, "returned after %v: a wait was started", elapsed)
	assert.Len(t, rec.Seen(), 1)
}

// TestRequestInProgressMapping: a 409 request_in_progress (any case) is
// ErrRequestInProgress and is retried under the same key and bytes; once
// the retries run out it comes back typed. Another 409 is not retried.
func TestRequestInProgressMapping(t *testing.T) {
	tests := []struct {
		name     string
		code     string
		retries  int
		fails    int // 409s before a 202
		attempts int
		want     error
	}{
		{"retried then replayed", "request_in_progress", 3, 2, 3, nil},
		{"any case", "Request_In_Progress", 3, 2, 3, nil},
		{"no retries", "request_in_progress", 0, 5, 1, ErrRequestInProgress},
		{"retries run out", "request_in_progress", 2, 5, 3, ErrRequestInProgress},
		{"key reuse is not in progress", "idempotency_key_reuse", 3, 5, 1, ErrIdempotencyKeyReuse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= tt.fails {
					writeJSON(w, 409, apiErrBody(tt.code, "busy"))
					return
				}
				w.Header().Set("Idempotent-Replayed", "true")
				writeJSON(w, 202, genBody)
			})
			var causes []string
			c, _ := newTestClient(t, rec.URL, WithMaxRetries(tt.retries),
				WithAttemptHook(func(i AttemptInfo) { causes = append(causes, i.Cause) }))
			g, err := c.Generations.Create(context.Background(), testParams, WithIdempotencyKey("order-17"))
			seen := rec.Seen()
			require.Len(t, seen, tt.attempts)
			for i, s := range seen {
				assert.Equal(t, "order-17", s.Key, "same key on every attempt")
				assert.Equal(t, seen[0].Body, s.Body, "same bytes on every attempt")
				assert.Equal(t, strconv.Itoa(i+1), s.Attempt)
			}
			if tt.want == nil {
				require.NoError(t, err)
				assert.Equal(t, tt.attempts, g.Meta.Attempts)
				assert.True(t, g.Meta.Replayed)
				assert.Equal(t, "409 "+strings.ToLower(tt.code), causes[0])
				return
			}
			require.ErrorIs(t, err, tt.want)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 409, apiErr.StatusCode)
			assert.Equal(t, tt.code, apiErr.Code)
			assert.Equal(t, tt.attempts, apiErr.Attempts)
			assert.Equal(t, "order-17", apiErr.IdempotencyKey)
			for _, other := range []error{ErrRequestInProgress, ErrIdempotencyKeyReuse, ErrInvalidRequest, ErrRateLimited} {
				if other != tt.want {
					assert.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

// TestRetryAfterAtTheBound: a Retry-After equal to WithMaxRetryAfter is
// slept through and retried; only a longer one ends the call.
func TestRetryAfterAtTheBound(t *testing.T) {
	for _, tt := range []struct {
		retryAfter string
		ok         bool
	}{{"5", true}, {"6", false}} {
		t.Run(tt.retryAfter, func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter)
					writeJSON(w, 429, apiErrBody("rate_limit_exceeded", "slow down"))
					return
				}
				writeJSON(w, 202, genBody)
			})
			c, clk := newTestClient(t, rec.URL, WithMaxRetryAfter(5*time.Second))
			_, err := c.Generations.Create(context.Background(), testParams)
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, []time.Duration{5 * time.Second}, clk.Sleeps())
				assert.Len(t, rec.Seen(), 2)
				return
			}
			require.ErrorIs(t, err, ErrRetryAfterTooLong)
			assert.Empty(t, clk.Sleeps())
			assert.Len(t, rec.Seen(), 1)
		})
	}
}

// TestRetryAfterJustOverTheLimit: delta-seconds one past what a
// time.Duration holds are refused, not wrapped around into a negative or a
// tiny wait; the largest that fits is kept.
func TestRetryAfterJustOverTheLimit(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	over := strconv.FormatInt(maxRetryAfterSeconds+1, 10)
	top := strconv.FormatInt(maxRetryAfterSeconds, 10)
	header := func(name, v string) http.Header {
		h := http.Header{}
		h.Set(name, v)
		return h
	}
	for _, name := range []string{"Retry-After", "RateLimit-Reset"} {
		d, ok := retryAfter(header(name, over), 429, now)
		assert.False(t, ok, "%s: %s", name, over)
		assert.Zero(t, d)
		d, ok = retryAfter(header(name, top), 429, now)
		assert.True(t, ok, "%s: %s", name, top)
		assert.Equal(t, time.Duration(maxRetryAfterSeconds)*time.Second, d)
	}
}

// TestRetriesOnlyTheRetryableStatuses: straight from the policy table,
// without the network: what is retried and what is definitive.
func TestRetriesOnlyTheRetryableStatuses(t *testing.T) {
	tests := []struct {
		status     int
		code       string
		retryable  bool
		definitive bool
	}{
		{200, "", false, true},
		{202, "", false, true},
		{400, "invalid_request", false, true},
		{402, "insufficient_credits", false, true},
		{404, "not_found", false, true},
		{409, "request_in_progress", true, false},
		{409, "REQUEST_IN_PROGRESS", true, false},
		{409, "idempotency_key_reuse", false, true},
		{422, "model_input_invalid", false, true},
		{429, "rate_limit_exceeded", true, false},
		{429, "quota_exceeded", false, false},
		{429, "QUOTA_EXCEEDED", false, false},
		{500, "", true, false},
		{501, "", false, false},
		{502, "", true, false},
		{503, "", true, false},
	}
	for _, tt := range tests {
		e := &APIError{StatusCode: tt.status, Code: tt.code}
		assert.Equal(t, tt.retryable, tt.status >= 400 && e.retryable(), "retryable %d %s", tt.status, tt.code)
		assert.Equal(t, tt.definitive, definitive(tt.status, tt.code), "definitive %d %s", tt.status, tt.code)
	}
}
