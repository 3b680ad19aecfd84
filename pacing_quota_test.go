package safegen

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quotaServer is the contract's per-key rate limit as safegentest runs it: a
// window of limit requests that starts at the first request after the last
// one ended, with RateLimit-* headers in whole seconds, rounded up.
type quotaServer struct {
	limit    int
	window   time.Duration
	winStart time.Time
	count    int

	admitted, limited int
}

func (s *quotaServer) admit(now time.Time) (int, http.Header) {
	if s.winStart.IsZero() || !now.Before(s.winStart.Add(s.window)) {
		s.winStart, s.count = now, 0
	}
	reset := int((s.winStart.Add(s.window).Sub(now) + time.Second - 1) / time.Second)
	h := http.Header{}
	h.Set("RateLimit-Limit", strconv.Itoa(s.limit))
	h.Set("RateLimit-Reset", strconv.Itoa(max(reset, 1)))
	if s.count >= s.limit {
		s.limited++
		h.Set("RateLimit-Remaining", "0")
		h.Set("Retry-After", strconv.Itoa(max(reset, 1)))
		return http.StatusTooManyRequests, h
	}
	s.count++
	s.admitted++
	h.Set("RateLimit-Remaining", strconv.Itoa(s.limit-s.count))
	return http.StatusOK, h
}

// quotaSim runs processes that share one quotaServer, on simulated time:
// each process is a pacer with workers that send a request, get the answer
// one latency later, wait a think time, and send the next.
type quotaSim struct {
	processes int
	workers   int           // requests in flight per process at most
	latency   time.Duration // request to answer
	think     time.Duration // answer to the next request of the worker
	limit     int
	window    time.Duration
	duration  time.Duration
	shared    bool    // WithSharedQuota; else local pacing only
	localRPS  float64 // the local pace of each process without it
	seed      uint64
}

type simResult struct {
	requests, limited, admitted int
	capacity                    float64 // what the quota allowed over the run
	perProcess                  []int
}

func (r simResult) limitedShare() float64 { return float64(r.limited) / float64(r.requests) }
func (r simResult) usedShare() float64    { return float64(r.admitted) / r.capacity }

func (r simResult) String() string {
	return fmt.Sprintf("%d requests, %d 429s (%.2f%%), %d admitted = %.1f%% of the quota, per process %v",
		r.requests, r.limited, 100*r.limitedShare(), r.admitted, 100*r.usedShare(), r.perProcess)
}

type simEvent struct {
	at      time.Time
	kind    int // simReady, simTurn, simSend, simAnswer
	process int
	status  int
	header  http.Header
	seq     int
}

const (
	simReady  = iota // a worker wants to send
	simTurn          // the process's first waiting worker asks the pacer again
	simSend          // a request reaches the server
	simAnswer        // its answer comes back
)

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(a, b int) bool {
	if !q[a].at.Equal(q[b].at) {
		return q[a].at.Before(q[b].at)
	}
	return q[a].seq < q[b].seq
}
func (q simQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// run plays the processes on simulated time, as pacer.wait runs them: with
// WithSharedQuota, one waiting request per process at a time asks the
// pacer (the turn), again after each sleep; without it, each request
// books its delay at once and goes when it ends.
func (sim quotaSim) run() simResult {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	srv := &quotaServer{limit: sim.limit, window: sim.window}
	rng := rand.New(rand.NewPCG(sim.seed, 7))
	pacers := make([]*pacer, sim.processes)
	for i := range pacers {
		s := defaultSettings()
		s.pacing = true
		if sim.shared {
			s.sharedQuota = true
		} else {
			s.paceRPS, s.paceBurst = sim.localRPS, 1
		}
		pacers[i] = newPacer(&s)
		if pacers[i].quota != nil {
			pacers[i].quota = newQuota(sim.seed*1000 + uint64(i))
		}
	}
	waiting := make([]int, sim.processes) // workers queued for the turn
	turnHeld := make([]bool, sim.processes)
	var q simQueue
	seq := 0
	push := func(e simEvent) {
		seq++
		e.seq = seq
		heap.Push(&q, e)
	}
	for p := 0; p < sim.processes; p++ {
		for w := 0; w < sim.workers; w++ {
			// Processes start within the first second, in no order.
			push(simEvent{at: start.Add(time.Duration(rng.Float64() * float64(time.Second))), process: p})
		}
	}
	res := simResult{perProcess: make([]int, sim.processes)}
	end := start.Add(sim.duration)
	for q.Len() > 0 {
		e := heap.Pop(&q).(simEvent)
		if e.at.After(end) {
			break
		}
		p := pacers[e.process]
		switch e.kind {
		case simReady:
			d := p.delayLocked(e.at)
			if p.quota == nil {
				push(simEvent{at: e.at.Add(d), kind: simSend, process: e.process})
				break
			}
			waiting[e.process]++
			if !turnHeld[e.process] {
				turnHeld[e.process] = true
				push(simEvent{at: e.at.Add(d), kind: simTurn, process: e.process})
			}
		case simTurn:
			at, ok := p.quotaTurn(e.at)
			if !ok {
				push(simEvent{at: at, kind: simTurn, process: e.process})
				break
			}
			push(simEvent{at: e.at, kind: simSend, process: e.process})
			waiting[e.process]--
			turnHeld[e.process] = waiting[e.process] > 0
			if turnHeld[e.process] {
				push(simEvent{at: e.at, kind: simTurn, process: e.process})
			}
		case simSend:
			// Latency varies by ±20 %; the server sees the request half way.
			lat := time.Duration(float64(sim.latency) * (0.8 + 0.4*rng.Float64()))
			res.requests++
			status, h := srv.admit(e.at.Add(lat / 2))
			if status == http.StatusOK {
				res.perProcess[e.process]++
			}
			push(simEvent{at: e.at.Add(lat), kind: simAnswer, process: e.process, status: status, header: h})
		case simAnswer:
			p.observeAt(e.at, e.status, e.header)
			push(simEvent{at: e.at.Add(sim.think), kind: simReady, process: e.process})
		}
	}
	res.limited, res.admitted = srv.limited, srv.admitted
	res.capacity = float64(sim.limit) * sim.duration.Seconds() / sim.window.Seconds()
	return res
}

// TestSharedQuotaSimulated: four processes share one API key whose quota
// (120 requests a minute) is far below their combined demand (four workers
// each, a request every half second per worker: about 30 a second). With
// WithSharedQuota, at most 2 % of their requests get a 429 and they use at
// least 85 % of the quota; with local pacing only (each paced at the whole
// key's rate, as a process that believes it is alone would be), a storm of
// 429s hits each window's end.
func TestSharedQuotaSimulated(t *testing.T) {
	base := quotaSim{processes: 4, workers: 4, latency: 40 * time.Millisecond, think: 500 * time.Millisecond,
		limit: 120, window: time.Minute, duration: 10 * time.Minute, seed: 1}
	shared := base
	shared.shared = true
	rs := shared.run()
	t.Logf("shared quota: %v", rs)
	local := base
	local.localRPS = float64(base.limit) / base.window.Seconds()
	rl := local.run()
	t.Logf("local pacing only: %v", rl)

	assert.LessOrEqual(t, rs.limitedShare(), 0.02, "429s with WithSharedQuota")
	assert.GreaterOrEqual(t, rs.usedShare(), 0.85, "quota used with WithSharedQuota")
	assert.Greater(t, rl.limitedShare(), 0.05, "local pacing alone: a 429 storm")
	for _, n := range rs.perProcess {
		assert.InDelta(t, rs.admitted/4, n, float64(rs.admitted)/8, "each process gets about a quarter")
	}
}

// TestSharedQuotaScenarios runs the simulation over fleet sizes, windows,
// latencies and demands.
func TestSharedQuotaScenarios(t *testing.T) {
	for _, sim := range []quotaSim{
		{processes: 4, workers: 4, latency: 20 * time.Millisecond, limit: 100, window: 10 * time.Second, duration: 2 * time.Minute},
		{processes: 2, workers: 2, latency: 50 * time.Millisecond, think: 500 * time.Millisecond, limit: 120, window: time.Minute, duration: 10 * time.Minute},
		{processes: 8, workers: 2, latency: 30 * time.Millisecond, think: time.Second, limit: 300, window: time.Minute, duration: 10 * time.Minute},
		{processes: 4, workers: 8, latency: 100 * time.Millisecond, limit: 60, window: 3 * time.Second, duration: time.Minute},
		{processes: 16, workers: 1, latency: 20 * time.Millisecond, think: 100 * time.Millisecond, limit: 600, window: time.Minute, duration: 5 * time.Minute},
	} {
		name := fmt.Sprintf("%dx%d/%d-per-%v", sim.processes, sim.workers, sim.limit, sim.window)
		t.Run(name, func(t *testing.T) {
			sim.shared, sim.seed = true, 3
			r := sim.run()
			t.Logf("%v", r)
			assert.LessOrEqual(t, r.limitedShare(), 0.02)
			assert.GreaterOrEqual(t, r.usedShare(), 0.85)
		})
	}
}

func TestSharedQuotaOptionValidates(t *testing.T) {
	_, err := NewClient(testAPIKey, WithBaseURL("https://a.example"), WithSharedQuota())
	require.NoError(t, err)
}

// rateHeader is an answer's RateLimit-* headers.
func rateHeader(limit, remaining, reset int) http.Header {
	h := http.Header{}
	h.Set("RateLimit-Limit", strconv.Itoa(limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(reset))
	return h
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestQuotaPinsTheWindowEnd(t *testing.T) {
	q := newQuota(1)
	// The window ends at t0+10.4s: Reset rounds the time left up.
	for _, ms := range []int{0, 300, 450, 900, 1350, 1420} {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		left := t0.Add(10400 * time.Millisecond).Sub(now)
		q.observe(now, 200, rateHeader(100, 90, int((left+time.Second-1)/time.Second)))
	}
	assert.True(t, q.endLo.Before(t0.Add(10400*time.Millisecond)))
	assert.False(t, q.endHi.Before(t0.Add(10400*time.Millisecond)))
	assert.LessOrEqual(t, q.endHi.Sub(q.endLo), 70*time.Millisecond, "pinned to the gap between two answers")
	assert.Equal(t, 11*time.Second, q.winLen, "the longest Reset seen, rounded up as sent")
}

func TestQuotaSpreadsWhatRemains(t *testing.T) {
	q := newQuota(1)
	// Alone on the key: 21 remain for 10 s, one kept in reserve: a request
	// every 0.5 s (share 1), jittered by at most a quarter.
	q.observe(t0, 200, rateHeader(21, 21, 10))
	var gaps []time.Duration
	now := t0
	for i := 0; i < 200; i++ {
		at := q.when(now, time.Time{})
		if i > 0 {
			gaps = append(gaps, at.Sub(now))
		}
		q.book(at)
		now = at
		if now.After(t0.Add(5 * time.Second)) {
			break
		}
	}
	var sum time.Duration
	for _, g := range gaps {
		assert.InDelta(t, float64(500*time.Millisecond), float64(g), float64(126*time.Millisecond))
		sum += g
	}
	mean := sum / time.Duration(len(gaps))
	assert.InDelta(t, float64(500*time.Millisecond), float64(mean), float64(40*time.Millisecond))
	assert.NotEqual(t, gaps[0], gaps[1], "gaps are jittered")
}

func TestQuotaTakesItsShare(t *testing.T) {
	q := newQuota(1)
	// Each of this Client's answers shows Remaining 4 lower: three other
	// processes use the key as much. Its share is a quarter (plus the
	// growth), so its gap is about four times the key's.
	rem := 1000
	now := t0
	for i := 0; i < 150; i++ {
		q.observe(now, 200, rateHeader(1001, rem, 60))
		rem -= 4
		now = now.Add(50 * time.Millisecond)
	}
	assert.InDelta(t, 0.25, q.mine/q.keyUsed, 0.01)
	keyGap := q.endHi.Sub(q.remAt).Seconds() / (float64(q.rem) - q.reserveCount())
	q.next = time.Time{}
	q.book(now)
	gap := q.next.Sub(now).Seconds()
	assert.InDelta(t, keyGap/(0.25+shareGrowth), gap, keyGap/(0.25+shareGrowth)*gapJitter)
}

func TestQuotaHalvesOn429AndGrowsBack(t *testing.T) {
	q := newQuota(1)
	q.observe(t0, 200, rateHeader(100, 99, 60))
	require.Equal(t, 1.0, q.gain)
	q.observe(t0, 429, rateHeader(100, 0, 30))
	assert.Equal(t, 0.5, q.gain)
	q.observe(t0, 429, rateHeader(100, 0, 30))
	assert.Equal(t, 0.25, q.gain)
	// Additive increase: gainGrowth a second, up to 1.
	q.observe(t0.Add(time.Second), 200, http.Header{})
	assert.InDelta(t, 0.25+gainGrowth, q.gain, 1e-9)
	q.observe(t0.Add(time.Minute), 200, http.Header{})
	assert.Equal(t, 1.0, q.gain)
	for i := 0; i < 20; i++ {
		q.observe(t0.Add(time.Minute), 429, http.Header{})
	}
	assert.Equal(t, minGain, q.gain, "never to zero")
}

func TestQuotaWaitsOutASpentWindow(t *testing.T) {
	q := newQuota(1)
	q.observe(t0, 200, rateHeader(50, 1, 7)) // the last one is the reserve
	at := q.when(t0, time.Time{})
	end := q.endHi
	assert.False(t, at.Before(end), "not before the window ends")
	assert.LessOrEqual(t, at.Sub(end), windowJitter)
	// In the next window (not seen yet): the whole limit over its length.
	assert.InDelta(t, 50.0/7, q.rate(end.Add(time.Millisecond)), 1e-9)
}

func TestQuotaNextWindowAndLateAnswers(t *testing.T) {
	q := newQuota(1)
	q.observe(t0, 200, rateHeader(50, 10, 2))
	end := q.endHi
	// A late answer of the same window (a higher Remaining, sent earlier)
	// changes nothing.
	q.observe(t0.Add(100*time.Millisecond), 200, rateHeader(50, 12, 2))
	assert.Equal(t, 10, q.rem)
	// The next window: Remaining back up, its end one window later.
	q.observe(t0.Add(2500*time.Millisecond), 200, rateHeader(50, 47, 2))
	assert.Equal(t, 47, q.rem)
	assert.True(t, q.endHi.After(end.Add(time.Second)))
}

func TestQuotaIgnoresAnswersWithoutHeaders(t *testing.T) {
	q := newQuota(1)
	q.observe(t0, 200, http.Header{})
	q.observe(t0, 200, rateHeader(10, -1, 5))
	h := rateHeader(10, 5, 5)
	h.Set("RateLimit-Reset", "soon")
	q.observe(t0, 200, h)
	assert.False(t, q.haveWin)
	assert.Equal(t, t0, q.when(t0, time.Time{}), "nothing known: no pacing")
	// rimp's X-RateLimit-Reset as a Unix time is understood.
	h = http.Header{}
	h.Set("RateLimit-Remaining", "5")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(t0.Add(9*time.Second).Unix(), 10))
	q.observe(t0, 200, h)
	assert.True(t, q.haveWin)
	assert.Equal(t, t0.Add(9*time.Second), q.endHi)
}

// TestQuotaProcessesDoNotMoveInLockstep: two Clients that read the very same
// answers send at different moments.
func TestQuotaProcessesDoNotMoveInLockstep(t *testing.T) {
	a, b := newQuota(1), newQuota(2)
	for _, q := range []*quota{a, b} {
		q.observe(t0, 200, rateHeader(100, 60, 30))
	}
	same := 0
	na, nb := t0, t0
	for i := 0; i < 20; i++ {
		na, nb = a.when(na, time.Time{}), b.when(nb, time.Time{})
		a.book(na)
		b.book(nb)
		if na.Equal(nb) {
			same++
		}
	}
	assert.LessOrEqual(t, same, 1)
}

// TestSharedQuotaThroughClient: the option paces real calls on the Client's
// clock, from the headers its answers carry.
func TestSharedQuotaThroughClient(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		// 11 left for 10 s: one kept back, a request a second.
		w.Header().Set("RateLimit-Limit", "100")
		w.Header().Set("RateLimit-Remaining", "11")
		w.Header().Set("RateLimit-Reset", "10")
		writeJSON(w, 202, genBody)
	})
	c, clk := newTestClient(t, rec.URL, WithSharedQuota())
	for i := 0; i < 4; i++ {
		_, err := c.Generations.Create(context.Background(), testParams)
		require.NoError(t, err)
	}
	sleeps := clk.Sleeps()
	// The first call goes at once; so does the second, the first to know
	// the window; then a second between two (alone: a share of 1).
	require.Len(t, sleeps, 2)
	for _, d := range sleeps {
		assert.InDelta(t, float64(time.Second), float64(d), float64(time.Second)*gapJitter)
	}
	assert.Len(t, rec.Seen(), 4)
}

func TestSharedQuotaPauseIsJittered(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			writeJSON(w, 429, apiErrBody("rate_limit_exceeded", "slow"))
			return
		}
		writeJSON(w, 202, genBody)
	})
	c, clk := newTestClient(t, rec.URL, WithSharedQuota(), WithMaxRetries(0))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrRateLimited)
	_, err = c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	sleeps := clk.Sleeps()
	require.Len(t, sleeps, 1)
	assert.GreaterOrEqual(t, sleeps[0], 2*time.Second)
	assert.LessOrEqual(t, sleeps[0], 2200*time.Millisecond)
}

func TestSharedQuotaIsClientOnly(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, genBody) })
	c, _ := newTestClient(t, rec.URL)
	_, err := c.Generations.Create(context.Background(), testParams, WithSharedQuota())
	require.ErrorContains(t, err, "client option")
	assert.Empty(t, rec.Seen())
}

// TestSharedQuotaConcurrentCalls runs many calls of one Client at once on
// the real clock (for the race detector): each waits its turn.
func TestSharedQuotaConcurrentCalls(t *testing.T) {
	var n atomic.Int32
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Remaining", strconv.Itoa(10000-int(n.Add(1))))
		w.Header().Set("RateLimit-Reset", "1")
		writeJSON(w, 202, genBody)
	})
	c, err := NewClient(testAPIKey, WithBaseURL(rec.URL), WithSharedQuota())
	require.NoError(t, err)
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 5; k++ {
				_, err := c.Generations.Create(context.Background(), testParams)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	assert.Len(t, rec.Seen(), 80)
	// A cancelled context ends a wait for the turn.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.Canceled)
}

// stillClock records sleeps but never moves.
type stillClock struct{ fakeClock }

func (s *stillClock) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sleeps = append(s.sleeps, d)
	return ctx.Err()
}

func TestSharedQuotaWithAClockThatDoesNotMove(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Remaining", "11")
		w.Header().Set("RateLimit-Reset", "10")
		writeJSON(w, 202, genBody)
	})
	clk := &stillClock{fakeClock{now: t0}}
	c, err := NewClient(testAPIKey, WithBaseURL(rec.URL), WithClock(clk), WithSharedQuota())
	require.NoError(t, err)
	defer c.Close()
	for i := 0; i < 3; i++ {
		_, err := c.Generations.Create(context.Background(), testParams)
		require.NoError(t, err)
	}
	assert.Len(t, clk.Sleeps(), 1, "one sleep, then the call goes")
}
