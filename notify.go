package safegen

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// Notify hands a verified webhook event (from ParseEvent or the webhook
// handler) to the Client. A Wait for the event's generation returns at once
// with it when it is terminal, or polls again at once when it is not. A
// terminal event that arrives before its Wait starts is kept (the last 256
// generations), so that Wait returns without polling. Pass only events
// whose signature was verified: Wait trusts them. A nil event or one
// without a generation id is ignored. Notify never blocks on a Wait and is
// safe for concurrent use.
func (s *GenerationsService) Notify(e *Event) {
	if s == nil || e == nil || e.Data.ID == "" {
		return
	}
	g := cloneGeneration(&e.Data)
	g.Meta = ResponseMeta{}
	if g.Status == "" {
		// The data carries no status: the event type names it.
		g.Status = GenerationStatus(strings.TrimPrefix(e.Type, "generation."))
	}
	s.c.waiters.notify(g)
}

// recentEvents bounds the terminal generations kept for Waits to come.
const recentEvents = 256

// errWoken ends a Wait's sleep when an event for its generation arrives.
var errWoken = errors.New("safegen: woken by a webhook event")

// waiters is a Client's registry of the Waits in progress, by generation
// id, and of the terminal generations recent events reported. It starts no
// goroutine: Notify cancels the sleeping Waits' contexts.
type waiters struct {
	mu     sync.Mutex
	byID   map[string]map[*waiter]struct{}
	recent map[string]*Generation
	ring   [recentEvents]string // ids in recent, oldest replaced first
	next   int
}

// waiter is one Wait in progress.
type waiter struct {
	id string
	// woken: an event for id arrived since the last sleep began.
	woken bool
	// cancel ends the current sleep; nil while not sleeping.
	cancel context.CancelCauseFunc
}

func newWaiters() *waiters {
	return &waiters{byID: make(map[string]map[*waiter]struct{}), recent: make(map[string]*Generation)}
}

func (r *waiters) add(id string) *waiter {
	w := &waiter{id: id}
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byID[id]
	if set == nil {
		set = make(map[*waiter]struct{})
		r.byID[id] = set
	}
	set[w] = struct{}{}
	return w
}

func (r *waiters) remove(w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byID[w.id]
	delete(set, w)
	if len(set) == 0 {
		delete(r.byID, w.id)
	}
}

// terminal returns a copy of the terminal generation an event reported for
// id, or nil.
func (r *waiters) terminal(id string) *Generation {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.recent[id]; g != nil {
		return cloneGeneration(g)
	}
	return nil
}

// notify records g if it is terminal and wakes every Wait for its id.
func (r *waiters) notify(g *Generation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.Status.Terminal() {
		if _, ok := r.recent[g.ID]; !ok {
			if old := r.ring[r.next]; old != "" {
				delete(r.recent, old)
			}
			r.ring[r.next] = g.ID
			r.next = (r.next + 1) % recentEvents
		}
		r.recent[g.ID] = g
	}
	for w := range r.byID[g.ID] {
		w.woken = true
		if w.cancel != nil {
			w.cancel(errWoken)
		}
	}
}

// sleep waits d on clk, ending early when an event for w's generation
// arrives (woken) or ctx is done (its error).
func (r *waiters) sleep(ctx context.Context, w *waiter, clk Clock, d time.Duration) (woken bool, err error) {
	r.mu.Lock()
	if w.woken {
		w.woken = false
		r.mu.Unlock()
		return true, nil
	}
	sctx, cancel := context.WithCancelCause(ctx)
	w.cancel = cancel
	r.mu.Unlock()

	err = clk.Sleep(sctx, d)

	r.mu.Lock()
	w.cancel = nil
	woken, w.woken = w.woken, false
	r.mu.Unlock()
	cancel(nil)
	if cerr := ctx.Err(); cerr != nil {
		return false, cerr
	}
	if woken {
		return true, nil
	}
	return false, err
}

// cloneGeneration copies g with its own Output and Error.
func cloneGeneration(g *Generation) *Generation {
	c := *g
	if g.Output != nil {
		o := *g.Output
		c.Output = &o
	}
	if g.Error != nil {
		e := *g.Error
		c.Error = &e
	}
	return &c
}
