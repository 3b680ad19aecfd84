package safegen

import (
	"context"
	"fmt"
	"math"
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
}

func newPacer(s *settings) *pacer {
	if !s.pacing {
		return nil
	}
	return &pacer{clock: s.clock, rate: s.paceRPS, burst: float64(s.paceBurst), tokens: float64(s.paceBurst), maxPause: s.maxRetryAfter}
}

// wait blocks until the request may go, or the context ends.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	now := p.clock.Now()
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
	p.mu.Unlock()
	if d <= 0 {
		return nil
	}
	return p.clock.Sleep(ctx, d)
}

// observe reads the server's rate-limit signals from an answer.
func (p *pacer) observe(status int, h http.Header) {
	if p == nil {
		return
	}
	now := p.clock.Now()
	var pause time.Duration
	if status == http.StatusTooManyRequests {
		pause, _ = retryAfter(h, status, now)
	} else if rem := strings.TrimSpace(h.Get("RateLimit-Remaining")); rem != "" {
		if n, err := strconv.Atoi(rem); err == nil && n <= 0 {
			pause, _ = parseSeconds(strings.TrimSpace(h.Get("RateLimit-Reset")))
		}
	}
	if pause <= 0 {
		return
	}
	pause = min(pause, p.maxPause)
	p.mu.Lock()
	if until := now.Add(pause); until.After(p.pausedUntil) {
		p.pausedUntil = until
	}
	p.mu.Unlock()
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
