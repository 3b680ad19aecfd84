package safegen

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkHeap fails unless w's heap is ordered and every bound knows its
// place.
func checkHeap(t *testing.T, w *attemptWatch) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, b := range w.heap {
		require.Equal(t, i+1, b.pos, "bound %d does not know its place", i)
		if i > 0 {
			p := w.heap[(i-1)/2]
			require.False(t, b.deadline.Before(p.deadline), "bound %d is earlier than its parent", i)
		}
	}
	if len(w.heap) > 0 {
		require.True(t, w.armed.Equal(w.heap[0].deadline) || w.armed.Before(w.heap[0].deadline),
			"the timer waits past the earliest deadline")
	}
}

func watched(w *attemptWatch) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.heap)
}

func TestAttemptWatchHeap(t *testing.T) {
	var w attemptWatch
	defer func() {
		if w.timer != nil {
			w.timer.Stop()
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(time.Hour) // never reached: only fire below ends bounds
	var live []*attemptBound
	for round := range 2000 {
		if len(live) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(live))
			w.end(live[i])
			w.end(live[i]) // twice is harmless
			require.Zero(t, live[i].pos)
			live = append(live[:i], live[i+1:]...)
		} else {
			b := new(attemptBound)
			_, cancel := context.WithCancelCause(context.Background())
			w.add(b, base.Add(time.Duration(rng.IntN(5000))*time.Millisecond), cancel)
			live = append(live, b)
		}
		if round%97 == 0 {
			checkHeap(t, &w)
		}
	}
	checkHeap(t, &w)
	require.Equal(t, len(live), watched(&w))
	for _, b := range live {
		w.end(b)
	}
	require.Zero(t, watched(&w))
}

func TestAttemptWatchFiresDueBoundsOnly(t *testing.T) {
	var w attemptWatch
	defer func() { w.timer.Stop() }()
	now := time.Now()
	type entry struct {
		b   *attemptBound
		ctx context.Context
		due bool
	}
	var all []entry
	for i := range 50 {
		due := i%3 == 0
		d := time.Hour + time.Duration(i)*time.Second
		if due {
			d = -time.Duration(i+1) * time.Millisecond
		}
		b := new(attemptBound)
		ctx, cancel := context.WithCancelCause(context.Background())
		w.add(b, now.Add(d), cancel)
		all = append(all, entry{b, ctx, due})
	}
	w.fire() // the timer may have fired already: firing again changes nothing
	for i, e := range all {
		if e.due {
			assert.True(t, e.b.expired.Load(), "bound %d", i)
			select { // the timer's own fire may still be canceling
			case <-e.ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("bound %d was not canceled", i)
			}
			assert.ErrorIs(t, context.Cause(e.ctx), context.DeadlineExceeded, "bound %d", i)
			assert.ErrorIs(t, timedOut(e.b.expired.Load(), errors.New("net/http: request canceled")), context.DeadlineExceeded)
			assert.Zero(t, e.b.pos)
		} else {
			assert.False(t, e.b.expired.Load(), "bound %d", i)
			assert.NoError(t, e.ctx.Err(), "bound %d", i)
			assert.NotZero(t, e.b.pos)
		}
	}
	checkHeap(t, &w)
	w.mu.Lock()
	assert.True(t, w.armed.Equal(now.Add(time.Hour+time.Second)), "re-armed for the earliest left (i=1)")
	w.mu.Unlock()
}

// callerContexts are the two kinds of caller context without a deadline:
// one that cannot end (its attempts share a window's context) and one that
// can (its attempts are watched).
var callerContexts = []struct {
	name string
	make func() (context.Context, context.CancelFunc)
}{
	{"background", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
	{"cancelable", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
}

// A stalled body (headers sent, then nothing) is bounded too, and the
// attempt is reported as a timeout and retried with the same key.
func TestAttemptTimeoutBoundsAStalledBody(t *testing.T) {
	for _, cc := range callerContexts {
		t.Run(cc.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= 2 {
					stall(w, r, release)
					return
				}
				writeJSON(w, 202, genBody)
			})
			var mu sync.Mutex
			var causes []string
			c, _ := newTestClient(t, rec.URL, WithAttemptTimeout(100*time.Millisecond), WithAttemptHook(func(a AttemptInfo) {
				mu.Lock()
				causes = append(causes, a.Cause)
				mu.Unlock()
			}))
			ctx, cancel := cc.make()
			defer cancel()
			start := time.Now()
			g, err := c.Generations.Create(ctx, testParams)
			require.NoError(t, err)
			assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "each stalled attempt ran its 100 ms")
			assert.Equal(t, 3, g.Meta.Attempts)
			seen := rec.Seen()
			require.Len(t, seen, 3)
			assert.Equal(t, seen[0].Key, seen[1].Key)
			assert.Equal(t, seen[0].Key, seen[2].Key)
			mu.Lock()
			assert.Equal(t, []string{"timeout", "timeout", "ok"}, causes)
			mu.Unlock()
			assert.Zero(t, watched(&c.watch), "nothing left under watch")
		})
	}
}

// stall answers 202 and the start of a body, then nothing more until the
// client gives up or release is closed.
func stall(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(202)
	_, _ = w.Write([]byte(`{"id":"gen_`))
	w.(http.Flusher).Flush()
	select {
	case <-r.Context().Done():
	case <-release:
	}
}

// Attempts that start within one slice of the timeout share a window's
// context, which ends between d and d + d/16 after each one's start.
func TestAttemptWindows(t *testing.T) {
	var w attemptWindows
	const d = 160 * time.Millisecond
	start := time.Now()
	a := w.join(d)
	b := w.join(d)
	require.True(t, a == b, "two attempts at once share a window")
	dl, ok := a.Deadline()
	require.True(t, ok)
	assert.False(t, dl.Before(start.Add(d)), "no attempt is cut before d")
	assert.False(t, dl.After(time.Now().Add(d+d/windowSlices)), "nor kept past d + d/16")
	other := w.join(2 * d)
	assert.True(t, a != other, "another timeout, another window")
	time.Sleep(d/windowSlices + time.Millisecond)
	c := w.join(d)
	assert.True(t, a != c, "a window closes after its slice")
	dl, _ = c.Deadline()
	assert.False(t, dl.Before(time.Now().Add(d-time.Millisecond)))
	<-a.Done()
	assert.ErrorIs(t, context.Cause(a), context.DeadlineExceeded)
	assert.NoError(t, c.Err(), "the later window is still open")

	// Many timeouts in use: closed windows are forgotten.
	for i := range 40 {
		w.join(time.Duration(i+1) * time.Millisecond)
	}
	time.Sleep(3 * time.Millisecond)
	w.join(time.Hour)
	w.mu.Lock()
	assert.Less(t, len(w.open), 40)
	w.mu.Unlock()
}

// windowCtx carries the caller's values, and net/http's request context
// registers with the window's: canceling the window ends the attempt.
func TestWindowCtx(t *testing.T) {
	type key struct{}
	caller := context.WithValue(context.Background(), key{}, "v")
	win, cancel := context.WithCancelCause(context.Background())
	c := &windowCtx{win: win, caller: caller}
	assert.Equal(t, "v", c.Value(key{}))
	child, stop := context.WithCancel(c)
	defer stop()
	cancel(context.DeadlineExceeded)
	select {
	case <-child.Done():
	case <-time.After(time.Second):
		t.Fatal("the child did not end with the window")
	}
	assert.ErrorIs(t, context.Cause(child), context.DeadlineExceeded)
}

// A caller's deadline that comes first bounds the attempt by itself: no
// watch, and the call ends as the caller's context says.
func TestAttemptTimeoutCallerDeadlineFirst(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	c, _ := newTestClient(t, rec.URL, WithAttemptTimeout(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Millisecond)
	defer cancel()
	_, err := c.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	assert.Equal(t, "context done", re.Reason)
	assert.Nil(t, c.watch.timer, "the attempt was never watched")
}

// Canceling the caller's context ends a watched attempt at once and leaves
// nothing under watch.
func TestAttemptTimeoutCallerCancel(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	c, _ := newTestClient(t, rec.URL, WithAttemptTimeout(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.Generations.Create(ctx, testParams)
	require.ErrorIs(t, err, context.Canceled)
	assert.Len(t, rec.Seen(), 1)
	assert.Zero(t, watched(&c.watch))
}

// Calls with different attempt timeouts in flight together each get their
// own bound.
func TestAttemptTimeoutManyInFlight(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var mu sync.Mutex
	firsts := map[string]bool{}
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		first := !firsts[key]
		firsts[key] = true
		mu.Unlock()
		if first { // every call's first attempt is a black hole
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		writeJSON(w, 202, genBody)
	})
	c, _ := newTestClient(t, rec.URL)
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := time.Duration(100+25*(i%4)) * time.Millisecond
			ctx, cancel := callerContexts[i%2].make()
			defer cancel()
			_, errs[i] = c.Generations.Create(ctx, testParams, WithAttemptTimeout(d))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "call %d", i)
	}
	assert.Len(t, rec.Seen(), 32, "two attempts per call")
	assert.Zero(t, watched(&c.watch))
}

// Over HTTP/2 (one connection, streams multiplexed) a stalled attempt is
// cut too, under both kinds of caller context, and the calls that share its
// connection go on.
func TestAttemptTimeoutHTTP2(t *testing.T) {
	for _, cc := range callerContexts {
		t.Run(cc.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			var mu sync.Mutex
			var protos []string
			stalled := map[string]bool{}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				key := r.Header.Get("Idempotency-Key")
				mu.Lock()
				protos = append(protos, r.Proto)
				first := !stalled[key]
				stalled[key] = true
				mu.Unlock()
				if first && r.Header.Get("X-Stall") != "" {
					stall(w, r, release)
					return
				}
				writeJSON(w, 202, genBody)
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			c, err := NewClient(testAPIKey, WithBaseURL(srv.URL), WithHTTPClient(srv.Client()),
				WithAttemptTimeout(250*time.Millisecond), WithBackoff(time.Millisecond, 2, 2*time.Millisecond))
			require.NoError(t, err)
			defer c.Close()
			ctx, cancel := cc.make()
			defer cancel()
			var wg sync.WaitGroup
			errs := make([]error, 8)
			attempts := make([]int, 8)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var opts []Option
					if i%2 == 0 {
						opts = append(opts, WithHeader("X-Stall", "1"))
					}
					g, err := c.Generations.Create(ctx, testParams, opts...)
					errs[i] = err
					if err == nil {
						attempts[i] = g.Meta.Attempts
					}
				}()
			}
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "call %d", i)
				want := 1
				if i%2 == 0 {
					want = 2 // the stalled attempt was cut and retried
				}
				assert.Equal(t, want, attempts[i], "call %d", i)
			}
			mu.Lock()
			assert.Contains(t, protos, "HTTP/2.0")
			mu.Unlock()
			assert.Zero(t, watched(&c.watch))
		})
	}
}
