package safegen

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// This file bounds each attempt by WithAttemptTimeout without a timer per
// attempt. context.WithTimeout per attempt cost 9 allocations and a runtime
// timer inserted and deleted on every call, most of BenchmarkCreate's gap to
// a hand-written call (BENCHMARKS.md, section 1). Instead an attempt gets a
// plain cancelable context, and one timer per Client watches the deadlines
// of all its attempts in flight, held in a min-heap: adding one is a push
// that stops at once when deadlines arrive in order (they do when every call
// has the same attempt timeout), and the timer is re-armed only when a new
// deadline comes before the one it waits for.

// attemptWatch is a Client's watch over its attempts' deadlines.
type attemptWatch struct {
	mu    sync.Mutex
	heap  []*attemptBound // ordered by deadline, earliest first
	timer *time.Timer     // fires at armed; nil until the first attempt
	armed time.Time       // zero when the timer is not set
}

// attemptBound is one attempt under watch. It lives inside the call's
// state, so watching allocates nothing; a call has one attempt at a time.
type attemptBound struct {
	deadline time.Time
	pos      int // 1 + its index in attemptWatch.heap; 0 when not watched
	cancel   context.CancelCauseFunc
	// expired is set (before cancel) when the deadline passed, so the
	// attempt's error can say so whatever net/http made of the cancel.
	expired atomic.Bool
}

// bound returns ctx bounded to d from now, and whether it had to make a
// context for that: none is needed when ctx already ends by then.
func (w *attemptWatch) bound(ctx context.Context, b *attemptBound, d time.Duration) (context.Context, bool) {
	deadline := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		return ctx, false
	}
	actx, cancel := context.WithCancelCause(ctx)
	b.cancel = cancel
	b.deadline = deadline
	w.add(b)
	return actx, true
}

// add watches b.
func (w *attemptWatch) add(b *attemptBound) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b.expired.Store(false)
	w.heap = append(w.heap, b)
	b.pos = len(w.heap)
	w.up(b.pos - 1)
	if w.armed.IsZero() || b.deadline.Before(w.armed) {
		w.arm(b.deadline)
	}
}

// end stops watching b and releases its context. It may be called more
// than once.
func (w *attemptWatch) end(b *attemptBound) {
	w.mu.Lock()
	if b.pos > 0 {
		w.remove(b.pos - 1)
	}
	cancel := b.cancel
	b.cancel = nil
	w.mu.Unlock()
	if cancel != nil {
		cancel(nil)
	}
}

// fire ends every attempt past its deadline and re-arms for the next one.
func (w *attemptWatch) fire() {
	var due []context.CancelCauseFunc
	w.mu.Lock()
	now := time.Now()
	w.armed = time.Time{}
	for len(w.heap) > 0 && !w.heap[0].deadline.After(now) {
		b := w.heap[0]
		w.remove(0)
		b.expired.Store(true)
		if b.cancel != nil {
			due = append(due, b.cancel)
			b.cancel = nil
		}
	}
	if len(w.heap) > 0 {
		w.arm(w.heap[0].deadline)
	}
	w.mu.Unlock()
	for _, cancel := range due {
		cancel(context.DeadlineExceeded)
	}
}

// arm sets the timer for t; w.mu is held.
func (w *attemptWatch) arm(t time.Time) {
	w.armed = t
	d := time.Until(t)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
		return
	}
	w.timer.Reset(d)
}

// remove takes the bound at i out of the heap; w.mu is held.
func (w *attemptWatch) remove(i int) {
	h := w.heap
	last := len(h) - 1
	h[i].pos = 0
	if i != last {
		h[i] = h[last]
		h[i].pos = i + 1
	}
	h[last] = nil
	w.heap = h[:last]
	if i != last {
		w.down(i)
		w.up(i)
	}
}

func (w *attemptWatch) up(i int) {
	h := w.heap
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].deadline.Before(h[p].deadline) {
			return
		}
		h[i], h[p] = h[p], h[i]
		h[i].pos, h[p].pos = i+1, p+1
		i = p
	}
}

func (w *attemptWatch) down(i int) {
	h := w.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].deadline.Before(h[l].deadline) {
			m = r
		}
		if !h[m].deadline.Before(h[i].deadline) {
			return
		}
		h[i], h[m] = h[m], h[i]
		h[i].pos, h[m].pos = i+1, m+1
		i = m
	}
}

// timedOut returns the error an attempt failed with: context.DeadlineExceeded
// when its deadline passed (as context.WithTimeout would have said),
// whatever net/http made of the cancel; err otherwise.
func (b *attemptBound) timedOut(err error) error {
	if err != nil && err != io.EOF && b.expired.Load() {
		return context.DeadlineExceeded
	}
	return err
}

// attemptBody is an attempt's response body: closing it ends the attempt's
// watch. It lives inside the call's state, so wrapping allocates nothing;
// net/http and the retry loop close an attempt's body before the next
// attempt starts.
type attemptBody struct {
	io.ReadCloser
	st *callState
}

func (b *attemptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	return n, b.st.bound.timedOut(err)
}

func (b *attemptBody) Close() error {
	err := b.ReadCloser.Close()
	b.st.c.watch.end(&b.st.bound)
	return err
}
