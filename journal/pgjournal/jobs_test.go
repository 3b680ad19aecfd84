package pgjournal_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

func jobIntent(i int, job safegen.Job) safegen.Intent {
	in := intent(i)
	in.Job = &job
	return in
}

func step(s safegen.JobStep, status safegen.GenerationStatus) safegen.Job {
	return safegen.Job{Step: s, Path: "out/video.mp4", GenerationID: "gen_1", Status: status, UpdatedAt: t0}
}

// leaseState returns the owner and whether a live lease is held on the
// intent.
func leaseState(t testing.TB, pool *pgxpool.Pool, ns, id string) (*string, bool) {
	t.Helper()
	var owner *string
	var live bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT owner, coalesce(lease_until > now(), false) FROM safegen_intents WHERE namespace = $1 AND intent_id = $2`,
		ns, id).Scan(&owner, &live))
	return owner, live
}

func owned(t testing.TB, pool *pgxpool.Pool, ns, id string) string {
	t.Helper()
	o, _ := leaseState(t, pool, ns, id)
	if o == nil {
		return ""
	}
	return *o
}

// A database at schema version 1, written by the last release, migrates to
// the current version under New; its intents keep their bytes, have no job,
// and can be given one.
func TestMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	pool := isolatedPool(t)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, q := range []string{
			`CREATE TABLE safegen_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
			pgjournal.Migrations[0],
			`INSERT INTO safegen_schema_migrations (version) VALUES (1)`,
			`INSERT INTO safegen_intents (namespace, intent_id, key, method, path, body, created_at)
				VALUES ('old', 'job-1', 'key-1', 'POST', '/v1/generations', '\x7b7d', '2025-03-01T12:00:00Z')`,
			`INSERT INTO safegen_intents (namespace, intent_id, key, method, path, body, created_at, done_at, status, out_body, completed_at)
				VALUES ('old', 'job-2', 'key-2', 'POST', '/v1/generations', '\x00ff', '2025-03-01T12:00:01Z', now(), 201, '\x7b7d', '2025-03-01T12:00:02Z')`,
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
	require.Equal(t, 3, pgjournal.SchemaVersion)

	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-1"}, ids(p))
	require.Equal(t, []byte("{}"), p[0].Body)
	require.Nil(t, p[0].Job)
	done, err := j.Begin(ctx, intent(2))
	require.NoError(t, err)
	require.Equal(t, []byte{0, 0xff}, done.Body)
	require.Equal(t, 201, done.Outcome.StatusCode)
	require.Nil(t, done.Job)
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Empty(t, u)
	require.NoError(t, j.Advance(ctx, "key-2", step(safegen.JobAccepted, safegen.StatusQueued)))
	u, err = j.Unfinished(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-2"}, ids(u))
}

// A live worker's unfinished jobs, the completed ones included, are neither
// listed nor claimed for another worker; once it stops renewing they are,
// one lease later; and the taker then holds them until they are done.
func TestUnfinishedLeases(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	lease := pgjournal.WithLease(600 * time.Millisecond)
	a := open(t, pool, pgjournal.WithNamespace(ns), lease, pgjournal.WithOwner("worker-a"))
	b := open(t, pool, pgjournal.WithNamespace(ns), lease, pgjournal.WithOwner("worker-b"))
	c := open(t, pool, pgjournal.WithNamespace(ns), lease, pgjournal.WithOwner("worker-c"))
	started := step(safegen.JobStarted, "")
	begin(t, a, jobIntent(1, started), jobIntent(2, started), intent(3))
	require.NoError(t, a.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.NoError(t, a.Complete(ctx, "key-3", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.Equal(t, "worker-a", owned(t, pool, ns, "job-1"), "Complete keeps the lease of an unfinished job")
	require.Equal(t, "", owned(t, pool, ns, "job-3"), "and releases a plain call's")

	// Two leases long, a's renewer keeps them, the completed job's too.
	deadline := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(deadline) {
		u, err := b.Unfinished(ctx)
		require.NoError(t, err)
		require.Empty(t, u, "a live worker's jobs are not claimable")
		time.Sleep(50 * time.Millisecond)
	}
	u, err := a.Unfinished(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-1", "job-2"}, ids(u), "the owner lists its own")

	require.NoError(t, a.Close())
	_, err = a.Unfinished(ctx)
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	require.ErrorIs(t, a.Advance(ctx, "key-1", started), safegen.ErrJournalClosed)
	require.Eventually(t, func() bool {
		u, err = b.Unfinished(ctx)
		require.NoError(t, err)
		return len(u) == 2
	}, 3*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"job-1", "job-2"}, ids(u))
	require.NotNil(t, u[0].Outcome)
	require.Nil(t, u[1].Outcome)
	time.Sleep(700 * time.Millisecond) // b holds and renews them: c gets nothing
	u, err = c.Unfinished(ctx)
	require.NoError(t, err)
	require.Empty(t, u)
	p, err := c.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p, "the claimed job's pending create is b's too")
	n, err := b.Renew(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)

	// Done with its outcome: the lease is released. Done but pending: kept.
	require.NoError(t, b.Advance(ctx, "key-1", step(safegen.JobDownloaded, safegen.StatusSucceeded)))
	require.NoError(t, b.Advance(ctx, "key-2", step(safegen.JobTerminal, safegen.StatusFailed)))
	require.Equal(t, "", owned(t, pool, ns, "job-1"))
	require.Equal(t, "worker-b", owned(t, pool, ns, "job-2"))
	n, err = b.Renew(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	u, err = b.Unfinished(ctx)
	require.NoError(t, err)
	require.Empty(t, u)
}

// Advance leases the intent to its caller when nobody live holds it, and
// leaves a live worker's lease alone.
func TestAdvanceLeases(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	lease := pgjournal.WithLease(200 * time.Millisecond)
	a := open(t, pool, pgjournal.WithNamespace(ns), lease, pgjournal.WithOwner("a"))
	b := open(t, pool, pgjournal.WithNamespace(ns), lease, pgjournal.WithOwner("b"))
	begin(t, a, jobIntent(1, step(safegen.JobStarted, "")), intent(2))
	require.NoError(t, a.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.NoError(t, a.Complete(ctx, "key-2", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.Equal(t, "", owned(t, pool, ns, "job-2"))

	accepted := step(safegen.JobAccepted, safegen.StatusQueued)
	require.NoError(t, b.Advance(ctx, "key-1", accepted))
	require.Equal(t, "a", owned(t, pool, ns, "job-1"), "a live worker's lease stays")
	require.NoError(t, b.Advance(ctx, "key-2", accepted))
	require.Equal(t, "b", owned(t, pool, ns, "job-2"), "a job given to a released intent is leased to its caller")
	_, live := leaseState(t, pool, ns, "job-2")
	require.True(t, live)

	require.NoError(t, a.Close())
	time.Sleep(250 * time.Millisecond)
	require.NoError(t, b.Advance(ctx, "key-1", step(safegen.JobTerminal, safegen.StatusSucceeded)))
	require.Equal(t, "b", owned(t, pool, ns, "job-1"), "an expired lease is taken by the Advance that finds it")
	got, err := b.Begin(ctx, intent(1))
	require.NoError(t, err)
	require.Equal(t, safegen.JobTerminal, got.Job.Step, "the last step, whoever recorded it")

	require.ErrorIs(t, b.Advance(ctx, "no-such-key", accepted), safegen.ErrIntentNotFound)
	other := open(t, pool)
	require.ErrorIs(t, other.Advance(ctx, "key-1", accepted), safegen.ErrIntentNotFound, "keys are per namespace")
}

// Workers claiming at once split a dead worker's unfinished jobs: each goes
// to exactly one of them.
func TestConcurrentUnfinishedClaimsDisjoint(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := pgjournal.WithNamespace(freshNamespace(t))
	dead := open(t, pool, ns, pgjournal.WithLease(30*time.Millisecond))
	const n = 120
	for i := range n {
		begin(t, dead, jobIntent(i, step(safegen.JobAccepted, safegen.StatusProcessing)))
		if i%2 == 0 {
			require.NoError(t, dead.Complete(ctx, intent(i).Key, safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
		}
	}
	require.NoError(t, dead.Close())
	time.Sleep(50 * time.Millisecond)

	const workers = 6
	got := make([]map[string]bool, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		j := open(t, pool, ns, pgjournal.WithLease(10*time.Second))
		got[w] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 3 {
				u, err := j.Unfinished(ctx)
				if err != nil {
					errs[w] = err
					return
				}
				for _, in := range u {
					got[w][in.ID] = true
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	for w := range workers {
		require.NoError(t, errs[w])
		for id := range got[w] {
			seen[id]++
		}
	}
	require.Len(t, seen, n, "every unfinished job is claimed")
	for id, k := range seen {
		require.Equal(t, 1, k, "%s claimed by %d workers", id, k)
	}
}

// Pruning never deletes an unfinished job, however old its outcome; a done
// job's retention runs from when it was done.
func TestPruneKeepsUnfinishedJobs(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const retention = 150 * time.Millisecond
	j := open(t, pool, pgjournal.WithRetention(retention), pgjournal.WithPruneInterval(time.Hour))
	begin(t, j, jobIntent(1, step(safegen.JobStarted, "")), intent(2))
	for _, key := range []string{"key-1", "key-2"} {
		require.NoError(t, j.Complete(ctx, key, safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	}
	time.Sleep(retention + 50*time.Millisecond)
	n, err := j.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the plain call goes")
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"job-1"}, ids(u), "the unfinished job stays")

	require.NoError(t, j.Advance(ctx, "key-1", step(safegen.JobDownloaded, safegen.StatusSucceeded)))
	n, err = j.Prune(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "done just now: within the retention")
	got, err := j.Begin(ctx, intent(1))
	require.NoError(t, err)
	require.Equal(t, safegen.JobDownloaded, got.Job.Step)
	require.Equal(t, 201, got.Outcome.StatusCode)
	time.Sleep(retention + 50*time.Millisecond)
	n, err = j.Prune(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.Zero(t, count(t, pool, j.Namespace()))
}
