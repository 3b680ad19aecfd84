package safegen_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// params costs 12 credits on the fake (veo, 4 s at 3 a second).
const paramsPrice = 12

func countRequests(srv *safegentest.Server, method, path string) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func TestSpendLimitRefusesBeforeSending(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(30))
	ctx := context.Background()
	for range 2 {
		_, err := c.Generations.Create(ctx, params, safegen.WithCost(12))
		require.NoError(t, err)
	}
	_, err := c.Generations.Create(ctx, params, safegen.WithCost(12))
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	var se *safegen.SpendLimitError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 30.0, se.Limit)
	assert.Equal(t, 24.0, se.Spent)
	assert.Equal(t, 0.0, se.Reserved)
	assert.Equal(t, 12.0, se.Requested)
	assert.NotEmpty(t, se.IdempotencyKey)
	assert.Contains(t, err.Error(), "nothing sent")
	assert.Equal(t, 2, len(billableAttempts(srv)), "the refused call sent nothing")
	assert.Equal(t, safegen.SpendReport{Limit: 30, Spent: 24}, c.Spend())
	// A cheaper call still fits.
	_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "x"}, safegen.WithCost(1))
	require.NoError(t, err)
	assert.Equal(t, 25.0, c.Spend().Spent)
}

func TestSpendEstimateCached(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(1000))
	ctx := context.Background()
	for _, prompt := range []string{"a", "b", "c", "d"} {
		_, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: prompt, DurationS: 4})
		require.NoError(t, err)
	}
	assert.Equal(t, 1, countRequests(srv, http.MethodPost, "/v1/generations/estimate"), "one estimate per model and parameters")
	_, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "e", DurationS: 2})
	require.NoError(t, err)
	assert.Equal(t, 2, countRequests(srv, http.MethodPost, "/v1/generations/estimate"), "another duration, another price")
	assert.Equal(t, safegen.SpendReport{Limit: 1000, Spent: 4*12 + 6}, c.Spend())
	assert.EqualValues(t, 4*12+6, srv.Ledger().Credits(srv.APIKey))
}

// The reservation is the caller's price; the charge is the answer's cost.
func TestSpendSettlesToActualCost(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(150))
	_, err := c.Generations.Create(context.Background(), params, safegen.WithCost(100))
	require.NoError(t, err)
	assert.Equal(t, safegen.SpendReport{Limit: 150, Spent: paramsPrice}, c.Spend())
	// 100 would not fit next to 100 reserved, but fits next to 12 spent.
	_, err = c.Generations.Create(context.Background(), params, safegen.WithCost(100))
	require.NoError(t, err)
}

// A replay is the same charge: a call whose answer was dropped after the
// server billed it, retried under its key, is counted once.
func TestSpendReplayCountedOnce(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(100))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit})
	g, err := c.Generations.Create(context.Background(), params, safegen.WithCost(paramsPrice))
	require.NoError(t, err)
	assert.True(t, g.Meta.Replayed)
	assert.Equal(t, safegen.SpendReport{Limit: 100, Spent: paramsPrice}, c.Spend())
	assert.Equal(t, 1, srv.Ledger().Total())
}

// A refunded cancel gives the credits back to the limit.
func TestSpendRefundedCancel(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	c := newClient(t, srv, safegen.WithSpendLimit(12))
	ctx := context.Background()
	g, err := c.Generations.Create(ctx, params)
	require.NoError(t, err)
	_, err = c.Generations.Create(ctx, params)
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	canceled, err := c.Generations.Cancel(ctx, g.ID)
	require.NoError(t, err)
	require.Zero(t, canceled.Cost)
	assert.Equal(t, safegen.SpendReport{Limit: 12}, c.Spend())
	_, err = c.Generations.Create(ctx, params)
	require.NoError(t, err, "the refunded credits are usable again")
	assert.Len(t, srv.Ledger().Refunds, 1)
}

// A call whose outcome is unknown keeps its reservation (conservative)
// until Resume learns the outcome.
func TestSpendUnknownOutcomeKeepsReservation(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(20), safegen.WithJournal(journal.NewMemory()), safegen.WithMaxRetries(0))
	ctx := context.Background()
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit})
	_, err := c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice), safegen.WithIntentID("u-1"))
	require.Error(t, err)
	assert.Equal(t, safegen.SpendReport{Limit: 20, Reserved: paramsPrice}, c.Spend())
	_, err = c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice), safegen.WithIntentID("u-2"))
	require.ErrorIs(t, err, safegen.ErrSpendLimit, "the unknown outcome's reservation still counts")

	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Completed, 1)
	assert.Equal(t, safegen.SpendReport{Limit: 20, Spent: paramsPrice}, c.Spend())
	assert.Equal(t, 1, srv.Ledger().Total())
	assert.LessOrEqual(t, float64(srv.Ledger().Credits(srv.APIKey)), 20.0)
}

// A definitive refusal releases the reservation; 402 stays a typed,
// non-retried error behind the guard.
func TestSpendRefusalReleases(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	srv.SetCredits(srv.APIKey, 5)
	c := newClient(t, srv, safegen.WithSpendLimit(100))
	_, err := c.Generations.Create(context.Background(), params, safegen.WithCost(paramsPrice))
	require.ErrorIs(t, err, safegen.ErrInsufficientCredits)
	assert.Len(t, billableAttempts(srv), 1, "402 is not retried")
	assert.Equal(t, safegen.SpendReport{Limit: 100}, c.Spend())
}

func TestSpendDoNeedsCost(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithSpendLimit(100))
	ctx := context.Background()
	var out map[string]any
	err := c.Do(ctx, http.MethodPost, "/v1/generations", map[string]any{"model": "img-2", "prompt": "x"}, &out)
	require.NoError(t, err, "a create through Do is priced from its body")
	err = c.Do(ctx, http.MethodPost, "/v1/marketplace/listings", map[string]any{"x": 1}, &out)
	require.ErrorIs(t, err, safegen.ErrInvalidRequest)
	assert.Contains(t, err.Error(), "WithCost")
	assert.Equal(t, 0, countRequests(srv, http.MethodPost, "/v1/marketplace/listings"))
}

func TestSpendOptionsValidate(t *testing.T) {
	for _, v := range []float64{-1, math.NaN(), math.Inf(1)} {
		_, err := safegen.NewClient("sk_x", safegen.WithBaseURL("http://127.0.0.1:1"), safegen.WithSpendLimit(v))
		assert.Error(t, err, "%v", v)
	}
	srv := safegentest.NewServer(t)
	c := newClient(t, srv, safegen.WithSpendLimit(10))
	_, err := c.Generations.Create(context.Background(), params, safegen.WithCost(-3))
	assert.Error(t, err)
	_, err = c.Generations.Create(context.Background(), params, safegen.WithSpendLimit(3))
	assert.Error(t, err, "a client option")
	assert.Empty(t, srv.Requests())
	plain := newClient(t, srv)
	assert.Equal(t, safegen.SpendReport{}, plain.Spend())
}

// 1,000 creates at concurrency 32 under the fake's faults, with a limit that
// is not a multiple of the price: the server never charges more than the
// limit, and once no outcome is unknown it has charged at least the limit
// minus one price (the guard does not waste the budget).
func TestSpendLimitUnderFaultsAndConcurrency(t *testing.T) {
	const limit = 1000.0 // 83.3 prices of 12
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0),
		safegentest.WithFaultRates(safegentest.FaultRates{Status500: 0.05, Status503: 0.05, Reset: 0.05,
			DropAfterCommit: 0.08, RateLimit429: 0.03}, 7))
	c := newClient(t, srv, safegen.WithSpendLimit(limit), safegen.WithJournal(journal.NewMemory()), safegen.WithMaxRetries(2))
	ctx := context.Background()
	var next atomic.Int64
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > 1000 {
					return
				}
				_, err := c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice))
				if errors.Is(err, safegen.ErrSpendLimit) {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// Learn every unknown outcome (intents left pending), as a restarted
	// worker would; no reservation is left.
	for range 5 {
		rep, err := c.Resume(ctx)
		require.NoError(t, err)
		if len(rep.Failed) == 0 {
			break
		}
	}
	charged := float64(srv.Ledger().Credits(srv.APIKey))
	spend := c.Spend()
	t.Logf("charged %v of %v; client: %+v; refused %d", charged, limit, spend, refused.Load())
	assert.LessOrEqual(t, charged, limit, "the server never charged past the limit")
	assert.Zero(t, spend.Reserved, "no outcome left unknown")
	assert.Equal(t, charged, spend.Spent, "the client's book matches the server's")
	// Calls refused while unknown outcomes held reservations can use what
	// they freed: spend it, as a caller would after Resume.
	for charged+paramsPrice <= limit {
		_, err := c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice))
		if err != nil && !errors.Is(err, safegen.ErrSpendLimit) {
			continue
		}
		require.NoError(t, err)
		charged = float64(srv.Ledger().Credits(srv.APIKey))
	}
	assert.GreaterOrEqual(t, charged, limit-paramsPrice, "the budget is not wasted")
	assert.LessOrEqual(t, charged, limit)
	assert.Empty(t, srv.Ledger().Duplicates())
}

// crashAfterReserve is a SpendJournal whose process "dies" right after a
// reservation reached the disk and before the first byte is sent.
type crashAfterReserve struct {
	*journal.File
}

var errKilled = errors.New("killed after the reservation, before sending")

func (j crashAfterReserve) Reserve(ctx context.Context, key string, credits, limit float64) (safegen.SpendReport, error) {
	rep, err := j.File.Reserve(ctx, key, credits, limit)
	if err != nil {
		return rep, err
	}
	return rep, errKilled
}

// A crash between reserve and send: the restarted process starts from the
// journaled reservation (not from zero), Resume sends the intent once and
// settles it.
func TestSpendCrashBetweenReserveAndSend(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	path := t.TempDir() + "/spend.journal"
	ctx := context.Background()

	f, err := journal.Open(path)
	require.NoError(t, err)
	c := newClient(t, srv, safegen.WithSpendLimit(20), safegen.WithJournal(crashAfterReserve{f}))
	_, err = c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice), safegen.WithIntentID("order-1"))
	require.ErrorIs(t, err, errKilled)
	assert.Empty(t, billableAttempts(srv), "nothing was sent")
	require.NoError(t, f.Close())

	// The restarted process.
	f, err = journal.Open(path)
	require.NoError(t, err)
	defer f.Close()
	c = newClient(t, srv, safegen.WithSpendLimit(20), safegen.WithJournal(f))
	assert.Equal(t, safegen.SpendReport{Limit: 20, Reserved: paramsPrice}, c.Spend(), "not from zero")
	_, err = c.Generations.Create(ctx, params, safegen.WithCost(paramsPrice), safegen.WithIntentID("order-2"))
	require.ErrorIs(t, err, safegen.ErrSpendLimit, "the journaled reservation still counts")

	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Completed, 1)
	assert.Equal(t, "order-1", rep.Completed[0].Intent.ID)
	assert.Equal(t, 1, srv.Ledger().Total())
	assert.Equal(t, safegen.SpendReport{Limit: 20, Spent: paramsPrice}, c.Spend())
	// order-2 was journaled but refused before sending: it is pending and
	// unsent, and still does not fit.
	assert.Len(t, billableAttempts(srv), 1)
}

// A restarted process starts from what its journal says was spent.
func TestSpendSurvivesRestart(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	path := t.TempDir() + "/spend.journal"
	ctx := context.Background()
	for run, want := range []error{nil, nil, safegen.ErrSpendLimit} {
		f, err := journal.Open(path)
		require.NoError(t, err)
		c := newClient(t, srv, safegen.WithSpendLimit(30), safegen.WithJournal(f))
		_, err = c.Generations.Create(ctx, params)
		if want == nil {
			require.NoError(t, err, "run %d", run)
		} else {
			require.ErrorIs(t, err, want, "run %d", run)
		}
		require.NoError(t, f.Close())
	}
	assert.Equal(t, 2, srv.Ledger().Total())
}

// spendRecorder is an Observer that keeps the spend events.
type spendRecorder struct {
	safegen.NopObserver
	mu     sync.Mutex
	events []safegen.SpendEvent
}

func (r *spendRecorder) SpendChange(_ context.Context, ev safegen.SpendEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func TestSpendObserved(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	rec := &spendRecorder{}
	c := newClient(t, srv, safegen.WithSpendLimit(20), safegen.WithObserver(rec))
	_, err := c.Generations.Create(context.Background(), params, safegen.WithCost(15))
	require.NoError(t, err)
	_, err = c.Generations.Create(context.Background(), params, safegen.WithCost(15))
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	assert.Equal(t, []safegen.SpendEvent{
		{Limit: 20, Reserved: 15},       // reserved before the first byte
		{Limit: 20, Spent: paramsPrice}, // settled to the answer's cost
		{Limit: 20, Spent: paramsPrice}, // the refusal, as it stood
	}, rec.events)
}
