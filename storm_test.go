package safegen_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

// outage is a server that answers 503 until healed, counting requests.
type outage struct {
	*httptest.Server
	requests atomic.Int64
	healed   atomic.Bool
}

func newOutage(tb testing.TB) *outage {
	o := &outage{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if o.healed.Load() {
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"id":"gen_1","status":"queued"}`))
			return
		}
		w.WriteHeader(503)
		_, _ = w.Write([]byte(`{"error":{"code":"service_unavailable","message":"down"}}`))
	}))
	tb.Cleanup(o.Close)
	return o
}

// storm makes n calls at the given concurrency and returns the attempts the
// server saw for the calls after the first `skip` ones.
func storm(c *safegen.Client, o *outage, n, concurrency int) (errs []error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	jobs := make(chan struct{})
	for k := 0; k < concurrency; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				_, err := c.Generations.Create(context.Background(), params)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return errs
}

// TestRetryBudgetStopsAStorm: 1000 calls at concurrency 50 against a server
// that answers 503 to everything. Once the default bucket (500 tokens, 5 a
// retry) is spent, calls make one attempt each.
func TestRetryBudgetStopsAStorm(t *testing.T) {
	o := newOutage(t)
	c := newStormClient(t, o.URL)
	errs := storm(c, o, 200, 50)
	drained := o.requests.Load()
	assert.LessOrEqual(t, drained, int64(200+100), "at most 100 retries fit in 500 tokens")
	errs = append(errs, storm(c, o, 800, 50)...)
	after := float64(o.requests.Load()-drained) / 800
	t.Logf("attempts per call after the bucket drained: %.3f", after)
	assert.LessOrEqual(t, after, 1.1)
	budget := 0
	for _, err := range errs {
		require.ErrorIs(t, err, safegen.ErrServer, "the server's 503 stays reachable")
		if errors.Is(err, safegen.ErrRetryBudgetExhausted) {
			budget++
			assert.Contains(t, err.Error(), "client-side retry budget exhausted")
		}
	}
	assert.Greater(t, budget, 700)

	// Recovery: once the server heals, first-try successes refill the
	// bucket and failures are retried again.
	o.healed.Store(true)
	storm(c, o, 200, 50)
	o.healed.Store(false)
	before := o.requests.Load()
	_, err := c.Generations.Create(context.Background(), params)
	require.ErrorIs(t, err, safegen.ErrServer)
	require.NotErrorIs(t, err, safegen.ErrRetryBudgetExhausted)
	assert.Equal(t, int64(4), o.requests.Load()-before, "retries are back: 1 + 3")
}

func newStormClient(tb testing.TB, url string, opts ...safegen.Option) *safegen.Client {
	all := append([]safegen.Option{safegen.WithBaseURL(url), safegen.WithBackoff(time.Microsecond, 1, time.Microsecond)}, opts...)
	c, err := safegen.NewClient("sk_storm", all...)
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkRetryStorm reports attempts per call in an outage, beside the
// same client without a budget and a default go-retryablehttp client.
func BenchmarkRetryStorm(b *testing.B) {
	const calls, concurrency = 1000, 50
	b.Run("impl=safegen", func(b *testing.B) {
		for b.Loop() {
			o := newOutage(b)
			c := newStormClient(b, o.URL)
			storm(c, o, 200, concurrency) // drain the bucket
			from := o.requests.Load()
			storm(c, o, calls, concurrency)
			b.ReportMetric(float64(o.requests.Load()-from)/calls, "attempts/call")
		}
	})
	b.Run("impl=safegen-nobudget", func(b *testing.B) {
		for b.Loop() {
			o := newOutage(b)
			c := newStormClient(b, o.URL, safegen.WithRetryBudget(0))
			storm(c, o, calls, concurrency)
			b.ReportMetric(float64(o.requests.Load())/calls, "attempts/call")
		}
	})
	b.Run("impl=retryablehttp", func(b *testing.B) {
		for b.Loop() {
			o := newOutage(b)
			rc := retryablehttp.NewClient()
			rc.Logger = nil
			rc.RetryWaitMin, rc.RetryWaitMax = time.Microsecond, time.Microsecond
			var wg sync.WaitGroup
			sem := make(chan struct{}, concurrency)
			for i := 0; i < calls; i++ {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					resp, err := rc.Post(o.URL+"/v1/generations", "application/json", []byte(`{}`))
					if err == nil {
						resp.Body.Close()
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(o.requests.Load())/calls, "attempts/call")
		}
	})
}

// BenchmarkPacing sends a burst of 500 creates at concurrency 50 to a fake
// API limited to 100 requests a second, with and without client-side pacing,
// and reports the share of 429 answers and the wall time over the ideal
// 500/L.
func BenchmarkPacing(b *testing.B) {
	const calls, concurrency, limit = 500, 50, 100
	for _, paced := range []bool{false, true} {
		b.Run(fmt.Sprintf("paced=%t", paced), func(b *testing.B) {
			for b.Loop() {
				srv := safegentest.Start(safegentest.WithRateLimit(limit, 0), safegentest.WithRateWindow(time.Second))
				opts := []safegen.Option{safegen.WithBaseURL(srv.URL), safegen.WithMaxRetries(50), safegen.WithRetryBudget(0),
					safegen.WithBackoff(10*time.Millisecond, 2, 500*time.Millisecond)}
				if paced {
					opts = append(opts, safegen.WithRateLimit(limit, 1))
				}
				c, err := safegen.NewClient(srv.APIKey, opts...)
				require.NoError(b, err)
				start := time.Now()
				var wg sync.WaitGroup
				sem := make(chan struct{}, concurrency)
				var failed atomic.Int64
				for i := 0; i < calls; i++ {
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						if _, err := c.Generations.Create(context.Background(), params); err != nil {
							failed.Add(1)
						}
					}()
				}
				wg.Wait()
				wall := time.Since(start)
				n429, total := 0, 0
				for _, r := range srv.Requests() {
					total++
					if r.Status == http.StatusTooManyRequests {
						n429++
					}
				}
				b.ReportMetric(100*float64(n429)/float64(total), "%429")
				b.ReportMetric(wall.Seconds()/(float64(calls)/limit), "wall/ideal")
				b.ReportMetric(float64(failed.Load()), "failed")
				c.Close()
				srv.Close()
			}
		})
	}
}

// TestFlatHeap: 20,000 calls with faults through one Client; the heap after
// 20k calls stays close to the heap after 2k, and Close leaves no goroutine
// behind (leakcheck checks the whole package at exit).
func TestFlatHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 calls")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get(safegen.AttemptHeader) == "1" && len(r.Header.Get("Idempotency-Key"))%5 == 0 {
			w.WriteHeader(503) // about one call in five meets a 503 first
			return
		}
		w.WriteHeader(202)
		_, _ = w.Write([]byte(`{"id":"gen_1","status":"queued","model":"img-2","cost":1}`))
	}))
	defer srv.Close()
	c := newStormClient(t, srv.URL)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	run := func(n int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				_, err := c.Generations.Create(context.Background(), params)
				assert.NoError(t, err)
			}()
		}
		wg.Wait()
	}
	run(2000)
	h2k := heap()
	run(18000)
	h20k := heap()
	t.Logf("heap after 2k calls: %d KiB, after 20k: %d KiB", h2k>>10, h20k>>10)
	assert.Less(t, h20k, h2k+2<<20, "the heap must not grow with the number of calls")
}
