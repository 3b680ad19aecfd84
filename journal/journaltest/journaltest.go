// Package journaltest holds the conformance suite that every
// safegen.KeyJournal implementation must pass, whatever stores it: a file, a
// map, a database.
package journaltest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// namedCase is one test of a suite, run on a fresh journal.
type namedCase[J any] struct {
	name string
	run  func(t *testing.T, j J)
}

// runCases runs each case as a subtest, on a journal open makes for it.
func runCases[J any](t *testing.T, open func(t *testing.T) J, cases []namedCase[J]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// Run runs the conformance suite against the journals open returns. Each
// subtest calls open once and expects a fresh, empty journal; open should
// register its own cleanup (t.Cleanup) to close it. Implementations report
// conflicts with errors wrapping safegen.ErrKeyInUse and safegen.ErrIntentNotFound.
// When the journals also implement safegen.JobJournal, the subtests under
// "Jobs" check Advance and Unfinished too (see RunJobs); otherwise "Jobs"
// is skipped, saying why. Likewise "Spend" checks Reserve, Settle and Spend
// of a safegen.SpendJournal (see RunSpend); RunSpendReopen, which needs to
// reopen a store, is the caller's to run.
func Run(t *testing.T, open func(t *testing.T) safegen.KeyJournal) {
	t.Helper()
	runCases(t, open, []namedCase[safegen.KeyJournal]{
		{"BeginRecords", testBeginRecords},
		{"BeginReturnsExistingByID", testBeginReturnsExisting},
		{"BeginKeyInUse", testBeginKeyInUse},
		{"BeginInvalid", testBeginInvalid},
		{"Complete", testComplete},
		{"CompleteUnknown", testCompleteUnknown},
		{"CompleteTwiceKeepsFirst", testCompleteTwice},
		{"PendingOrder", testPendingOrder},
		{"ConcurrentBeginSameID", testConcurrentSameID},
		{"ConcurrentMixed", testConcurrentMixed},
		{"BodiesPreserved", testBodies},
		{"OutcomePreserved", testOutcome},
		{"NoAliasing", testNoAliasing},
	})
	t.Run("Jobs", func(t *testing.T) {
		if j, ok := open(t).(safegen.JobJournal); !ok {
			t.Skipf("%T does not implement safegen.JobJournal", j)
		}
		RunJobs(t, func(t *testing.T) safegen.JobJournal { return open(t).(safegen.JobJournal) })
	})
	t.Run("Spend", func(t *testing.T) {
		if j, ok := open(t).(safegen.SpendJournal); !ok {
			t.Skipf("%T does not implement safegen.SpendJournal", j)
		}
		RunSpend(t, func(t *testing.T) safegen.SpendJournal { return open(t).(safegen.SpendJournal) })
	})
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func intent(id, key string, body []byte) safegen.Intent {
	return safegen.Intent{ID: id, Key: key, Method: "POST", Path: "/v1/generations", Body: body, CreatedAt: t0}
}

// requireSame checks that got describes want: same request bytes (an empty
// body and a nil one are the same bytes), same time, same outcome.
func requireSame(t *testing.T, want, got safegen.Intent) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.Key, got.Key)
	require.Equal(t, want.Method, got.Method)
	require.Equal(t, want.Path, got.Path)
	require.True(t, bytes.Equal(want.Body, got.Body), "body: want %q, got %q", want.Body, got.Body)
	require.True(t, want.CreatedAt.Equal(got.CreatedAt), "created at: want %v, got %v", want.CreatedAt, got.CreatedAt)
	if want.Outcome == nil {
		require.Nil(t, got.Outcome, "outcome")
		return
	}
	require.NotNil(t, got.Outcome, "outcome")
	w, g := *want.Outcome, *got.Outcome
	require.Equal(t, w.StatusCode, g.StatusCode)
	require.True(t, bytes.Equal(w.Body, g.Body), "outcome body: want %q, got %q", w.Body, g.Body)
	require.Equal(t, w.RequestID, g.RequestID)
	require.Equal(t, w.Expired, g.Expired)
	require.True(t, w.CompletedAt.Equal(g.CompletedAt), "completed at: want %v, got %v", w.CompletedAt, g.CompletedAt)
}

func testBeginRecords(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	in := intent("order-1", "key-1", []byte(`{"prompt":"a cat"}`))
	got, err := j.Begin(ctx, in)
	require.NoError(t, err)
	requireSame(t, in, got)
	require.True(t, got.Pending())
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, 1)
	requireSame(t, in, p[0])
}

func testBeginReturnsExisting(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	first := intent("order-1", "key-1", []byte(`{"prompt":"a cat"}`))
	_, err := j.Begin(ctx, first)
	require.NoError(t, err)
	for _, again := range []safegen.Intent{
		first,
		intent("order-1", "key-2", []byte(`{"prompt":"a dog"}`)),
		{ID: "order-1", Key: "key-3", Method: "PUT", Path: "/x", CreatedAt: t0.Add(time.Hour)},
	} {
		got, err := j.Begin(ctx, again)
		require.NoError(t, err)
		requireSame(t, first, got)
	}
	// Completed: the recorded outcome comes back with it.
	out := safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_1"}`), RequestID: "req_1", CompletedAt: t0.Add(time.Minute)}
	require.NoError(t, j.Complete(ctx, "key-1", out))
	got, err := j.Begin(ctx, intent("order-1", "key-9", nil))
	require.NoError(t, err)
	want := first
	want.Outcome = &out
	requireSame(t, want, got)
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
}

func testBeginKeyInUse(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	_, err := j.Begin(ctx, intent("order-1", "key-1", []byte("a")))
	require.NoError(t, err)
	_, err = j.Begin(ctx, intent("order-2", "key-1", []byte("a")))
	require.ErrorIs(t, err, safegen.ErrKeyInUse)
	require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse, "a key under two intent ids is a key reuse")
	// Still in use once completed.
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 200, CompletedAt: t0}))
	_, err = j.Begin(ctx, intent("order-3", "key-1", []byte("a")))
	require.ErrorIs(t, err, safegen.ErrKeyInUse)
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p, "a refused Begin records nothing")
}

func testBeginInvalid(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	valid := intent("order-1", "key-1", nil)
	for name, mutate := range map[string]func(*safegen.Intent){
		"no id":      func(in *safegen.Intent) { in.ID = "" },
		"no key":     func(in *safegen.Intent) { in.Key = "" },
		"no method":  func(in *safegen.Intent) { in.Method = "" },
		"no path":    func(in *safegen.Intent) { in.Path = "" },
		"no created": func(in *safegen.Intent) { in.CreatedAt = time.Time{} },
	} {
		in := valid
		mutate(&in)
		_, err := j.Begin(ctx, in)
		require.Error(t, err, name)
	}
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
}

func testComplete(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	a, b := intent("a", "key-a", []byte("A")), intent("b", "key-b", []byte("B"))
	for _, in := range []safegen.Intent{a, b} {
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
	}
	require.NoError(t, j.Complete(ctx, "key-a", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, 1)
	requireSame(t, b, p[0])
	got, err := j.Begin(ctx, a)
	require.NoError(t, err)
	require.False(t, got.Pending())
	require.Equal(t, 201, got.Outcome.StatusCode)
}

func testCompleteUnknown(t *testing.T, j safegen.KeyJournal) {
	err := j.Complete(context.Background(), "no-such-key", safegen.Outcome{StatusCode: 200, CompletedAt: t0})
	require.ErrorIs(t, err, safegen.ErrIntentNotFound)
}

func testCompleteTwice(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	in := intent("a", "key-a", nil)
	_, err := j.Begin(ctx, in)
	require.NoError(t, err)
	first := safegen.Outcome{StatusCode: 201, Body: []byte("first"), CompletedAt: t0}
	require.NoError(t, j.Complete(ctx, "key-a", first))
	require.NoError(t, j.Complete(ctx, "key-a", safegen.Outcome{StatusCode: 400, Body: []byte("second"), CompletedAt: t0}))
	got, err := j.Begin(ctx, in)
	require.NoError(t, err)
	in.Outcome = &first
	requireSame(t, in, got)
}

func testPendingOrder(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	at := func(id string, d time.Duration) safegen.Intent {
		in := intent(id, "key-"+id, []byte(id))
		in.CreatedAt = t0.Add(d)
		return in
	}
	// Begun in this order; oldest first, ties in order of Begin.
	begun := []safegen.Intent{at("late", 2*time.Second), at("tie1", time.Second), at("done", 0), at("tie2", time.Second), at("early", 0)}
	for _, in := range begun {
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
	}
	require.NoError(t, j.Complete(ctx, "key-done", safegen.Outcome{StatusCode: 200, CompletedAt: t0}))
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	var ids []string
	for _, in := range p {
		ids = append(ids, in.ID)
	}
	require.Equal(t, []string{"early", "tie1", "tie2", "late"}, ids)
}

func testConcurrentSameID(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	const n = 50
	got := make([]safegen.Intent, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Each caller brings its own fresh key, as a client does.
			got[i], errs[i] = j.Begin(ctx, intent("order-17", fmt.Sprintf("key-%d", i), []byte("same bytes")))
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		requireSame(t, got[0], got[i])
	}
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, 1)
	requireSame(t, got[0], p[0])
}

func testConcurrentMixed(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("key-%d", i)
			if _, err := j.Begin(ctx, intent(fmt.Sprintf("id-%d", i), key, []byte(key))); err != nil {
				errs <- err
				return
			}
			if i%2 == 0 {
				errs <- j.Complete(ctx, key, safegen.Outcome{StatusCode: 200, CompletedAt: t0})
			}
			_, err := j.Pending(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, n/2)
	for _, in := range p {
		require.Equal(t, in.Key, string(in.Body))
	}
}

func binary() []byte {
	b := make([]byte, 0, 512)
	for i := range 512 {
		b = append(b, byte(i*7+3))
	}
	return append(b, 0xff, 0xfe, 0x00, '"', '\\', '\n')
}

func testBodies(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	large := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for name, body := range map[string][]byte{
		"nil":     nil,
		"empty":   {},
		"json":    []byte(`{"model":"veo-3-1-fast","prompt":"a cat, \"quoted\" é 日本"}`),
		"binary":  binary(),
		"invalid": {0xc3, 0x28, 0xa0, 0xa1},
		"large":   large,
	} {
		in := intent("id-"+name, "key-"+name, body)
		got, err := j.Begin(ctx, in)
		require.NoError(t, err, name)
		requireSame(t, in, got)
		again, err := j.Begin(ctx, intent("id-"+name, "other", []byte("other")))
		require.NoError(t, err, name)
		requireSame(t, in, again)
	}
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, 6)
}

func testOutcome(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	for name, out := range map[string]safegen.Outcome{
		"success": {StatusCode: 201, Body: []byte(`{"id":"gen_1","status":"queued"}`), RequestID: "req_1", CompletedAt: t0.Add(time.Second)},
		"binary":  {StatusCode: 200, Body: binary(), RequestID: "req_2", CompletedAt: t0.Add(1500 * time.Millisecond)},
		"client":  {StatusCode: 422, Body: []byte("bad"), CompletedAt: t0.Add(time.Minute)},
		"expired": {Expired: true, CompletedAt: t0.Add(25 * time.Hour)},
	} {
		in := intent("id-"+name, "key-"+name, []byte(name))
		_, err := j.Begin(ctx, in)
		require.NoError(t, err, name)
		require.NoError(t, j.Complete(ctx, in.Key, out), name)
		got, err := j.Begin(ctx, in)
		require.NoError(t, err, name)
		in.Outcome = &out
		requireSame(t, in, got)
	}
}

func testNoAliasing(t *testing.T, j safegen.KeyJournal) {
	ctx := context.Background()
	body := []byte("original")
	in := intent("a", "key-a", body)
	got, err := j.Begin(ctx, in)
	require.NoError(t, err)
	body[0] = 'X'     // the caller reuses its buffer
	got.Body[1] = 'Y' // or scribbles on what it got
	out := safegen.Outcome{StatusCode: 200, Body: []byte("answer"), CompletedAt: t0}
	require.NoError(t, j.Complete(ctx, "key-a", out))
	out.Body[0] = 'Z'
	again, err := j.Begin(ctx, intent("a", "key-a", nil))
	require.NoError(t, err)
	assert.Equal(t, "original", string(again.Body))
	require.NotNil(t, again.Outcome)
	assert.Equal(t, "answer", string(again.Outcome.Body))
}

// BenchBegin measures durable Begins of new intents from the given number of
// concurrent callers; ns/op is wall time per Begin, so callers sharing
// commits show as a lower ns/op. body is each intent's request body.
func BenchBegin(b *testing.B, j safegen.KeyJournal, callers int, body []byte) {
	ctx := context.Background()
	created := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				key := fmt.Sprintf("key-%d", n)
				in := safegen.Intent{ID: key, Key: key, Method: "POST", Path: "/v1/generations", Body: body, CreatedAt: created}
				if _, err := j.Begin(ctx, in); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}
