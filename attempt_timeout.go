package safegen

import (
	"container/heap"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// This file bounds each attempt by WithAttemptTimeout without a timer per
// attempt. context.WithTimeout per attempt cost 9 allocations and a runtime
// timer inserted and deleted on every call, most of BenchmarkCreate's gap to
// a hand-written call (BENCHMARKS.md, section 1). There are three cases:
//
//   - The caller's context ends by the attempt's deadline anyway: it bounds
//     the attempt by itself.
//   - The caller's context cannot end (context.Background and what is made
//     from it without a cancel): the attempt shares the context of a window,
//     one per slice of windowSlices of the timeout, which ends d + d/16 after
//     the window opened. An attempt that starts in it therefore ends between
//     d and d + d/16 after its start, and allocates nothing for it.
//   - Otherwise the attempt gets a plain cancelable context (it must end
//     with the caller's too), and one timer per Client watches the deadlines
//     of all such attempts in flight, held in a min-heap: adding one is a
//     push that stops at once when deadlines arrive in order (they do when
//     every call has the same attempt timeout), and the timer is re-armed
//     only when a new deadline comes before the one it waits for.

// attemptWatch is a Client's watch over its attempts' deadlines.
type attemptWatch struct {
	mu    sync.Mutex
	heap  boundHeap   // ordered by deadline, earliest first
	timer *time.Timer // fires at armed; nil until the first attempt
	armed time.Time   // zero when the timer is not set
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
	w.add(b, deadline, cancel)
	return actx, true
}

// add watches b until deadline, when cancel ends it.
func (w *attemptWatch) add(b *attemptBound, deadline time.Time, cancel context.CancelCauseFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b.deadline, b.cancel = deadline, cancel
	b.expired.Store(false)
	heap.Push(&w.heap, b)
	if w.armed.IsZero() || b.deadline.Before(w.armed) {
		w.arm(b.deadline)
	}
}

// end stops watching b and releases its context. It may be called more
// than once.
func (w *attemptWatch) end(b *attemptBound) {
	w.mu.Lock()
	if b.pos > 0 {
		heap.Remove(&w.heap, b.pos-1)
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
		b := heap.Pop(&w.heap).(*attemptBound)
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

// boundHeap orders a watch's bounds for container/heap, keeping each
// one's pos.
type boundHeap []*attemptBound

func (h boundHeap) Len() int           { return len(h) }
func (h boundHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }

func (h boundHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i+1, j+1
}

func (h *boundHeap) Push(x any) {
	b := x.(*attemptBound)
	*h = append(*h, b)
	b.pos = len(*h)
}

func (h *boundHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	b.pos = 0
	return b
}

// attemptBody is an attempt's response body: its errors say when the
// attempt's time ran out, and closing it ends a watched attempt's watch.
// It lives inside the call's state, so wrapping allocates nothing; net/http
// and the retry loop close an attempt's body before the next attempt starts.
type attemptBody struct {
	io.ReadCloser
	st  *callState
	win context.Context // the window's context; nil for a watched attempt
}

func (b *attemptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		err = timedOut(b.st.expired(b.win), err)
	}
	return n, err
}

func (b *attemptBody) Close() error {
	err := b.ReadCloser.Close()
	if b.win == nil {
		b.st.c.watch.end(&b.st.bound)
	}
	return err
}

// timedOut returns the error an attempt failed with: context.DeadlineExceeded
// when its time ran out (expired), as context.WithTimeout would have said,
// whatever net/http made of the cancel; err otherwise.
func timedOut(expired bool, err error) error {
	if expired && err != nil && err != io.EOF {
		return context.DeadlineExceeded
	}
	return err
}

// expired reports whether the attempt's time ran out: its window's (win),
// or for a watched attempt (win nil) its deadline in the watch.
func (st *callState) expired(win context.Context) bool {
	if win == nil {
		return st.bound.expired.Load()
	}
	return win.Err() != nil
}

// windowSlices is how many windows an attempt timeout is cut into: an
// attempt in a window ends at most d/windowSlices later than d after its
// start.
const windowSlices = 16

// attemptWindows are a Client's open windows, one per attempt timeout in
// use.
type attemptWindows struct {
	mu   sync.Mutex
	open map[time.Duration]*attemptWindow
}

// attemptWindow is the context shared by the attempts that start before
// until.
type attemptWindow struct {
	ctx    context.Context
	cancel context.CancelFunc // called by the deadline itself; kept for vet
	until  time.Time
}

// join returns the context of the window open for attempts of timeout d
// that start now, opening one if none is.
func (w *attemptWindows) join(d time.Duration) context.Context {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if win := w.open[d]; win != nil && now.Before(win.until) {
		return win.ctx
	}
	if w.open == nil {
		w.open = make(map[time.Duration]*attemptWindow)
	}
	if len(w.open) >= 16 { // many timeouts in use: forget the closed windows
		for k, win := range w.open {
			if !now.Before(win.until) {
				delete(w.open, k)
			}
		}
	}
	slice := d / windowSlices
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d+slice))
	w.open[d] = &attemptWindow{ctx: ctx, cancel: cancel, until: now.Add(slice)}
	return ctx
}

// windowCtx is an attempt's context in a window: the caller's values, and
// the window's end. net/http registers its request context with the
// window's (Value finds it first), so the attempt allocates no context.
type windowCtx struct {
	win    context.Context
	caller context.Context // one that cannot end
}

func (c *windowCtx) Deadline() (time.Time, bool) { return c.win.Deadline() }
func (c *windowCtx) Done() <-chan struct{}       { return c.win.Done() }
func (c *windowCtx) Err() error                  { return c.win.Err() }

func (c *windowCtx) Value(key any) any {
	if v := c.win.Value(key); v != nil {
		return v
	}
	return c.caller.Value(key)
}
