package safegen_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// spyJournal wraps a journal and checks, at each Begin, that the server has
// not yet seen the intent's key.
type spyJournal struct {
	safegen.KeyJournal
	srv      *safegentest.Server
	mu       sync.Mutex
	early    int // Begins that came after the server saw the key
	begins   int
	failWith error
}

func (s *spyJournal) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	s.mu.Lock()
	s.begins++
	for _, r := range s.srv.Requests() {
		if r.IdempotencyKey == in.Key {
			s.early++
		}
	}
	fail := s.failWith
	s.mu.Unlock()
	if fail != nil {
		return safegen.Intent{}, fail
	}
	return s.KeyJournal.Begin(ctx, in)
}

func TestJournalBeginsBeforeFirstByte(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	spy := &spyJournal{KeyJournal: journal.NewMemory(), srv: srv}
	c := newClient(t, srv, safegen.WithJournal(spy))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503})
	for i := 0; i < 5; i++ {
		_, err := c.Generations.Create(context.Background(), params)
		require.NoError(t, err)
	}
	assert.Equal(t, 5, spy.begins, "one Begin per logical call, not per attempt")
	assert.Zero(t, spy.early)
	pending, err := spy.Pending(context.Background())
	require.NoError(t, err)
	assert.Empty(t, pending, "every definitive answer completed its intent")

	spy.failWith = errors.New("disk full")
	before := len(srv.Requests())
	_, err = c.Generations.Create(context.Background(), params)
	require.ErrorContains(t, err, "disk full")
	require.ErrorContains(t, err, "nothing sent")
	assert.Len(t, srv.Requests(), before, "an intent that was not journaled is never sent")
}

func TestJournalPendingKeyWithOtherBytes(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	j := journal.NewMemory()
	c := newClient(t, srv, safegen.WithJournal(j), safegen.WithMaxRetries(0))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultReset})
	_, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey("order-5"))
	require.Error(t, err)
	pending, _ := j.Pending(context.Background())
	require.Len(t, pending, 1, "a transport failure leaves the intent pending")

	other := *params
	other.Prompt = "different"
	before := len(srv.Requests())
	_, err = c.Generations.Create(context.Background(), &other, safegen.WithIdempotencyKey("order-5"))
	require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse)
	assert.Len(t, srv.Requests(), before, "refused locally, nothing sent")
	var apiErr *safegen.APIError
	assert.False(t, errors.As(err, &apiErr), "a local refusal is not a server answer")
}

// TestIntentIDSurvivesACrash: a caller that re-runs its own loop with the same
// intent ids after a crash gets the same keys back and is never billed twice.
func TestIntentIDSurvivesACrash(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	path := filepath.Join(t.TempDir(), "intents.journal")
	ctx := context.Background()

	// First life: job-1 completes; job-2's answer is lost (committed, then
	// dropped) and the process "dies" before retrying.
	j1, err := journal.Open(path)
	require.NoError(t, err)
	c1 := newClient(t, srv, safegen.WithJournal(j1), safegen.WithMaxRetries(0))
	g1, err := c1.Generations.Create(ctx, params, safegen.WithIntentID("job-1"))
	require.NoError(t, err)
	// Two drops: net/http silently re-sends a keyed POST once when a reused
	// keep-alive connection dies, and that re-send must fail too.
	drop := safegentest.Fault{Kind: safegentest.FaultDropAfterCommit}
	srv.InjectFaults(drop, drop)
	_, err = c1.Generations.Create(ctx, params, safegen.WithIntentID("job-2"))
	require.Error(t, err)
	require.NoError(t, j1.Close())
	require.Equal(t, 2, srv.Ledger().Total())

	// Second life: the same loop again.
	j2, err := journal.Open(path)
	require.NoError(t, err)
	defer j2.Close()
	c2 := newClient(t, srv, safegen.WithJournal(j2))
	before := len(billableAttempts(srv))
	again1, err := c2.Generations.Create(ctx, params, safegen.WithIntentID("job-1"))
	require.NoError(t, err)
	assert.Equal(t, g1.ID, again1.ID)
	assert.True(t, again1.Meta.FromJournal, "the recorded outcome is returned")
	assert.Len(t, billableAttempts(srv), before, "nothing sent for a completed intent")

	g2, err := c2.Generations.Create(ctx, params, safegen.WithIntentID("job-2"))
	require.NoError(t, err)
	assert.True(t, g2.Meta.Replayed, "the lost answer is replayed under the journaled key")
	reqs := billableAttempts(srv)
	assert.Equal(t, reqs[1].IdempotencyKey, reqs[len(reqs)-1].IdempotencyKey)
	assert.Equal(t, reqs[1].Body, reqs[len(reqs)-1].Body)

	other := *params
	other.Prompt = "changed my mind"
	_, err = c2.Generations.Create(ctx, &other, safegen.WithIntentID("job-2"))
	require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse)

	l := srv.Ledger()
	assert.Equal(t, 2, l.Total(), "two logical calls, two charges")
	assert.Empty(t, l.Duplicates())
}

func TestResume(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	j := journal.NewMemory()
	ctx := context.Background()
	c := newClient(t, srv, safegen.WithJournal(j), safegen.WithMaxRetries(0))

	// Three intents left pending: answer dropped after commit, reset before
	// the work, and a 503 with no retries left.
	srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
		safegentest.Fault{Kind: safegentest.FaultReset},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503},
	)
	for i := 0; i < 3; i++ {
		_, err := c.Generations.Create(ctx, params)
		require.Error(t, err)
	}
	// A definitive 4xx is completed, not pending.
	srv.SetCredits(srv.APIKey, 0)
	_, err := c.Generations.Create(ctx, params)
	require.ErrorIs(t, err, safegen.ErrInsufficientCredits)
	srv.SetCredits(srv.APIKey, 1000)

	pending, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, pending, 3)
	require.Equal(t, 1, srv.Ledger().Total())

	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	assert.Len(t, rep.Completed, 3)
	assert.Empty(t, rep.Failed)
	assert.Empty(t, rep.Expired)
	for _, r := range rep.Completed {
		var g safegen.Generation
		require.NoError(t, r.Decode(&g))
		assert.NotEmpty(t, g.ID)
		assert.Equal(t, r.Intent.Key, r.Meta.IdempotencyKey)
		// Every attempt of this intent carried its key and its exact bytes.
		for _, req := range billableAttempts(srv) {
			if req.IdempotencyKey == r.Intent.Key {
				assert.Equal(t, r.Intent.Body, req.Body)
			}
		}
	}
	l := srv.Ledger()
	assert.Equal(t, 3, l.Total(), "the dropped call was replayed, the other two ran once")
	assert.Empty(t, l.Duplicates())
	pending, _ = j.Pending(ctx)
	assert.Empty(t, pending)

	rep, err = c.Resume(ctx)
	require.NoError(t, err)
	assert.Empty(t, rep.Completed)
}

func TestResumeNeverResendsExpiredIntents(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	j := journal.NewMemory()
	ctx := context.Background()
	old := safegen.Intent{ID: "old", Key: "key-old", Method: "POST", Path: "/v1/generations", Body: []byte(`{"model":"img-2","prompt":"x"}`),
		CreatedAt: time.Now().Add(-23*time.Hour - time.Minute)}
	fresh := old
	fresh.ID, fresh.Key, fresh.CreatedAt = "fresh", "key-fresh", time.Now().Add(-22*time.Hour)
	for _, in := range []safegen.Intent{old, fresh} {
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
	}
	c := newClient(t, srv, safegen.WithJournal(j))
	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Expired, 1)
	assert.Equal(t, "old", rep.Expired[0].ID)
	require.Len(t, rep.Completed, 1)
	assert.Equal(t, "fresh", rep.Completed[0].Intent.ID)
	for _, r := range srv.Requests() {
		assert.NotEqual(t, "key-old", r.IdempotencyKey, "an intent past the key window minus the margin is never re-sent")
	}
	pending, _ := j.Pending(ctx)
	assert.Empty(t, pending, "the expired intent is recorded as such")

	// Its intent id now answers with ErrIntentExpired instead of a new call.
	_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "x"}, safegen.WithIntentID("old"))
	require.ErrorIs(t, err, safegen.ErrIntentExpired)

	// A custom window: 2 h with a 30 min margin.
	j2 := journal.NewMemory()
	in := old
	in.CreatedAt = time.Now().Add(-2 * time.Hour)
	_, err = j2.Begin(ctx, in)
	require.NoError(t, err)
	c2 := newClient(t, srv, safegen.WithJournal(j2), safegen.WithKeyWindow(2*time.Hour, 30*time.Minute))
	rep, err = c2.Resume(ctx)
	require.NoError(t, err)
	assert.Len(t, rep.Expired, 1)
}

func TestResumeNeedsJournal(t *testing.T) {
	srv := safegentest.NewServer(t)
	c := newClient(t, srv)
	_, err := c.Resume(context.Background())
	require.ErrorContains(t, err, "needs a journal")
}

// TestResumeLeavesFailuresPending: an intent that still cannot get through
// stays pending for the next Resume; a definitive refusal is recorded.
func TestResumeLeavesFailuresPending(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	j := journal.NewMemory()
	ctx := context.Background()
	for _, in := range []safegen.Intent{
		{ID: "a", Key: "key-a", Method: "POST", Path: "/v1/generations", Body: []byte(`{"model":"img-2","prompt":"x"}`), CreatedAt: time.Now()},
		{ID: "b", Key: "key-b", Method: "POST", Path: "/v1/generations", Body: []byte(`{"model":"nope","prompt":"x"}`), CreatedAt: time.Now()},
	} {
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
	}
	c := newClient(t, srv, safegen.WithJournal(j))
	f503 := safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Method: http.MethodPost, Path: "/v1/generations"}
	srv.InjectFaults(f503, f503)
	rep, err := c.Resume(ctx, safegen.WithMaxRetries(0))
	require.NoError(t, err)
	require.Len(t, rep.Failed, 2)
	for _, r := range rep.Failed {
		assert.True(t, r.StillPending, "a 503 settles nothing")
		assert.ErrorIs(t, r.Err, safegen.ErrServer)
	}
	pending, _ := j.Pending(ctx)
	require.Len(t, pending, 2)

	rep, err = c.Resume(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Completed, 1)
	assert.Equal(t, "a", rep.Completed[0].Intent.ID)
	require.Len(t, rep.Failed, 1)
	assert.Equal(t, "b", rep.Failed[0].Intent.ID)
	assert.False(t, rep.Failed[0].StillPending, "a 422 is definitive and recorded")
	assert.ErrorIs(t, rep.Failed[0].Err, safegen.ErrInvalidRequest)
	pending, _ = j.Pending(ctx)
	assert.Empty(t, pending)
	assert.Equal(t, 1, srv.Ledger().Total())
}
