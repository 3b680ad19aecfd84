package safegen

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// quota paces one Client from what the server says about the quota it
// shares, per API key, with every other process using that key
// (WithSharedQuota). No process knows how many others there are; each one:
//
//   - learns where the server's window ends: every answer's RateLimit-Reset
//     (whole seconds, rounded up) puts the end in (now+T-1s, now+T]; the
//     intersection of those intervals pins it to a few milliseconds;
//   - spreads what remains over the time left: the key may send
//     Remaining/(time to the reset) requests a second from now on, with the
//     Remaining of the last answer lowered by the key's consumption since;
//   - takes its share of that: the part of the key's consumption (the drops
//     of Remaining, seen by all) that was its own admitted requests, plus a
//     little (shareGrowth), so shares drift to an equal split among the
//     processes that want more (additive increase) and a process that
//     wants less leaves its part to the others;
//   - halves a gain on every 429 and grows it back by gainGrowth a second
//     (multiplicative decrease, additive increase), for servers whose
//     headers say less than they should;
//   - jitters each gap between two requests, and the first request after
//     a spent window, so processes that read the same headers do not send
//     in lockstep.
//
// Spreading Remaining over the time left never runs a window dry early
// whatever the processes' shares add up to: with a total share k, Remaining
// falls as (time left)^k, reaching 0 only at the reset. The shares keep the
// pace even (k near 1) and keep a stale Remaining, read by several processes
// at once at the end of a window, from being spent several times over.
//
// quota is not safe for concurrent use: its pacer's mutex guards it.
type quota struct {
	rng *rand.Rand

	// The server's current window, as far as the answers tell.
	haveWin      bool
	endLo, endHi time.Time     // the window ends in (endLo, endHi]
	winLen       time.Duration // the longest RateLimit-Reset seen: the window's length
	limit        int           // RateLimit-Limit, else the highest Remaining seen plus one
	rem          int           // the lowest Remaining seen in the window
	remAt        time.Time     // when rem was seen

	// Time-decayed sums since the first answer: the key's consumption
	// (drops of Remaining) and this Client's admitted requests.
	lastObs       time.Time
	keyUsed, mine float64

	gain   float64   // AIMD factor in [minGain, 1]
	gainAt time.Time // when gain was last brought up to date
	next   time.Time // the earliest time of this Client's next request
}

const (
	// shareGrowth is added to a Client's measured share of the key: the
	// additive increase that brings processes to equal shares.
	shareGrowth = 0.02
	// minShare keeps a newly started Client from waiting for a share it
	// has not had the chance to use.
	minShare = 0.02
	// gainGrowth is how fast the gain grows back after a 429, a second.
	gainGrowth = 0.2
	minGain    = 1.0 / 32
	// gapJitter spreads each gap uniformly over ±25 % of its length.
	gapJitter = 0.25
	// windowJitter bounds the random delay of the first request after a
	// spent window.
	windowJitter = 250 * time.Millisecond
	// decay is the time constant of the consumption sums, as a fraction of
	// the window (bounded by minDecay and maxDecay).
	decayFraction = 8
	minDecay      = 250 * time.Millisecond
	maxDecay      = 5 * time.Second
)

func newQuota(seed uint64) *quota {
	return &quota{rng: rand.New(rand.NewPCG(seed, 0x5a11ed)), gain: 1}
}

// rateHeaders reads an answer's RateLimit-Remaining and RateLimit-Reset
// (or rimp's X-RateLimit-Reset, seconds or a Unix time), and
// RateLimit-Limit when sent.
func rateHeaders(h http.Header, now time.Time) (remaining, limit int, reset time.Duration, ok bool) {
	remaining, err := strconv.Atoi(strings.TrimSpace(h.Get("RateLimit-Remaining")))
	if err != nil || remaining < 0 {
		return 0, 0, 0, false
	}
	reset, ok = parseSeconds(strings.TrimSpace(h.Get("RateLimit-Reset")))
	if !ok {
		reset, ok = parseSeconds(strings.TrimSpace(h.Get("X-RateLimit-Reset")))
		if ok && reset >= 1e9*time.Second {
			reset = max(time.Unix(int64(reset/time.Second), 0).Sub(now), 0)
		}
	}
	if !ok || reset > 24*time.Hour {
		return 0, 0, 0, false
	}
	limit, err = strconv.Atoi(strings.TrimSpace(h.Get("RateLimit-Limit")))
	if err != nil || limit < 0 {
		limit = 0
	}
	return remaining, limit, reset, true
}

// observe learns from one answer received at now.
func (q *quota) observe(now time.Time, status int, h http.Header) {
	limited := status == http.StatusTooManyRequests
	if dt := now.Sub(q.gainAt).Seconds(); !q.gainAt.IsZero() && dt > 0 {
		q.gain = min(1, q.gain+gainGrowth*dt)
	}
	q.gainAt = now
	if limited {
		q.gain = max(minGain, q.gain/2)
	}
	rem, limit, reset, ok := rateHeaders(h, now)
	if !ok {
		return
	}
	q.limit = max(q.limit, limit, rem+1)
	q.winLen = max(q.winLen, reset)
	lo, hi := now.Add(reset-time.Second), now.Add(reset)
	used := 0
	switch {
	case !q.haveWin:
		// The first answer: only this Client's own request is known.
		if !limited {
			used = 1
		}
		q.newWindow(now, lo, hi, rem)
	case !lo.Before(q.endHi) && rem > q.rem:
		// A later window. What it spent before this answer counts as
		// used now.
		used = max(q.limit-rem, 0)
		q.newWindow(now, lo, hi, rem)
	case hi.After(q.endLo) && lo.Before(q.endHi):
		// The same window: narrow down its end.
		if lo.After(q.endLo) {
			q.endLo = lo
		}
		if hi.Before(q.endHi) {
			q.endHi = hi
		}
		if rem < q.rem {
			used = q.rem - rem
			q.rem, q.remAt = rem, now
		}
	case hi.After(q.endHi):
		// An end that moved on (a sliding window, a token bucket): follow it.
		used = max(q.rem-rem, 0)
		q.newWindow(now, lo, hi, rem)
	default:
		// A late answer from an earlier window.
	}
	mine := 0.0
	if !limited {
		mine = 1
	}
	q.accumulate(now, float64(used), mine)
}

func (q *quota) newWindow(now, lo, hi time.Time, rem int) {
	q.haveWin = true
	q.endLo, q.endHi, q.rem, q.remAt = lo, hi, rem, now
}

// accumulate adds used requests of the key and mine of this Client to the
// decayed sums.
func (q *quota) accumulate(now time.Time, used, mine float64) {
	if q.lastObs.IsZero() {
		q.lastObs = now
	}
	dt := now.Sub(q.lastObs).Seconds()
	if dt < 0 {
		dt = 0
	}
	tau := min(max(q.winLen/decayFraction, minDecay), maxDecay).Seconds()
	k := math.Exp(-dt / tau)
	q.keyUsed = q.keyUsed*k + used
	q.mine = q.mine*k + mine
	q.lastObs = now
}

// share is the part of the key's pace this Client takes.
func (q *quota) share() float64 {
	s := 1.0
	if q.keyUsed >= 4 {
		s = min(1, max(minShare, q.mine/q.keyUsed))
	}
	return min(1, s+shareGrowth) * q.gain
}

// when returns the earliest time this Client's next request may go: no
// earlier than notBefore, one gap after the last one, and, when the window
// is spent, just after its end.
func (q *quota) when(now, notBefore time.Time) time.Time {
	at := now
	if notBefore.After(at) {
		at = notBefore
	}
	if q.next.After(at) {
		at = q.next
	}
	if q.rate(at) > 0 {
		return at
	}
	// Spent: go in the next window, at a moment of this Client's own
	// within its first quarter gap (at most windowJitter).
	at = q.endHi
	j := windowJitter
	if r := q.rate(at); r > 0 && !math.IsInf(r, 1) {
		j = min(j, time.Duration(float64(time.Second)/r/4))
	}
	return at.Add(time.Duration(q.rng.Float64() * float64(j)))
}

// book records that a request goes at now: the next one waits a gap,
// jittered, at the pace allowed now.
func (q *quota) book(now time.Time) {
	r := q.rate(now)
	if r <= 0 || math.IsInf(r, 1) {
		return
	}
	gap := (1 + gapJitter*(2*q.rng.Float64()-1)) / r
	q.next = now.Add(time.Duration(gap * float64(time.Second)))
}

// rate is how many requests a second this Client may send at time at:
// +Inf when nothing is known yet, 0 when the window is spent.
func (q *quota) rate(at time.Time) float64 {
	if !q.haveWin {
		return math.Inf(1)
	}
	if at.Before(q.endHi) {
		// The pace of the last answer: the key spreading what it said
		// remained over what was then left of the window keeps that pace
		// until the reset.
		rest := float64(q.rem) - q.reserveCount()
		if rest <= 0 {
			return 0
		}
		return q.share() * rest / q.endHi.Sub(q.remAt).Seconds()
	}
	// A window not seen yet: its whole limit over its whole length.
	if q.winLen <= 0 || q.limit <= 0 {
		return math.Inf(1)
	}
	return q.share() * float64(q.limit) / q.winLen.Seconds()
}

// reserveCount is what the key leaves unspent at the end of a window, for
// the estimates' errors: 1 % of the limit, at least one request.
func (q *quota) reserveCount() float64 {
	return max(1, math.Ceil(float64(q.limit)/100))
}
