package safegen

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRateLimitSpacesRequests(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, genBody) })
	c, clk := newTestClient(t, rec.URL, WithRateLimit(10, 1))
	for i := 0; i < 5; i++ {
		_, err := c.Generations.Create(context.Background(), testParams)
		require.NoError(t, err)
	}
	// The fake clock does not move between calls, so each call after the
	// first waits a full token: 100 ms at 10 a second.
	sleeps := clk.Sleeps()
	require.Len(t, sleeps, 4)
	for _, d := range sleeps {
		assert.InDelta(t, float64(100*time.Millisecond), float64(d), float64(time.Millisecond))
	}
}

func TestAdaptivePauseOnRetryAfter(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			writeJSON(w, 429, apiErrBody("rate_limit_exceeded", "slow"))
			return
		}
		writeJSON(w, 202, genBody)
	})
	c, clk := newTestClient(t, rec.URL, WithRateLimit(0, 0), WithMaxRetries(0))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrRateLimited)
	// Another call of the same Client waits out the pause before sending.
	_, err = c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{2 * time.Second}, clk.Sleeps())
}

func TestAdaptivePauseOnRemainingZero(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Remaining", "0")
		w.Header().Set("RateLimit-Reset", "3")
		writeJSON(w, 202, genBody)
	})
	c, clk := newTestClient(t, rec.URL, WithRateLimit(0, 0))
	for i := 0; i < 2; i++ {
		_, err := c.Generations.Create(context.Background(), testParams)
		require.NoError(t, err)
	}
	assert.Equal(t, []time.Duration{3 * time.Second}, clk.Sleeps())
}

func TestPauseCappedByMaxRetryAfter(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1800")
			writeJSON(w, 429, apiErrBody("anomaly_paused", "paused"))
			return
		}
		writeJSON(w, 202, genBody)
	})
	c, clk := newTestClient(t, rec.URL, WithRateLimit(0, 0), WithMaxRetryAfter(5*time.Second))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrRetryAfterTooLong)
	_, err = c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{5 * time.Second}, clk.Sleeps())
}

func TestPacingWaitHonorsContext(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, genBody) })
	c, err := NewClient(testAPIKey, WithBaseURL(rec.URL), WithRateLimit(0.001, 1))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Len(t, rec.Seen(), 1, "the paced call was never sent")
}

func TestMaxInFlight(t *testing.T) {
	var cur, peak atomic.Int32
	release := make(chan struct{})
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		v := cur.Add(1)
		for {
			p := peak.Load()
			if v <= p || peak.CompareAndSwap(p, v) {
				break
			}
		}
		<-release
		cur.Add(-1)
		writeJSON(w, 202, genBody)
	})
	// Release the handlers even when an assertion below stops the test, or
	// the server's Close would wait for them for ever.
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	c, _ := newTestClient(t, rec.URL, WithMaxInFlight(2))
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Generations.Create(context.Background(), testParams)
			assert.NoError(t, err)
		}()
	}
	require.Eventually(t, func() bool { return cur.Load() == 2 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond) // give a third call the chance to slip through
	assert.Equal(t, int32(2), cur.Load())
	releaseAll()
	wg.Wait()
	assert.Equal(t, int32(2), peak.Load())
	assert.Len(t, rec.Seen(), 6)

	// A call waiting for a slot gives up with its context.
	block := make(chan struct{})
	rec2 := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { <-block; writeJSON(w, 202, genBody) })
	defer close(block)
	c2, _ := newTestClient(t, rec2.URL, WithMaxInFlight(1))
	go func() { _, _ = c2.Generations.Create(context.Background(), testParams) }()
	require.Eventually(t, func() bool { return len(rec2.Seen()) == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := c2.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Len(t, rec2.Seen(), 1)
}

func TestPacingOptionsValidate(t *testing.T) {
	for _, o := range []Option{WithRateLimit(-1, 1), WithRateLimit(5, 0), WithMaxInFlight(-1)} {
		_, err := NewClient(testAPIKey, WithBaseURL("https://a.example"), o)
		require.Error(t, err)
	}
}
