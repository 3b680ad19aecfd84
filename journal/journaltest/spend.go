package journaltest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// RunSpend runs the conformance suite of safegen.SpendJournal against the
// journals open returns, each fresh and empty, as Run does. Run calls it for
// journals that implement SpendJournal. Besides the contract, the suite
// expects what the journals of this module do: a negative limit is no limit,
// negative credits count as 0, and an empty key, a NaN or infinite number
// of credits and a NaN limit are errors that record nothing.
func RunSpend(t *testing.T, open func(t *testing.T) safegen.SpendJournal) {
	t.Helper()
	runCases(t, open, []namedCase[safegen.SpendJournal]{
		{"Empty", testSpendEmpty},
		{"ReserveWithinLimit", testReserveWithin},
		{"ReserveOverLimit", testReserveOver},
		{"ReserveSameKey", testReserveSameKey},
		{"SettleToActual", testSettleToActual},
		{"SettleAgainReplaces", testSettleAgain},
		{"SettleUnreserved", testSettleUnreserved},
		{"NoLimit", testNoLimit},
		{"Invalid", testSpendInvalid},
		{"ConcurrentReserve", testConcurrentReserve},
		{"ConcurrentReserveSettle", testConcurrentReserveSettle},
	})
}

// RunSpendReopen checks that the spend outlives the journal value that
// recorded it. store is called once per subtest and returns a function that
// opens the same store each time it is called, empty the first time: a File
// at one path (closing the File it opened before), or another
// pgjournal.Journal on one namespace.
func RunSpendReopen(t *testing.T, store func(t *testing.T) func() safegen.SpendJournal) {
	t.Helper()
	t.Run("Persists", func(t *testing.T) { testSpendPersists(t, store(t)) })
}

// requireReport checks a report's totals to a billionth of a credit (a
// database may keep them as decimals).
func requireReport(t *testing.T, spent, reserved float64, got safegen.SpendReport) {
	t.Helper()
	require.InDelta(t, spent, got.Spent, 1e-9, "spent")
	require.InDelta(t, reserved, got.Reserved, 1e-9, "reserved")
	require.Zero(t, got.Limit, "a journal leaves Limit to the Client")
}

func requireSpend(t *testing.T, j safegen.SpendJournal, spent, reserved float64) {
	t.Helper()
	got, err := j.Spend(context.Background())
	require.NoError(t, err)
	requireReport(t, spent, reserved, got)
}

func reserve(t *testing.T, j safegen.SpendJournal, key string, credits, limit float64) safegen.SpendReport {
	t.Helper()
	rep, err := j.Reserve(context.Background(), key, credits, limit)
	require.NoError(t, err, "reserve %s: %v of %v", key, credits, limit)
	return rep
}

func settle(t *testing.T, j safegen.SpendJournal, key string, charged float64) safegen.SpendReport {
	t.Helper()
	rep, err := j.Settle(context.Background(), key, charged)
	require.NoError(t, err, "settle %s: %v", key, charged)
	return rep
}

// requireRefused checks that err is the refusal of key's credits with the
// given totals.
func requireRefused(t *testing.T, err error, key string, limit, spent, reserved, requested float64) {
	t.Helper()
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	var se *safegen.SpendLimitError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, key, se.IdempotencyKey)
	assert.InDelta(t, limit, se.Limit, 1e-9, "limit")
	assert.InDelta(t, spent, se.Spent, 1e-9, "spent")
	assert.InDelta(t, reserved, se.Reserved, 1e-9, "reserved")
	assert.InDelta(t, requested, se.Requested, 1e-9, "requested")
}

func testSpendEmpty(t *testing.T, j safegen.SpendJournal) {
	requireSpend(t, j, 0, 0)
}

func testReserveWithin(t *testing.T, j safegen.SpendJournal) {
	requireReport(t, 0, 30, reserve(t, j, "key-a", 30, 100))
	requireReport(t, 0, 30, reserve(t, j, "key-free", 0, 30))
	requireReport(t, 0, 100, reserve(t, j, "key-b", 70, 100))
	requireSpend(t, j, 0, 100)
	requireReport(t, 0, 100, reserve(t, j, "key-zero", 0, 100))
}

func testReserveOver(t *testing.T, j safegen.SpendJournal) {
	ctx := context.Background()
	reserve(t, j, "key-a", 60, 100)
	rep, err := j.Reserve(ctx, "key-b", 50, 100)
	requireRefused(t, err, "key-b", 100, 0, 60, 50)
	requireReport(t, 0, 60, rep)
	requireSpend(t, j, 0, 60)
	// Refused with nothing held: the same key may come back when it fits.
	settle(t, j, "key-a", 40)
	requireReport(t, 40, 50, reserve(t, j, "key-b", 50, 100))
	_, err = j.Reserve(ctx, "key-c", 10.5, 100)
	requireRefused(t, err, "key-c", 100, 40, 50, 10.5)
	_, err = j.Reserve(ctx, "key-d", 1, 0)
	requireRefused(t, err, "key-d", 0, 40, 50, 1)
	requireSpend(t, j, 40, 50)
}

func testReserveSameKey(t *testing.T, j safegen.SpendJournal) {
	requireReport(t, 0, 30, reserve(t, j, "key-a", 30, 100))
	// Accepted as it is, whatever the credits and the limit.
	requireReport(t, 0, 30, reserve(t, j, "key-a", 30, 100))
	requireReport(t, 0, 30, reserve(t, j, "key-a", 50, 100))
	requireReport(t, 0, 30, reserve(t, j, "key-a", 30, 10))
	requireSpend(t, j, 0, 30)
	settle(t, j, "key-a", 25)
	requireReport(t, 25, 0, reserve(t, j, "key-a", 30, 0))
	requireSpend(t, j, 25, 0)
}

func testSettleToActual(t *testing.T, j safegen.SpendJournal) {
	reserve(t, j, "key-a", 30, 100)
	reserve(t, j, "key-b", 20, 100)
	requireReport(t, 12, 20, settle(t, j, "key-a", 12))
	requireSpend(t, j, 12, 20)
	// A price the server raised after the estimate is charged all the same.
	requireReport(t, 36, 0, settle(t, j, "key-b", 24))
	requireSpend(t, j, 36, 0)
	requireReport(t, 36, 64, reserve(t, j, "key-c", 64, 100))
}

func testSettleAgain(t *testing.T, j safegen.SpendJournal) {
	reserve(t, j, "key-a", 30, 100)
	settle(t, j, "key-a", 12)
	requireReport(t, 12, 0, settle(t, j, "key-a", 12))
	// A refunded cancel gives the credits back.
	requireReport(t, 0, 0, settle(t, j, "key-a", 0))
	requireSpend(t, j, 0, 0)
	requireReport(t, 20, 0, settle(t, j, "key-a", 20))
	requireReport(t, 20, 0, settle(t, j, "key-a", 20))
	requireReport(t, 0, 0, settle(t, j, "key-a", -5)) // counts as 0
	requireSpend(t, j, 0, 0)
}

func testSettleUnreserved(t *testing.T, j safegen.SpendJournal) {
	requireReport(t, 15, 0, settle(t, j, "key-a", 15))
	requireSpend(t, j, 15, 0)
	// Charged: reserving it again changes nothing.
	requireReport(t, 15, 0, reserve(t, j, "key-a", 15, 100))
	requireReport(t, 15, 0, settle(t, j, "key-b", 0))
	requireReport(t, 15, 0, reserve(t, j, "key-b", 40, 0))
	requireSpend(t, j, 15, 0)
}

func testNoLimit(t *testing.T, j safegen.SpendJournal) {
	requireReport(t, 0, 1e6, reserve(t, j, "key-a", 1e6, -1))
	requireReport(t, 0, 1e6+2.5, reserve(t, j, "key-b", 2.5, math.Inf(1)))
	requireReport(t, 0, 1e6+2.5, reserve(t, j, "key-c", -3, -1))
	requireSpend(t, j, 0, 1e6+2.5)
}

func testSpendInvalid(t *testing.T, j safegen.SpendJournal) {
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"reserve empty key": func() error { _, err := j.Reserve(ctx, "", 1, 100); return err },
		"reserve NaN":       func() error { _, err := j.Reserve(ctx, "key-a", math.NaN(), 100); return err },
		"reserve +Inf":      func() error { _, err := j.Reserve(ctx, "key-a", math.Inf(1), 100); return err },
		"reserve NaN limit": func() error { _, err := j.Reserve(ctx, "key-a", 1, math.NaN()); return err },
		"settle empty key":  func() error { _, err := j.Settle(ctx, "", 1); return err },
		"settle NaN":        func() error { _, err := j.Settle(ctx, "key-a", math.NaN()); return err },
		"settle -Inf":       func() error { _, err := j.Settle(ctx, "key-a", math.Inf(-1)); return err },
	} {
		err := call()
		require.Error(t, err, name)
		require.NotErrorIs(t, err, safegen.ErrSpendLimit, name)
	}
	requireSpend(t, j, 0, 0)
	reserve(t, j, "key-a", 1, 1) // nothing was held under key-a
	requireSpend(t, j, 0, 1)
}

// Many callers reserving at once against one limit: exactly as many as fit
// are accepted, never one more.
func testConcurrentReserve(t *testing.T, j safegen.SpendJournal) {
	ctx := context.Background()
	const n, price, limit = 64, 7.0, 100.0
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var rep safegen.SpendReport
			rep, errs[i] = j.Reserve(ctx, fmt.Sprintf("key-%d", i), price, limit)
			if errs[i] == nil && rep.Spent+rep.Reserved > limit+1e-9 {
				errs[i] = fmt.Errorf("accepted with %v spent and %v reserved of %v", rep.Spent, rep.Reserved, limit)
			}
		}()
	}
	close(start)
	wg.Wait()
	accepted := 0
	for _, err := range errs {
		if err == nil {
			accepted++
			continue
		}
		require.ErrorIs(t, err, safegen.ErrSpendLimit)
	}
	require.Equal(t, 14, accepted, "as many as fit (100/7), and no more")
	requireSpend(t, j, 0, float64(accepted)*price)
}

// Callers reserve, settle to less (or to 0, or not at all: an unknown
// outcome) and reserve again with what was released, all at once: the
// journal's totals are what they did, and never exceed the limit.
func testConcurrentReserveSettle(t *testing.T, j safegen.SpendJournal) {
	ctx := context.Background()
	const callers, rounds, price, limit = 12, 25, 3.5, 50.25
	type held struct{ reserved, charged float64 }
	books := make([]map[string]held, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for c := range callers {
		books[c] = map[string]held{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			check := func(rep safegen.SpendReport) error {
				if rep.Spent+rep.Reserved > limit+1e-9 {
					return fmt.Errorf("%v spent and %v reserved of %v", rep.Spent, rep.Reserved, limit)
				}
				return nil
			}
			for r := range rounds {
				key := fmt.Sprintf("key-%d-%d", c, r)
				rep, err := j.Reserve(ctx, key, price, limit)
				if errors.Is(err, safegen.ErrSpendLimit) {
					continue
				}
				if err == nil {
					err = check(rep)
				}
				if err != nil {
					errs[c] = err
					return
				}
				books[c][key] = held{reserved: price}
				var charged float64
				switch (c + r) % 5 {
				case 0:
					continue // outcome unknown: stays reserved
				case 1:
					charged = 0 // refused, or refunded
				case 2:
					charged = price
				default:
					charged = price / 2
				}
				if rep, err = j.Settle(ctx, key, charged); err == nil {
					err = check(rep)
				}
				if err != nil {
					errs[c] = err
					return
				}
				books[c][key] = held{charged: charged}
			}
		}()
	}
	close(start)
	wg.Wait()
	var spent, reserved float64
	for c := range callers {
		require.NoError(t, errs[c])
		for _, h := range books[c] {
			spent += h.charged
			reserved += h.reserved
		}
	}
	require.LessOrEqual(t, spent+reserved, limit+1e-9)
	requireSpend(t, j, spent, reserved)
}

func testSpendPersists(t *testing.T, open func() safegen.SpendJournal) {
	ctx := context.Background()
	j := open()
	requireSpend(t, j, 0, 0)
	reserve(t, j, "key-a", 30, 100)
	reserve(t, j, "key-b", 20, 100)
	reserve(t, j, "key-c", 10, 100)
	settle(t, j, "key-a", 25)
	settle(t, j, "key-d", 5) // never reserved
	settle(t, j, "key-c", 7)
	settle(t, j, "key-c", 0) // refunded
	requireSpend(t, j, 30, 20)

	j = open()
	requireSpend(t, j, 30, 20)
	requireReport(t, 30, 20, reserve(t, j, "key-a", 30, 0))
	requireReport(t, 30, 20, reserve(t, j, "key-b", 20, 0))
	requireReport(t, 30, 20, reserve(t, j, "key-d", 20, 0))
	_, err := j.Reserve(ctx, "key-e", 51, 100)
	requireRefused(t, err, "key-e", 100, 30, 20, 51)
	requireReport(t, 30, 70, reserve(t, j, "key-e", 50, 100))
	requireReport(t, 50, 50, settle(t, j, "key-b", 20))

	j = open()
	requireSpend(t, j, 50, 50)
	requireReport(t, 57, 0, settle(t, j, "key-e", 7))
	requireReport(t, 57, 43, reserve(t, j, "key-f", 43, 100))
	_, err = j.Reserve(ctx, "key-g", 0.5, 100)
	requireRefused(t, err, "key-g", 100, 57, 43, 0.5)
}

// BenchReserve measures Reserves of new keys (1 credit each, under a limit
// they never reach) from the given number of concurrent callers; ns/op is
// wall time per Reserve.
func BenchReserve(b *testing.B, j safegen.SpendJournal, callers int) {
	ctx := context.Background()
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
				if _, err := j.Reserve(ctx, fmt.Sprintf("key-%d", n), 1, 1e12); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}
