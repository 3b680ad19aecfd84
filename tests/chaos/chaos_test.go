// Package chaos drives the SDK through TCP-level faults: an in-process
// toxiproxy sits between the client and safegentest, and each toxic
// (latency, bandwidth, slicer, reset_peer, timeout, limit_data) is applied
// upstream and downstream in turn. It is a module of its own so that
// toxiproxy's dependencies stay out of the SDK's go.mod.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

func TestMain(m *testing.M) {
	// Some toxics (bandwidth) log through zerolog's global logger, not the
	// one given to NewServer: silence it.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	goleak.VerifyTestMain(m)
}

// prompt is long enough that request and response bodies (the server echoes
// the prompt) are each over a kilobyte, so a limit_data cut at cutBytes
// always lands inside a body, never in the headers (a few hundred bytes).
var prompt = strings.Repeat("a red fox running through deep snow at dusk; ", 27)

const cutBytes = 1000

// chaosEnv is safegentest behind a toxiproxy proxy, both on 127.0.0.1.
type chaosEnv struct {
	srv   *safegentest.Server
	proxy *toxiproxy.Proxy
	url   string // the proxy's address, the client's base URL
}

func startChaos(t *testing.T) *chaosEnv {
	t.Helper()
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	t.Cleanup(srv.Close)

	// toxiproxy 2.5.0 wants a metrics container and a logger; metrics stay
	// off (no collectors) and the logger is silent.
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	upstream := strings.TrimPrefix(srv.URL, "http://")
	proxy := toxiproxy.NewProxy(api, "safegen", "127.0.0.1:0", upstream)
	require.NoError(t, proxy.Start())
	t.Cleanup(proxy.Stop)
	return &chaosEnv{srv: srv, proxy: proxy, url: "http://" + proxy.Listen}
}

// toxic is one toxiproxy toxic, in the JSON its API takes.
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

func (e *chaosEnv) addToxics(t *testing.T, toxics ...toxic) {
	t.Helper()
	for _, tx := range toxics {
		b, err := json.Marshal(tx)
		require.NoError(t, err)
		_, err = e.proxy.Toxics.AddToxicJson(bytes.NewReader(b))
		require.NoError(t, err, "adding toxic %s", tx.Name)
	}
}

func (e *chaosEnv) resetToxics() { e.proxy.Toxics.ResetToxics(context.Background()) }

// phase is one slice of the run: a set of toxics and the creates made
// while they are applied.
type phase struct {
	name   string
	toxics []toxic
}

// phases are the rotation. toxiproxy draws a toxic's toxicity once per
// connection, not per request: a kept-alive connection that drew the toxic
// carries it for every request it serves until the toxic kills it.
func phases() []phase {
	tx := func(typ, stream string, toxicity float32, attrs map[string]any) toxic {
		return toxic{Name: typ + "_" + stream, Type: typ, Stream: stream, Toxicity: toxicity, Attributes: attrs}
	}
	return []phase{
		{name: "none (control)"},
		{name: "latency 20ms±10ms down, 5ms±5ms up", toxics: []toxic{
			tx("latency", "downstream", 1, map[string]any{"latency": 20, "jitter": 10}),
			tx("latency", "upstream", 1, map[string]any{"latency": 5, "jitter": 5}),
		}},
		{name: "bandwidth 64 KB/s both ways", toxics: []toxic{
			tx("bandwidth", "downstream", 1, map[string]any{"rate": 64}),
			tx("bandwidth", "upstream", 1, map[string]any{"rate": 64}),
		}},
		{name: "slicer 8±4 B, 50µs, both ways", toxics: []toxic{
			tx("slicer", "downstream", 1, map[string]any{"average_size": 8, "size_variation": 4, "delay": 50}),
			tx("slicer", "upstream", 1, map[string]any{"average_size": 8, "size_variation": 4, "delay": 50}),
		}},
		{name: "reset_peer upstream 20%", toxics: []toxic{
			tx("reset_peer", "upstream", 0.2, map[string]any{"timeout": 0}),
		}},
		{name: "reset_peer downstream 20%", toxics: []toxic{
			tx("reset_peer", "downstream", 0.2, map[string]any{"timeout": 0}),
		}},
		{name: "timeout (black hole) upstream 10%", toxics: []toxic{
			tx("timeout", "upstream", 0.1, map[string]any{"timeout": 0}),
		}},
		{name: "timeout (black hole) downstream 10%", toxics: []toxic{
			tx("timeout", "downstream", 0.1, map[string]any{"timeout": 0}),
		}},
		{name: fmt.Sprintf("limit_data downstream %d B 30%%", cutBytes), toxics: []toxic{
			tx("limit_data", "downstream", 0.3, map[string]any{"bytes": cutBytes}),
		}},
		{name: fmt.Sprintf("limit_data upstream %d B 30%%", cutBytes), toxics: []toxic{
			tx("limit_data", "upstream", 0.3, map[string]any{"bytes": cutBytes}),
		}},
	}
}

// tally is what one phase saw, counted from the client's side.
type tally struct {
	mu        sync.Mutex
	latencies []time.Duration
	attempts  int            // client attempts (attempt hook)
	causes    map[string]int // failed attempts by cause
	errTypes  map[string]int // errors returned by Create, by type
	untyped   []string       // errors that were neither *APIError nor *RetryError
	reruns    int            // logical calls re-run by the caller after an error
	lost      []string       // logical calls that never got a generation
	genIDs    map[string]string
}

func newTally() *tally {
	return &tally{causes: map[string]int{}, errTypes: map[string]int{}, genIDs: map[string]string{}}
}

func (tl *tally) hook(info safegen.AttemptInfo) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.attempts++
	if info.Cause != "ok" {
		tl.causes[info.Cause]++
	}
}

// observe classifies an error Create returned. The SDK promises a typed
// error: an *APIError for an answer, a *RetryError for no usable answer.
func (tl *tally) observe(err error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var apiErr *safegen.APIError
	var retryErr *safegen.RetryError
	switch {
	case errors.As(err, &apiErr):
		tl.errTypes[fmt.Sprintf("*APIError %d %s", apiErr.StatusCode, apiErr.Code)]++
	case errors.As(err, &retryErr):
		tl.errTypes["*RetryError: "+retryErr.Reason]++
	default:
		tl.untyped = append(tl.untyped, fmt.Sprintf("%T: %v", err, err))
	}
}

// maxReruns bounds how often the test re-runs a logical call with its key:
// a call still failing after that many re-runs is counted lost.
const maxReruns = 20

// createOnce is a careful caller's logical call: it names the call with its
// own idempotency key and, when the SDK gives up after its retries, re-runs
// it with the same key until it gets the generation. It returns the
// generation id, or "" when the call was lost.
func createOnce(c *safegen.Client, tl *tally, key string) (string, time.Duration) {
	params := &safegen.GenerationCreateParams{Model: "img-2", Prompt: prompt}
	start := time.Now()
	for run := 0; run <= maxReruns; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gen, err := c.Generations.Create(ctx, params, safegen.WithIdempotencyKey(key))
		cancel()
		if err == nil {
			return gen.ID, time.Since(start)
		}
		tl.observe(err)
		tl.mu.Lock()
		tl.reruns++
		tl.mu.Unlock()
	}
	return "", time.Since(start)
}

func runPhase(t *testing.T, env *chaosEnv, p phase, idx, n, workers int) *tally {
	t.Helper()
	tl := newTally()
	env.addToxics(t, p.toxics...)
	defer env.resetToxics()

	c, err := safegen.NewClient(env.srv.APIKey,
		safegen.WithBaseURL(env.url),
		safegen.WithAttemptTimeout(300*time.Millisecond),
		safegen.WithMaxRetries(8),
		safegen.WithBackoff(5*time.Millisecond, 2, 80*time.Millisecond),
		safegen.WithRetryBudget(0), // the budget would turn this test into a budget test
		safegen.WithAttemptHook(tl.hook),
	)
	require.NoError(t, err)
	defer c.Close()

	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				key := fmt.Sprintf("chaos-%02d-%04d", idx, i)
				id, d := createOnce(c, tl, key)
				tl.mu.Lock()
				tl.latencies = append(tl.latencies, d)
				if id == "" {
					tl.lost = append(tl.lost, key)
				} else {
					tl.genIDs[key] = id
				}
				tl.mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return tl
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func TestChaosMix(t *testing.T) {
	perPhase, workers := 200, 16
	if testing.Short() {
		perPhase = 40
	}
	env := startChaos(t)
	ps := phases()
	total := perPhase * len(ps)

	type row struct {
		name             string
		calls, attempts  int
		serverRequests   int
		replays          int
		p50, p99, maxLat time.Duration
		reruns           int
		causes, errTypes map[string]int
		lost             int
		charges          int
	}
	var rows []row
	allIDs := map[string]string{} // generation id -> key
	var untyped, lost []string
	start := time.Now()
	for idx, p := range ps {
		reqsBefore := len(env.srv.Requests())
		chargesBefore := env.srv.Ledger().Total()
		tl := runPhase(t, env, p, idx, perPhase, workers)
		sort.Slice(tl.latencies, func(i, j int) bool { return tl.latencies[i] < tl.latencies[j] })
		rows = append(rows, row{
			name: p.name, calls: len(tl.latencies), attempts: tl.attempts,
			serverRequests: len(env.srv.Requests()) - reqsBefore, replays: replays(env.srv.Requests()[reqsBefore:]),
			p50: percentile(tl.latencies, 0.50), p99: percentile(tl.latencies, 0.99),
			maxLat: tl.latencies[len(tl.latencies)-1],
			reruns: tl.reruns, causes: tl.causes, errTypes: tl.errTypes,
			lost: len(tl.lost), charges: env.srv.Ledger().Total() - chargesBefore,
		})
		untyped = append(untyped, tl.untyped...)
		lost = append(lost, tl.lost...)
		for key, id := range tl.genIDs {
			if prev, dup := allIDs[id]; dup {
				t.Errorf("generation %s returned for two logical calls: %s and %s", id, prev, key)
			}
			allIDs[id] = key
		}
	}
	wall := time.Since(start)

	// The report first, so a failing run still shows what it saw.
	var b strings.Builder
	fmt.Fprintf(&b, "| toxic | calls | client attempts | server requests | replays | failed attempts by cause | errors returned (re-run with the same key) | p50 | p99 | max | charges | lost |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	var sumAttempts, sumRequests, sumReplays, sumReruns int
	sumCauses, sumErrs := map[string]int{}, map[string]int{}
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %d | %d |\n",
			r.name, r.calls, r.attempts, r.serverRequests, r.replays, counts(r.causes), counts(r.errTypes),
			ms(r.p50), ms(r.p99), ms(r.maxLat), r.charges, r.lost)
		sumAttempts += r.attempts
		sumRequests += r.serverRequests
		sumReplays += r.replays
		sumReruns += r.reruns
		for k, v := range r.causes {
			sumCauses[k] += v
		}
		for k, v := range r.errTypes {
			sumErrs[k] += v
		}
	}
	led := env.srv.Ledger()
	fmt.Fprintf(&b, "\n- logical calls (creates): %d, %d in flight, %s wall time\n", total, workers, wall.Round(time.Millisecond))
	fmt.Fprintf(&b, "- client attempts: %d; requests the server saw: %d, %d of them answered as replays (same key, not billed)\n", sumAttempts, sumRequests, sumReplays)
	fmt.Fprintf(&b, "- failed attempts by cause: %s\n", counts(sumCauses))
	fmt.Fprintf(&b, "- errors returned by Create, each re-run with the same key: %d (%s)\n", sumReruns, counts(sumErrs))
	fmt.Fprintf(&b, "- untyped errors: %d\n", len(untyped))
	fmt.Fprintf(&b, "- charges in the ledger: %d; duplicates: %d; lost: %d\n", led.Total(), len(led.Duplicates()), len(lost))
	t.Logf("chaos through toxiproxy:\n%s", b.String())
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	}

	assert.Empty(t, untyped, "every error must be an *APIError or a *RetryError")
	assert.Empty(t, lost, "logical calls that never got a generation (each re-run %d times with its key)", maxReruns)
	assert.Empty(t, led.Duplicates(), "idempotency keys charged twice")
	assert.Equal(t, total, led.Total(), "one charge per logical call")
	assert.Equal(t, total, len(allIDs), "one distinct generation id per logical call")
	byKey := led.ByIdempotencyKey()
	for id, key := range allIDs {
		assert.Equal(t, 1, byKey[key], "charges for key %s (generation %s)", key, id)
	}
}

func replays(reqs []safegentest.RecordedRequest) int {
	n := 0
	for _, r := range reqs {
		if r.Replayed {
			n++
		}
	}
	return n
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "–"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// TestAttemptTimeoutBoundsBlackHole sends one create into a black hole (a
// timeout toxic on every connection): each attempt is cut by the attempt
// timeout and retried, and the call's context still ends the call on time.
func TestAttemptTimeoutBoundsBlackHole(t *testing.T) {
	for _, tc := range []struct {
		stream     string
		maxCharges int // downstream: the request arrives and is billed once; its replays are not
	}{
		{stream: "upstream", maxCharges: 0},
		{stream: "downstream", maxCharges: 1},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			env := startChaos(t)
			env.addToxics(t, toxic{Name: "blackhole", Type: "timeout", Stream: tc.stream, Toxicity: 1,
				Attributes: map[string]any{"timeout": 0}})
			var mu sync.Mutex
			var attempts, timeouts int
			c, err := safegen.NewClient(env.srv.APIKey,
				safegen.WithBaseURL(env.url),
				safegen.WithAttemptTimeout(100*time.Millisecond),
				safegen.WithMaxRetries(100), // the context, not the retry count, must end the call
				safegen.WithBackoff(10*time.Millisecond, 1, 10*time.Millisecond),
				safegen.WithRetryBudget(0),
				safegen.WithAttemptHook(func(info safegen.AttemptInfo) {
					mu.Lock()
					defer mu.Unlock()
					attempts++
					if info.Cause == "timeout" {
						timeouts++
					}
				}),
			)
			require.NoError(t, err)
			defer c.Close()

			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: prompt})
			elapsed := time.Since(start)

			require.Error(t, err)
			assert.Nil(t, gen)
			assert.Less(t, elapsed, 1500*time.Millisecond, "the context must end the call")
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			var re *safegen.RetryError
			require.ErrorAs(t, err, &re)
			mu.Lock()
			defer mu.Unlock()
			// 1 s of 100 ms attempts and 10 ms waits: about nine attempts,
			// each ended by the attempt timeout, none by the retry count.
			assert.GreaterOrEqual(t, attempts, 5, "attempts: %d", attempts)
			assert.LessOrEqual(t, attempts, 11, "attempts: %d", attempts)
			assert.GreaterOrEqual(t, timeouts, attempts-1, "attempts cut by the attempt timeout")
			assert.Equal(t, attempts, re.Attempts)
			led := env.srv.Ledger()
			assert.LessOrEqual(t, led.Total(), tc.maxCharges)
			assert.Empty(t, led.Duplicates())
			t.Logf("%s black hole: %s, %d attempts (%d timed out), %d charges: %v", tc.stream, elapsed.Round(time.Millisecond), attempts, timeouts, led.Total(), err)
		})
	}
}
