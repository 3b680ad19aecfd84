package safegen

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/safegentest"
)

// blockingClock sleeps until its context is done, however long the wait
// asked: a poll interval of 10 s never ends by itself. It records the waits.
type blockingClock struct {
	mu       sync.Mutex
	sleeps   []time.Duration
	sleeping chan struct{} // a receive per Sleep that started
}

func newBlockingClock() *blockingClock { return &blockingClock{sleeping: make(chan struct{}, 100)} }

func (b *blockingClock) Now() time.Time { return time.Now() }

func (b *blockingClock) Sleep(ctx context.Context, d time.Duration) error {
	b.mu.Lock()
	b.sleeps = append(b.sleeps, d)
	b.mu.Unlock()
	b.sleeping <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// linkedClock is a fakeClock whose sleeps also move a fake server's clock,
// so a Wait's polls see the generation progress without real time passing.
type linkedClock struct {
	fakeClock
	srv *safegentest.ManualClock
}

func (l *linkedClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := l.fakeClock.Sleep(ctx, d); err != nil {
		return err
	}
	l.srv.Advance(d)
	return nil
}

// gets counts the GETs of generation id the server saw.
func gets(srv *safegentest.Server, id string) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == http.MethodGet && r.Path == "/v1/generations/"+id {
			n++
		}
	}
	return n
}

func terminalEvent(id string, status GenerationStatus) *Event {
	return &Event{ID: "evt_" + id, Type: "generation." + string(status), Data: Generation{
		ID: id, Status: status, Cost: 12,
		Output: &GenerationOutput{URL: "https://cdn.example.com/" + id, Size: 10},
		Meta:   ResponseMeta{Attempts: 9},
	}}
}

// TestNotifyWakesWait: a Wait sleeping out a 10 s poll interval returns
// within 100 ms of Notify, with the event's generation, and polls no more.
func TestNotifyWakesWait(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	clk := newBlockingClock()
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithClock(clk), WithPollInterval(10*time.Second, 10*time.Second))
	require.NoError(t, err)
	defer c.Close()
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)

	type result struct {
		g   *Generation
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		g, err := c.Generations.Wait(context.Background(), g.ID)
		done <- result{g, err, time.Now()}
	}()
	<-clk.sleeping // polled once, now sleeping
	ev := terminalEvent(g.ID, StatusSucceeded)
	sent := time.Now()
	c.Generations.Notify(ev)
	select {
	case r := <-done:
		require.NoError(t, r.err)
		took := r.at.Sub(sent)
		t.Logf("Wait returned %v after Notify", took)
		assert.Less(t, took, 100*time.Millisecond)
		assert.Equal(t, StatusSucceeded, r.g.Status)
		assert.Equal(t, ev.Data.Output.URL, r.g.Output.URL)
		assert.Equal(t, ResponseMeta{}, r.g.Meta, "no call returned it")
		r.g.Output.URL = "changed"
		assert.NotEqual(t, "changed", ev.Data.Output.URL, "the caller gets its own copy")
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still sleeping 5 s after Notify")
	}
	assert.Equal(t, 1, gets(srv, g.ID), "no poll after the event")
	assert.GreaterOrEqual(t, clk.sleeps[0], 10*time.Second, "it was sleeping a 10 s interval or more")
	c.waiters.mu.Lock()
	assert.Empty(t, c.waiters.byID, "the waiter is gone")
	c.waiters.mu.Unlock()
}

// TestNotifyBeforeWait: a terminal event that came first is used without a poll.
func TestNotifyBeforeWait(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL))
	require.NoError(t, err)
	defer c.Close()
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	c.Generations.Notify(terminalEvent(g.ID, StatusFailed))
	got, err := c.Generations.Wait(context.Background(), g.ID)
	require.NoError(t, err)
	assert.Equal(t, StatusFailed, got.Status)
	assert.Equal(t, 0, gets(srv, g.ID))
}

// TestNotifyNonTerminalRepolls: an event that is not terminal makes Wait
// poll again at once, and the poll decides.
func TestNotifyNonTerminalRepolls(t *testing.T) {
	srvClk := safegentest.NewManualClock(time.Now())
	srv := safegentest.NewServer(t, safegentest.WithClock(srvClk), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(time.Hour, time.Hour))
	clk := newBlockingClock()
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithClock(clk), WithPollInterval(10*time.Second, 10*time.Second))
	require.NoError(t, err)
	defer c.Close()
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	done := make(chan *Generation, 1)
	go func() {
		g, err := c.Generations.Wait(context.Background(), g.ID)
		assert.NoError(t, err)
		done <- g
	}()
	<-clk.sleeping
	c.Generations.Notify(&Event{ID: "evt_p", Type: "generation.processing", Data: Generation{ID: g.ID, Status: StatusProcessing}})
	<-clk.sleeping // polled again, still not terminal, sleeping again
	assert.Equal(t, 2, gets(srv, g.ID))
	srvClk.Advance(3 * time.Hour)
	c.Generations.Notify(&Event{ID: "evt_q", Type: "generation.processing", Data: Generation{ID: g.ID, Status: StatusProcessing}})
	select {
	case got := <-done:
		assert.Equal(t, StatusSucceeded, got.Status, "the poll's answer")
		assert.Equal(t, 3, gets(srv, g.ID))
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not re-poll")
	}
}

func TestNotifyIgnoresNothingEvents(t *testing.T) {
	c, _ := newTestClient(t, "http://127.0.0.1:1")
	c.Generations.Notify(nil)
	c.Generations.Notify(&Event{ID: "evt_1"})
	var nilSvc *GenerationsService
	nilSvc.Notify(terminalEvent("gen_1", StatusSucceeded))
	assert.Empty(t, c.waiters.recent)
	// A status missing from the data is taken from the type.
	c.Generations.Notify(&Event{ID: "evt_2", Type: "generation.canceled", Data: Generation{ID: "gen_2"}})
	g := c.waiters.terminal("gen_2")
	require.NotNil(t, g)
	assert.Equal(t, StatusCanceled, g.Status)
}

// TestNotifyCacheBounded: only the last recentEvents terminal generations
// are kept.
func TestNotifyCacheBounded(t *testing.T) {
	c, _ := newTestClient(t, "http://127.0.0.1:1")
	for i := range recentEvents + 44 {
		c.Generations.Notify(terminalEvent(fmt.Sprintf("gen_%d", i), StatusSucceeded))
	}
	c.Generations.Notify(terminalEvent("gen_299", StatusSucceeded)) // again: no second slot
	assert.Len(t, c.waiters.recent, recentEvents)
	assert.Nil(t, c.waiters.terminal("gen_0"), "the oldest went first")
	assert.Nil(t, c.waiters.terminal("gen_43"))
	assert.NotNil(t, c.waiters.terminal("gen_44"))
	assert.NotNil(t, c.waiters.terminal("gen_299"))
}

// TestNotifyConcurrent: many Waits and Notifies at once, under -race; every
// Wait ends with its own generation and the registry empties.
func TestNotifyConcurrent(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	clk := newBlockingClock()
	clk.sleeping = make(chan struct{}, 10_000)
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithClock(clk), WithPollInterval(10*time.Second, 10*time.Second))
	require.NoError(t, err)
	defer c.Close()
	const n = 30
	ids := make([]string, n)
	for i := range ids {
		g, err := c.Generations.Create(context.Background(), &GenerationCreateParams{Model: "img-2", Prompt: fmt.Sprint("p", i)})
		require.NoError(t, err)
		ids[i] = g.ID
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		for range 2 { // two Waits per generation
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := c.Generations.Wait(context.Background(), id)
				if assert.NoError(t, err) {
					assert.Equal(t, id, g.ID)
					assert.Equal(t, StatusSucceeded, g.Status)
				}
			}()
		}
	}
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Generations.Notify(terminalEvent(id, StatusSucceeded))
		}()
	}
	wg.Wait()
	c.waiters.mu.Lock()
	defer c.waiters.mu.Unlock()
	assert.Empty(t, c.waiters.byID)
}

func TestWaitContextEndsSleep(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	clk := newBlockingClock()
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithClock(clk))
	require.NoError(t, err)
	defer c.Close()
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Generations.Wait(ctx, g.ID)
		done <- err
	}()
	<-clk.sleeping
	cancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "last status queued")
	c.waiters.mu.Lock()
	assert.Empty(t, c.waiters.byID)
	c.waiters.mu.Unlock()
}

// TestWaitPolling: the waits between polls follow WithPollInterval with
// jitter, never shorter than the server's hint, and a hint is bounded by
// WithMaxRetryAfter.
func TestWaitPolling(t *testing.T) {
	tests := []struct {
		name  string
		hint  string // Retry-After on each running answer; "" for none
		opts  []Option
		check func(t *testing.T, sleeps []time.Duration)
	}{
		{"no hint: interval with jitter, growing ×1.5", "", []Option{WithPollInterval(time.Second, 4*time.Second)},
			func(t *testing.T, sleeps []time.Duration) {
				interval := time.Second
				for i, s := range sleeps {
					assert.LessOrEqual(t, s, interval, "poll %d", i)
					assert.GreaterOrEqual(t, s, interval*4/5, "poll %d", i)
					interval = min(4*time.Second, time.Duration(float64(interval)*1.5))
				}
			}},
		{"hint longer than the interval", "7", []Option{WithPollInterval(time.Second, 4*time.Second)},
			func(t *testing.T, sleeps []time.Duration) {
				for _, s := range sleeps {
					assert.Equal(t, 7*time.Second, s)
				}
			}},
		{"hint shorter than the interval", "1", []Option{WithPollInterval(5*time.Second, 5*time.Second)},
			func(t *testing.T, sleeps []time.Duration) {
				for _, s := range sleeps {
					assert.GreaterOrEqual(t, s, 4*time.Second)
				}
			}},
		{"a huge hint is bounded", "3600", []Option{WithPollInterval(time.Second, time.Second), WithMaxRetryAfter(20 * time.Second)},
			func(t *testing.T, sleeps []time.Duration) {
				for _, s := range sleeps {
					assert.Equal(t, 20*time.Second, s)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n >= 6 {
					writeJSON(w, 200, strings.Replace(genBody, `"queued"`, `"succeeded"`, 1))
					return
				}
				if tt.hint != "" {
					w.Header().Set("Retry-After", tt.hint)
				}
				writeJSON(w, 200, genBody)
			})
			c, clk := newTestClient(t, rec.URL, tt.opts...)
			g, err := c.Generations.Wait(context.Background(), "gen_1")
			require.NoError(t, err)
			assert.Equal(t, StatusSucceeded, g.Status)
			sleeps := clk.Sleeps()
			require.Len(t, sleeps, 5)
			assert.Len(t, rec.Seen(), 6)
			tt.check(t, sleeps)
		})
	}
}

// TestWaitHintFromSafegentest: against the fake server, Wait's sleeps
// follow its Retry-After and the generation ends on the server's clock.
func TestWaitHintFromSafegentest(t *testing.T) {
	srvClk := safegentest.NewManualClock(time.Now())
	srv := safegentest.NewServer(t, safegentest.WithClock(srvClk), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(20*time.Second, 30*time.Second))
	clk := &linkedClock{fakeClock: fakeClock{now: time.Now()}, srv: srvClk}
	c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithClock(clk), WithPollInterval(time.Second, time.Second))
	require.NoError(t, err)
	defer c.Close()
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	got, err := c.Generations.Wait(context.Background(), g.ID)
	require.NoError(t, err)
	assert.Equal(t, StatusSucceeded, got.Status)
	assert.Equal(t, []time.Duration{20 * time.Second, 30 * time.Second}, clk.Sleeps(), "queued 20 s, then processing 30 s")
	assert.Equal(t, 3, gets(srv, g.ID), "three polls, none wasted")
}

func TestJitter(t *testing.T) {
	for range 1000 {
		j := jitter(time.Second)
		require.GreaterOrEqual(t, j, 800*time.Millisecond)
		require.LessOrEqual(t, j, time.Second)
	}
	assert.Equal(t, time.Duration(3), jitter(3))
	assert.Equal(t, time.Duration(0), jitter(0))
}
