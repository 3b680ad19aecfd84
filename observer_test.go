package safegen_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// recObserver records every event, and gives each call and attempt a
// context naming it, as a tracer would with spans.
type recObserver struct {
	safegen.NopObserver
	mu       sync.Mutex
	events   []string // "call-start op", "attempt-start op n", …, in order
	calls    []recCall
	attempts []recAttempt
	journal  []safegen.JournalEvent
	budget   []safegen.BudgetEvent
	open     map[string]bool // spans started and not yet ended
	next     int
}

type spanKey struct{}

type recCall struct {
	id, parent string
	start      safegen.CallInfo
	end        *safegen.CallResult
}

type recAttempt struct {
	id, parent string
	req        safegen.AttemptRequest
	info       *safegen.AttemptInfo
}

func newRecObserver() *recObserver { return &recObserver{open: map[string]bool{}} }

func spanOf(ctx context.Context) string { s, _ := ctx.Value(spanKey{}).(string); return s }

func (o *recObserver) span(ctx context.Context, kind string) (context.Context, string, string) {
	o.next++
	id := kind + strconv.Itoa(o.next)
	o.open[id] = true
	return context.WithValue(ctx, spanKey{}, id), id, spanOf(ctx)
}

func (o *recObserver) CallStart(ctx context.Context, c safegen.CallInfo) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	ctx, id, parent := o.span(ctx, "call")
	o.calls = append(o.calls, recCall{id: id, parent: parent, start: c})
	o.events = append(o.events, "call-start "+c.Operation)
	return ctx
}

// end closes ctx's span, which must be an open one of kind; o.mu is held.
func (o *recObserver) end(ctx context.Context, kind string) string {
	id := spanOf(ctx)
	if !o.open[id] || !strings.HasPrefix(id, kind) {
		panic("end of " + id + ", not an open " + kind)
	}
	delete(o.open, id)
	return id
}

func (o *recObserver) CallEnd(ctx context.Context, r safegen.CallResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := o.end(ctx, "call")
	for i := range o.calls {
		if o.calls[i].id == id {
			o.calls[i].end = &r
		}
	}
	o.events = append(o.events, "call-end "+r.Operation)
}

func (o *recObserver) AttemptStart(ctx context.Context, r safegen.AttemptRequest) context.Context {
	o.mu.Lock()
	defer o.mu.Unlock()
	ctx, id, parent := o.span(ctx, "attempt")
	r.Header.Set("X-Test-Span", id)
	o.attempts = append(o.attempts, recAttempt{id: id, parent: parent, req: r})
	o.events = append(o.events, fmt.Sprintf("attempt-start %s %d", r.Operation, r.Attempt))
	return ctx
}

func (o *recObserver) AttemptEnd(ctx context.Context, info safegen.AttemptInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	id := o.end(ctx, "attempt")
	for i := range o.attempts {
		if o.attempts[i].id == id {
			o.attempts[i].info = &info
		}
	}
	o.events = append(o.events, fmt.Sprintf("attempt-end %s %d", info.Operation, info.Attempt))
}

func (o *recObserver) JournalStep(_ context.Context, ev safegen.JournalEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.journal = append(o.journal, ev)
}

func (o *recObserver) BudgetChange(_ context.Context, ev safegen.BudgetEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.budget = append(o.budget, ev)
}

// callsOf returns the recorded calls of an operation.
func (o *recObserver) callsOf(op string) []recCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []recCall
	for _, c := range o.calls {
		if c.start.Operation == op {
			out = append(out, c)
		}
	}
	return out
}

// attemptsUnder returns the attempts of the call with that id.
func (o *recObserver) attemptsUnder(id string) []recAttempt {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []recAttempt
	for _, a := range o.attempts {
		if a.parent == id {
			out = append(out, a)
		}
	}
	return out
}

func TestObserverSeesCallsAndAttempts(t *testing.T) {
	srv := safegentest.NewServer(t)
	o := newRecObserver()
	var hooked []safegen.AttemptInfo
	c := newClient(t, srv, safegen.WithObserver(o), safegen.WithAttemptHook(func(i safegen.AttemptInfo) { hooked = append(hooked, i) }))
	srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: http.StatusServiceUnavailable},
		safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "0"},
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
	)
	g, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey("key-obs-1"))
	require.NoError(t, err)
	require.Equal(t, 4, g.Meta.Attempts)
	assert.True(t, g.Meta.Replayed, "the drop after commit ends in a replay")

	calls := o.callsOf(safegen.OpCreate)
	require.Len(t, calls, 1)
	call := calls[0]
	assert.Equal(t, "", call.parent)
	assert.Equal(t, safegen.CallInfo{Operation: safegen.OpCreate, Method: http.MethodPost, Path: "/v1/generations",
		IdempotencyKey: "key-obs-1"}, call.start)
	require.NotNil(t, call.end)
	assert.Equal(t, 4, call.end.Attempts)
	assert.True(t, call.end.Replayed)
	assert.Equal(t, http.StatusAccepted, call.end.StatusCode)
	assert.NoError(t, call.end.Err)
	assert.Empty(t, call.end.ErrorType)
	assert.Positive(t, call.end.Duration)

	attempts := o.attemptsUnder(call.id)
	var sent []safegentest.RecordedRequest
	for _, r := range srv.Requests() {
		if r.IdempotencyKey == "key-obs-1" {
			sent = append(sent, r)
		}
	}
	require.Len(t, attempts, len(sent), "one attempt per request the server saw")
	require.Len(t, hooked, len(sent))
	for i, a := range attempts {
		assert.Equal(t, i+1, a.req.Attempt)
		assert.Equal(t, srv.URL+"/v1/generations", a.req.URL())
		assert.Equal(t, "127.0.0.1", a.req.ServerAddress)
		assert.Equal(t, a.id, sent[i].Header.Get("X-Test-Span"), "attempt %d carries its own span's header", i+1)
		require.NotNil(t, a.info)
		assert.Equal(t, hooked[i], *a.info, "the Observer sees what the hook sees")
	}
	assert.Equal(t, []string{"503", "429", "transport", "ok"}, []string{attempts[0].info.Cause, attempts[1].info.Cause,
		attempts[2].info.Cause, attempts[3].info.Cause})
	assert.True(t, attempts[3].info.Replayed)
	assert.Equal(t, []string{
		"call-start generations.create",
		"attempt-start generations.create 1", "attempt-end generations.create 1",
		"attempt-start generations.create 2", "attempt-end generations.create 2",
		"attempt-start generations.create 3", "attempt-end generations.create 3",
		"attempt-start generations.create 4", "attempt-end generations.create 4",
		"call-end generations.create",
	}, o.events)
	assert.Empty(t, o.open, "every span ended")

	// Three retries took tokens; the success gave them back.
	var changes []int
	for _, b := range o.budget {
		changes = append(changes, b.Change)
	}
	assert.Equal(t, []int{-5, -5, -5, 15}, changes)
	assert.Equal(t, 500, o.budget[len(o.budget)-1].Tokens)
}

func TestObserverErrors(t *testing.T) {
	srv := safegentest.NewServer(t)
	o := newRecObserver()
	c := newClient(t, srv, safegen.WithObserver(o), safegen.WithMaxRetries(1))
	ctx := context.Background()

	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500}, safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500})
	_, err := c.Generations.Create(ctx, params)
	require.Error(t, err)
	_, err = c.Generations.Get(ctx, "gen_missing")
	require.ErrorIs(t, err, safegen.ErrNotFound)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Generations.Create(cctx, params)
	require.Error(t, err)

	creates := o.callsOf(safegen.OpCreate)
	require.Len(t, creates, 2)
	assert.Equal(t, "500", creates[0].end.ErrorType)
	assert.Equal(t, 2, creates[0].end.Attempts)
	assert.NotEmpty(t, creates[0].end.IdempotencyKey)
	assert.Equal(t, "canceled", creates[1].end.ErrorType)
	gets := o.callsOf(safegen.OpGet)
	require.Len(t, gets, 1)
	assert.Equal(t, "404", gets[0].end.ErrorType)
	assert.Equal(t, "/v1/generations/gen_missing", gets[0].start.Path)
	assert.Empty(t, o.open, "every span ended")
}

// TestObserverNestsAJob: a whole job is one call holding its create, its
// wait (holding the polls) and its download; the journal's steps are seen.
func TestObserverNestsAJob(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithGenerationTiming(0, 20*time.Millisecond), safegentest.WithOutputSize(10_000))
	o := newRecObserver()
	j := journal.NewMemory()
	c := newClient(t, srv, safegen.WithObserver(o), safegen.WithJournal(j), safegen.WithPollInterval(5*time.Millisecond, 10*time.Millisecond))
	path := filepath.Join(t.TempDir(), "out.mp4")
	_, err := c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("order-17"))
	require.NoError(t, err)

	runs := o.callsOf(safegen.OpRun)
	require.Len(t, runs, 1)
	run := runs[0]
	assert.Equal(t, "order-17", run.start.IntentID)
	assert.NoError(t, run.end.Err)
	assert.NotEmpty(t, run.end.IdempotencyKey, "the job is named by its create's key")
	assert.Zero(t, run.end.Attempts, "a job's attempts are its calls'")
	for _, op := range []string{safegen.OpCreate, safegen.OpWait, safegen.OpDownload} {
		cs := o.callsOf(op)
		require.Len(t, cs, 1, op)
		assert.Equal(t, run.id, cs[0].parent, "%s runs inside the job", op)
	}
	wait := o.callsOf(safegen.OpWait)[0]
	for _, g := range o.callsOf(safegen.OpGet) {
		assert.Equal(t, wait.id, g.parent, "polls run inside the wait")
	}
	dl := o.callsOf(safegen.OpDownload)[0]
	require.Len(t, o.attemptsUnder(dl.id), 1)
	assert.Equal(t, 1, dl.end.Attempts)
	assert.NotContains(t, dl.start.Path, "?", "no signature in the download's path")
	assert.NotContains(t, o.attemptsUnder(dl.id)[0].req.URL(), "?")

	var steps []string
	for _, ev := range o.journal {
		require.NoError(t, ev.Err)
		assert.Equal(t, "order-17", ev.IntentID)
		s := ev.Step
		if ev.Job != "" {
			s += " " + string(ev.Job)
		}
		if ev.New {
			s += " new"
		}
		steps = append(steps, s)
	}
	assert.Equal(t, []string{"begin new", "complete", "advance accepted", "advance terminal", "advance downloaded"}, steps)
	assert.Empty(t, o.open, "every span ended")

	// The same intent again: found in the journal, nothing sent.
	_, err = c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("order-17"))
	require.NoError(t, err)
	assert.False(t, o.journal[len(o.journal)-1].New)
	creates := o.callsOf(safegen.OpCreate)
	require.Len(t, creates, 2)
	assert.True(t, creates[1].end.FromJournal)
	assert.Equal(t, 0, creates[1].end.Attempts)
}

func TestObserverSeesNoSecret(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithGenerationTiming(0, 0))
	o := newRecObserver()
	secretPrompt := "a fox; prompt-marker-7d1e"
	c := newClient(t, srv, safegen.WithObserver(o))
	p := *params
	p.Prompt = secretPrompt
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 401})
	_, _ = c.Generations.Create(context.Background(), &p)
	_, err := c.Generations.Create(context.Background(), &p)
	require.NoError(t, err)
	dump := fmt.Sprintf("%+v %+v %+v", o.calls, o.attempts, o.journal)
	for _, a := range o.attempts {
		dump += fmt.Sprintf(" %+v %+v", *a.info, a.req)
		assert.Empty(t, a.req.Header.Get("Authorization"), "the carrier never shows a credential")
	}
	for _, cl := range o.calls {
		dump += fmt.Sprintf(" %+v", *cl.end)
	}
	assert.NotContains(t, dump, srv.APIKey)
	assert.NotContains(t, dump, srv.WebhookSecret)
	assert.NotContains(t, dump, "prompt-marker-7d1e")
}

func TestHeaderCarrierRefusesClientHeaders(t *testing.T) {
	srv := safegentest.NewServer(t)
	o := &headerObserver{}
	c := newClient(t, srv, safegen.WithObserver(o))
	g, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey("key-carrier"))
	require.NoError(t, err)
	reqs := billableAttempts(srv)
	require.Len(t, reqs, 1)
	h := reqs[0].Header
	assert.Equal(t, "key-carrier", h.Get("Idempotency-Key"))
	assert.Equal(t, "Bearer "+srv.APIKey, h.Get("Authorization"))
	assert.Equal(t, "1", h.Get(safegen.AttemptHeader))
	assert.Equal(t, "00-trace", h.Get("Traceparent"))
	assert.Equal(t, "key-carrier", g.Meta.IdempotencyKey)
	assert.Equal(t, "", o.sawAuth)
	assert.Equal(t, []string{"Traceparent"}, o.keys, "the carrier holds only what was set through it")
}

type headerObserver struct {
	safegen.NopObserver
	sawAuth string
	keys    []string
}

func (o *headerObserver) AttemptStart(ctx context.Context, r safegen.AttemptRequest) context.Context {
	for _, k := range []string{"Idempotency-Key", "Authorization", safegen.AttemptHeader, "X-Api-Key", "Content-Length"} {
		r.Header.Set(k, "evil")
	}
	r.Header.Set("traceparent", "00-trace")
	o.sawAuth = r.Header.Get("authorization")
	o.keys = r.Header.Keys()
	return ctx
}

// TestObserverConcurrent runs calls from many goroutines through one
// Observer, for the race detector.
func TestObserverConcurrent(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0),
		safegentest.WithFaultRates(safegentest.FaultRates{Status503: 0.2, DropAfterCommit: 0.1, Reset: 0.1}, 7))
	o := newRecObserver()
	c := newClient(t, srv, safegen.WithObserver(o), safegen.WithMaxRetries(6))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey("key-conc-"+strconv.Itoa(i)))
		}()
	}
	wg.Wait()
	assert.Empty(t, o.open, "every span ended")
	assert.Len(t, o.callsOf(safegen.OpCreate), 8)
	perKey := map[string]int{}
	for _, r := range srv.Requests() {
		perKey[r.IdempotencyKey]++
	}
	for _, cl := range o.callsOf(safegen.OpCreate) {
		assert.Equal(t, perKey[cl.end.IdempotencyKey], len(o.attemptsUnder(cl.id)), cl.end.IdempotencyKey)
		assert.Equal(t, perKey[cl.end.IdempotencyKey], cl.end.Attempts)
	}
}
