package safegen

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WithRateLimit paces the Client: at most rps requests a second (attempts,
// retries included), in bursts of at most burst, shared by all its calls.
// It also adapts to the server: a 429's Retry-After, or RateLimit-Remaining: 0
// with RateLimit-Reset, pauses every call of the Client until then (capped by
// WithMaxRetryAfter), so a burst waits client-side instead of collecting 429s.
// rps 0 keeps only the adaptive pause. Default: no pacing (client only).
func WithRateLimit(rps float64, burst int) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithRateLimit"); err != nil {
			return err
		}
		if rps < 0 || math.IsNaN(rps) || math.IsInf(rps, 0) || burst < 0 || (rps > 0 && burst < 1) {
			return fmt.Errorf("safegen: WithRateLimit(%v, %d): want rps >= 0 and, with a rate, burst >= 1", rps, burst)
		}
		s.pacing = true
		s.paceRPS, s.paceBurst = rps, burst
		return nil
	}
}

// WithSharedQuota paces the Client from what the server says about the
// quota it shares, per API key, with every other process using that key: the
// RateLimit-Remaining and RateLimit-Reset of each answer. The Client spreads
// the requests that remain over the time left to the reset, takes its share
// of them (the part of the key's recent use that was its own, plus a little,
// so processes that want more drift to equal shares), halves its pace on a
// 429 and grows it back steadily, and jitters its requests so processes that
// read the same headers do not move in lockstep. It needs no coordination
// between the processes. A 429's Retry-After still pauses every call of the
// Client, for a random extra tenth of it. Combined with WithRateLimit, the
// slower of the two paces. Without rate-limit headers it paces nothing but
// those pauses. Default: off (client only).
func WithSharedQuota() Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithSharedQuota"); err != nil {
			return err
		}
		s.pacing, s.sharedQuota = true, true
		return nil
	}
}

// WithMaxInFlight caps the logical calls in flight at once on the Client (the
// vendors allow 10 concurrent generations per key); further calls wait for a
// slot, honoring their context. Default: no cap (client only).
func WithMaxInFlight(n int) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithMaxInFlight"); err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("safegen: WithMaxInFlight(%d): must not be negative", n)
		}
		s.maxInFlight = n
		return nil
	}
}

// pacer is the Client's shared token bucket plus the pause the server asked
// for. Like golang.org/x/time/rate's Reserve, a request takes its token at
// once (the count may go negative) and waits for it to be paid back.
type pacer struct {
	clock    Clock
	rate     float64 // tokens a second; 0: no fixed rate
	burst    float64
	maxPause time.Duration

	mu          sync.Mutex
	tokens      float64
	last        time.Time
	pausedUntil time.Time
	quota       *quota        // nil without WithSharedQuota
	turn        chan struct{} // with quota: held by the request deciding when it goes
}

func newPacer(s *settings) *pacer {
	if !s.pacing {
		return nil
	}
	p := &pacer{clock: s.clock, rate: s.paceRPS, burst: float64(s.paceBurst), tokens: float64(s.paceBurst), maxPause: s.maxRetryAfter}
	if s.sharedQuota {
		p.quota, p.turn = newQuota(rand.Uint64()), make(chan struct{}, 1)
	}
	return p
}

// wait blocks until the request may go, or the context ends.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	d := p.delayLocked(p.clock.Now())
	p.mu.Unlock()
	if d > 0 {
		if err := p.clock.Sleep(ctx, d); err != nil {
			return err
		}
	}
	if p.quota == nil {
		return nil
	}
	// One request at a time decides when it goes, on what the answers
	// said until then: a request booked early would go on stale news.
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.turn }()
	now := p.clock.Now()
	for {
		at, ok := p.quotaTurn(now)
		if ok {
			return nil
		}
		if err := p.clock.Sleep(ctx, at.Sub(now)); err != nil {
			return err
		}
		// A clock that did not move while it slept still counts the
		// sleep: ask again at the time slept to, never in a loop.
		if now = p.clock.Now(); now.Before(at) {
			now = at
		}
	}
}

// quotaTurn books a request at now when the shared quota lets it go (ok),
// or returns when to ask again.
func (p *pacer) quotaTurn(now time.Time) (at time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at = p.quota.when(now, p.pausedUntil)
	if at.After(now) {
		return at, false
	}
	p.quota.book(now)
	return now, true
}

// delayLocked books a request at now and returns how long it must wait.
func (p *pacer) delayLocked(now time.Time) time.Duration {
	var d time.Duration
	if p.rate > 0 {
		if !p.last.IsZero() {
			p.tokens = math.Min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		}
		p.last = now
		p.tokens--
		if p.tokens < 0 {
			d = time.Duration(-p.tokens / p.rate * float64(time.Second))
		}
	}
	if pause := p.pausedUntil.Sub(now); pause > d {
		d = pause
	}
	return d
}

// observe reads the server's rate-limit signals from an answer.
func (p *pacer) observe(status int, h http.Header) {
	if p == nil {
		return
	}
	p.observeAt(p.clock.Now(), status, h)
}

// observeAt reads the signals of an answer received at now.
func (p *pacer) observeAt(now time.Time, status int, h http.Header) {
	var pause time.Duration
	if status == http.StatusTooManyRequests {
		pause, _ = retryAfter(h, status, now)
	} else if rem := strings.TrimSpace(h.Get("RateLimit-Remaining")); rem != "" && p.quota == nil {
		if n, err := strconv.Atoi(rem); err == nil && n <= 0 {
			pause, _ = parseSeconds(strings.TrimSpace(h.Get("RateLimit-Reset")))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quota != nil {
		p.quota.observe(now, status, h)
	}
	if pause <= 0 {
		return
	}
	pause = min(pause, p.maxPause)
	if p.quota != nil {
		// Processes sharing the key all read the same Retry-After: each
		// comes back at its own moment within the next tenth of it.
		pause += time.Duration(p.quota.rng.Float64() * float64(pause) / 10)
	}
	if until := now.Add(pause); until.After(p.pausedUntil) {
		p.pausedUntil = until
	}
}

// inFlight is the Client's cap on calls in flight; nil means no cap.
type inFlight chan struct{}

func (f inFlight) acquire(ctx context.Context) error {
	if f == nil {
		return nil
	}
	select {
	case f <- struct{}{}:
		return nil
	default:
	}
	select {
	case f <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f inFlight) release() {
	if f != nil {
		<-f
	}
}
