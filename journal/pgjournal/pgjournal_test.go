package pgjournal_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func intent(i int) safegen.Intent {
	return safegen.Intent{ID: fmt.Sprintf("job-%d", i), Key: fmt.Sprintf("key-%d", i), Method: "POST",
		Path: "/v1/generations", Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)}
}

func begin(t testing.TB, j *pgjournal.Journal, ins ...safegen.Intent) {
	t.Helper()
	for _, in := range ins {
		_, err := j.Begin(context.Background(), in)
		require.NoError(t, err)
	}
}

func ids(ins []safegen.Intent) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.ID
	}
	return out
}

// isolatedPool connects with search_path set to a new, empty schema, for
// tests of the migration itself.
func isolatedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := newPool(t)
	schema := fmt.Sprintf("mig_%d", time.Now().UnixNano())
	_, err := admin.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE") })
	cfg, err := pgxpool.ParseConfig(dsn(t))
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// Workers starting together all succeed and apply each migration once.
func TestMigrateConcurrently(t *testing.T) {
	pool := isolatedPool(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	js := make([]*pgjournal.Journal, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			js[i], errs[i] = pgjournal.New(ctx, pool, pgjournal.WithNamespace("mig"))
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.NoError(t, js[i].Close())
	}
	var versions []int32
	rows, err := pool.Query(ctx, `SELECT version FROM safegen_schema_migrations ORDER BY version`)
	require.NoError(t, err)
	for rows.Next() {
		var v int32
		require.NoError(t, rows.Scan(&v))
		versions = append(versions, v)
	}
	require.NoError(t, rows.Err())
	require.Len(t, versions, pgjournal.SchemaVersion)
	require.EqualValues(t, pgjournal.SchemaVersion, versions[len(versions)-1])

	// A table from a newer release is refused, not written to.
	_, err = pool.Exec(ctx, `INSERT INTO safegen_schema_migrations (version) VALUES (999)`)
	require.NoError(t, err)
	_, err = pgjournal.New(ctx, pool)
	require.ErrorContains(t, err, "newer")
}

func TestOptionsValidate(t *testing.T) {
	pool := newPool(t)
	for name, o := range map[string]pgjournal.Option{
		"namespace": pgjournal.WithNamespace(""),
		"owner":     pgjournal.WithOwner(""),
		"lease":     pgjournal.WithLease(0),
		"retention": pgjournal.WithRetention(-time.Second),
		"prune":     pgjournal.WithPruneInterval(0),
	} {
		_, err := pgjournal.New(context.Background(), pool, o)
		require.Error(t, err, name)
	}
	_, err := pgjournal.New(context.Background(), nil)
	require.Error(t, err)
}

// Begin has committed when it returns: another connection sees the intent.
func TestBeginCommitted(t *testing.T) {
	pool := newPool(t)
	j := open(t, pool)
	begin(t, j, intent(1))
	other := newPool(t)
	var key, owner string
	var leased bool
	require.NoError(t, other.QueryRow(context.Background(),
		`SELECT key, owner, lease_until > now() FROM safegen_intents WHERE namespace = $1 AND intent_id = 'job-1'`,
		j.Namespace()).Scan(&key, &owner, &leased))
	assert.Equal(t, "key-1", key)
	assert.Equal(t, j.Owner(), owner)
	assert.True(t, leased, "Begin takes a lease")
}

// Namespaces never see each other's intents, ids or keys.
func TestNamespacesIsolated(t *testing.T) {
	pool := newPool(t)
	a, b := open(t, pool), open(t, pool)
	begin(t, a, intent(1))
	other := intent(1)
	other.Body = []byte("other bytes")
	got, err := b.Begin(context.Background(), other)
	require.NoError(t, err)
	assert.Equal(t, "other bytes", string(got.Body), "same id and key in another namespace is another intent")
	require.NoError(t, b.Complete(context.Background(), "key-1", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	p, err := a.Pending(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"job-1"}, ids(p))
}

// A live worker's intents are not handed to another one; when it stops
// renewing, they are, one lease later; and the taker then holds them.
func TestLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := pgjournal.WithNamespace(freshNamespace(t))
	lease := pgjournal.WithLease(600 * time.Millisecond)
	a := open(t, pool, ns, lease, pgjournal.WithOwner("worker-a"))
	b := open(t, pool, ns, lease, pgjournal.WithOwner("worker-b"))
	c := open(t, pool, ns, lease, pgjournal.WithOwner("worker-c"))
	begin(t, a, intent(1), intent(2), intent(3))

	// Two leases long, a's renewer keeps them.
	deadline := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(deadline) {
		p, err := b.Pending(ctx)
		require.NoError(t, err)
		require.Empty(t, p, "a live worker's intents are not claimable")
		time.Sleep(50 * time.Millisecond)
	}
	p, err := a.Pending(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-1", "job-2", "job-3"}, ids(p), "the owner lists its own")

	require.NoError(t, a.Close()) // a "dies": no more renewals
	_, err = a.Pending(ctx)
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	require.Eventually(t, func() bool {
		p, err = b.Pending(ctx)
		require.NoError(t, err)
		return len(p) == 3
	}, 3*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"job-1", "job-2", "job-3"}, ids(p))
	// b now holds them (and renews them): c gets nothing.
	time.Sleep(700 * time.Millisecond)
	p, err = c.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
	n, err := b.Renew(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)

	// Complete releases the lease; the intent is no longer pending for anyone.
	require.NoError(t, b.Complete(ctx, "key-2", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	var owner *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT owner FROM safegen_intents WHERE namespace = $1 AND key = 'key-2'`,
		b.Namespace()).Scan(&owner))
	require.Nil(t, owner)
	n, err = b.Renew(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
}

// Begin on an intent whose worker died takes its lease; on one a live
// worker holds, it returns the intent and leaves the lease alone.
func TestBeginLeases(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := pgjournal.WithNamespace(freshNamespace(t))
	lease := pgjournal.WithLease(200 * time.Millisecond)
	a := open(t, pool, ns, lease, pgjournal.WithOwner("a"))
	b := open(t, pool, ns, lease, pgjournal.WithOwner("b"))
	c := open(t, pool, ns, lease, pgjournal.WithOwner("c"))
	begin(t, a, intent(1))
	again := intent(1)
	again.Key = "fresh-key-from-b"
	got, err := b.Begin(ctx, again)
	require.NoError(t, err)
	require.Equal(t, "key-1", got.Key, "the recorded key comes back, from any worker")
	owner := func() string {
		var o string
		require.NoError(t, pool.QueryRow(ctx, `SELECT owner FROM safegen_intents WHERE namespace = $1 AND intent_id = 'job-1'`,
			a.Namespace()).Scan(&o))
		return o
	}
	require.Equal(t, "a", owner())
	require.NoError(t, a.Close())
	time.Sleep(250 * time.Millisecond)
	_, err = b.Begin(ctx, again)
	require.NoError(t, err)
	require.Equal(t, "b", owner(), "an expired lease is taken by the Begin that finds it")
	p, err := c.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
}

// Workers claiming at once split the dead worker's intents: each intent goes
// to exactly one of them.
func TestConcurrentClaimsDisjoint(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := pgjournal.WithNamespace(freshNamespace(t))
	dead := open(t, pool, ns, pgjournal.WithLease(30*time.Millisecond))
	const n = 200
	for i := range n {
		begin(t, dead, intent(i))
	}
	require.NoError(t, dead.Close())
	time.Sleep(50 * time.Millisecond)

	const workers = 8
	got := make([][]safegen.Intent, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		j := open(t, pool, ns, pgjournal.WithLease(10*time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 3 {
				p, err := j.Pending(ctx)
				if err != nil {
					errs[w] = err
					return
				}
				for _, in := range p {
					if !contains(got[w], in.ID) {
						got[w] = append(got[w], in)
					}
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	for w := range workers {
		require.NoError(t, errs[w])
		for _, in := range got[w] {
			seen[in.ID]++
		}
	}
	require.Len(t, seen, n, "every intent is claimed")
	for id, k := range seen {
		require.Equal(t, 1, k, "%s claimed by %d workers", id, k)
	}
}

func contains(ins []safegen.Intent, id string) bool {
	for _, in := range ins {
		if in.ID == id {
			return true
		}
	}
	return false
}

func count(t testing.TB, pool *pgxpool.Pool, ns string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM safegen_intents WHERE namespace = $1`, ns).Scan(&n))
	return n
}

// Completed intents go after the retention; pending ones stay; a pruned
// intent id begins anew.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	j := open(t, pool, pgjournal.WithRetention(50*time.Millisecond), pgjournal.WithPruneInterval(time.Hour))
	begin(t, j, intent(1), intent(2), intent(3))
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.NoError(t, j.Complete(ctx, "key-2", safegen.Outcome{StatusCode: 400, CompletedAt: t0}))
	n, err := j.Prune(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "not yet past the retention")
	time.Sleep(80 * time.Millisecond)
	n, err = j.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	require.Equal(t, 1, count(t, pool, j.Namespace()))
	fresh := intent(1)
	fresh.Key = "key-1-again"
	got, err := j.Begin(ctx, fresh)
	require.NoError(t, err)
	require.Equal(t, "key-1-again", got.Key)
	require.True(t, got.Pending())
}

// Under a steady stream of calls the table stays bounded: the background
// pruner removes what the retention allows.
func TestPruneInBackground(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	j := open(t, pool, pgjournal.WithRetention(20*time.Millisecond), pgjournal.WithPruneInterval(30*time.Millisecond),
		pgjournal.WithLease(30*time.Millisecond))
	max := 0
	for i := range 300 {
		in := intent(i)
		begin(t, j, in)
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
		if i%20 == 0 {
			max = maxInt(max, count(t, pool, j.Namespace()))
		}
	}
	require.Eventually(t, func() bool { return count(t, pool, j.Namespace()) == 0 }, 2*time.Second, 10*time.Millisecond)
	require.Less(t, max, 300, "pruned while running")
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	j := open(t, pool)
	begin(t, j, intent(1))
	require.NoError(t, j.Close())
	require.NoError(t, j.Close(), "twice is fine")
	_, err := j.Begin(ctx, intent(2))
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	require.ErrorIs(t, j.Complete(ctx, "key-1", safegen.Outcome{}), safegen.ErrJournalClosed)
	require.NoError(t, pool.Ping(ctx), "the pool is the caller's and stays open")
}
