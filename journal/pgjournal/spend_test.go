package pgjournal_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/journaltest"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

// A second Journal on the same namespace, with the first still open, sees
// the totals the first left and goes on from them.
func TestSpendReopen(t *testing.T) {
	pool := newPool(t)
	journaltest.RunSpendReopen(t, func(t *testing.T) func() safegen.SpendJournal {
		ns := pgjournal.WithNamespace(freshNamespace(t))
		return func() safegen.SpendJournal { return open(t, pool, ns) }
	})
}

// requireConsistent checks the namespace's totals row against its key rows:
// spent = sum(charged) + pruned, reserved = sum(reserved), and returns the
// totals.
func requireConsistent(t testing.TB, pool *pgxpool.Pool, ns string) (spent, reserved float64) {
	t.Helper()
	var sumCharged, sumReserved, pruned float64
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT t.spent, t.reserved, t.pruned,
			(SELECT coalesce(sum(charged), 0) FROM safegen_spend s WHERE s.namespace = t.namespace),
			(SELECT coalesce(sum(reserved), 0) FROM safegen_spend s WHERE s.namespace = t.namespace)
		FROM safegen_spend_totals t WHERE t.namespace = $1`, ns).Scan(&spent, &reserved, &pruned, &sumCharged, &sumReserved))
	require.InDelta(t, sumCharged+pruned, spent, 1e-9, "spent = sum(charged) + pruned")
	require.InDelta(t, sumReserved, reserved, 1e-9, "reserved = sum(reserved)")
	return spent, reserved
}

// Workers with their own Journal and their own connections, reserving at
// once on one namespace against one limit, accept exactly what fits.
func TestSpendAcrossJournals(t *testing.T) {
	ctx := context.Background()
	ns := pgjournal.WithNamespace(freshNamespace(t))
	const workers, each, price, limit = 6, 40, 3.0, 200.5
	js := make([]*pgjournal.Journal, workers)
	pools := make([]*pgxpool.Pool, workers)
	for w := range workers {
		pools[w] = newPool(t)
		js[w] = open(t, pools[w], ns)
	}
	accepted := make([]int, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range each {
				rep, err := js[w].Reserve(ctx, fmt.Sprintf("key-%d-%d", w, i), price, limit)
				if errors.Is(err, safegen.ErrSpendLimit) {
					continue
				}
				if err == nil && rep.Spent+rep.Reserved > limit {
					err = fmt.Errorf("accepted with %v spent and %v reserved", rep.Spent, rep.Reserved)
				}
				if err != nil {
					errs[w] = err
					return
				}
				accepted[w]++
			}
		}()
	}
	close(start)
	wg.Wait()
	total := 0
	for w := range workers {
		require.NoError(t, errs[w])
		total += accepted[w]
	}
	require.Equal(t, 66, total, "floor(200.5 / 3) reservations, and no more")
	for _, j := range js {
		rep, err := j.Spend(ctx)
		require.NoError(t, err)
		require.Equal(t, safegen.SpendReport{Reserved: 198}, rep)
	}
	_, reserved := requireConsistent(t, pools[0], js[0].Namespace())
	require.Equal(t, 198.0, reserved)
}

// Decimal credits add up exactly: a hundred reservations of 0.1 fill a
// limit of 10 to the last one.
func TestSpendExactDecimals(t *testing.T) {
	j := open(t, newPool(t))
	ctx := context.Background()
	for i := range 100 {
		_, err := j.Reserve(ctx, fmt.Sprint("key-", i), 0.1, 10)
		require.NoError(t, err, i)
	}
	_, err := j.Reserve(ctx, "one-more", 0.1, 10)
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	for i := range 100 {
		_, err := j.Settle(ctx, fmt.Sprint("key-", i), 0.1)
		require.NoError(t, err)
	}
	rep, err := j.Spend(ctx)
	require.NoError(t, err)
	require.Equal(t, safegen.SpendReport{Spent: 10}, rep)
}

// Namespaces keep their own spend.
func TestSpendNamespacesIsolated(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	a, b := open(t, pool), open(t, pool)
	_, err := a.Reserve(ctx, "key-1", 10, 10)
	require.NoError(t, err)
	rep, err := b.Reserve(ctx, "key-1", 10, 10)
	require.NoError(t, err, "the same key in another namespace is another call")
	require.Equal(t, safegen.SpendReport{Reserved: 10}, rep)
	_, err = b.Settle(ctx, "key-1", 4)
	require.NoError(t, err)
	rep, err = a.Spend(ctx)
	require.NoError(t, err)
	require.Equal(t, safegen.SpendReport{Reserved: 10}, rep)
}

// Prune deletes the spend rows of keys settled past the retention whose
// intents are gone, and the totals stay the same; reserved keys, and keys
// whose intent is kept, stay.
func TestPruneSpend(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	j := open(t, pool, pgjournal.WithRetention(50*time.Millisecond), pgjournal.WithPruneInterval(time.Hour))
	begin(t, j, intent(1), intent(2), intent(3), intent(4))
	for i := 1; i <= 4; i++ {
		_, err := j.Reserve(ctx, fmt.Sprint("key-", i), 10, 100)
		require.NoError(t, err)
	}
	for _, i := range []int{1, 2} { // charged and refunded
		require.NoError(t, j.Complete(ctx, fmt.Sprint("key-", i), safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
		_, err := j.Settle(ctx, fmt.Sprint("key-", i), float64(i%2)*7)
		require.NoError(t, err)
	}
	_, err := j.Settle(ctx, "key-3", 8) // settled, its intent still pending
	require.NoError(t, err)
	_, err = j.Settle(ctx, "no-intent", 2.5)
	require.NoError(t, err)
	// key-4: reserved, outcome unknown.
	spent, reserved := requireConsistent(t, pool, j.Namespace())
	require.Equal(t, []float64{17.5, 10}, []float64{spent, reserved})

	time.Sleep(80 * time.Millisecond)
	n, err := j.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "intents 1 and 2")
	rows, err := pool.Query(ctx, `SELECT key FROM safegen_spend WHERE namespace = $1 ORDER BY key`, j.Namespace())
	require.NoError(t, err)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"key-3", "key-4"}, keys)
	spent, reserved = requireConsistent(t, pool, j.Namespace())
	require.Equal(t, []float64{17.5, 10}, []float64{spent, reserved})
	rep, err := j.Spend(ctx)
	require.NoError(t, err)
	require.Equal(t, safegen.SpendReport{Spent: 17.5, Reserved: 10}, rep)
	// A pruned key that comes back is a new call.
	rep, err = j.Settle(ctx, "key-1", 1)
	require.NoError(t, err)
	require.Equal(t, safegen.SpendReport{Spent: 18.5, Reserved: 10}, rep)
	requireConsistent(t, pool, j.Namespace())
}

// A database at schema version 2, written by the last release, migrates to
// the current version under New; its intents keep their bytes, and the
// spend starts from zero.
func TestMigrateFromV2(t *testing.T) {
	ctx := context.Background()
	pool := isolatedPool(t)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range []string{
			`CREATE TABLE safegen_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
			pgjournal.Migrations[0],
			pgjournal.Migrations[1],
			`INSERT INTO safegen_schema_migrations (version) VALUES (1), (2)`,
			`INSERT INTO safegen_intents (namespace, intent_id, key, method, path, body, created_at)
				VALUES ('old', 'job-1', 'key-1', 'POST', '/v1/generations', '\x7b7d', '2025-03-01T12:00:00Z')`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	}))
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace("old"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, j.Close()) })
	var v int
	require.NoError(t, pool.QueryRow(ctx, `SELECT max(version) FROM safegen_schema_migrations`).Scan(&v))
	require.Equal(t, pgjournal.SchemaVersion, v)
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-1"}, ids(p))
	require.Equal(t, []byte("{}"), p[0].Body)
	rep, err := j.Spend(ctx)
	require.NoError(t, err)
	require.Zero(t, rep)
	rep, err = j.Reserve(ctx, "key-1", 5, 5)
	require.NoError(t, err)
	require.Equal(t, safegen.SpendReport{Reserved: 5}, rep)
}

func TestSpendClosed(t *testing.T) {
	ctx := context.Background()
	j := open(t, newPool(t))
	require.NoError(t, j.Close())
	_, err := j.Reserve(ctx, "k", 1, 10)
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	_, err = j.Settle(ctx, "k", 1)
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	_, err = j.Spend(ctx)
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
}
