package pgjournal_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// fleetChildEnv makes the test binary run as one fleet worker (see
// fleetChild) instead of running tests; the fleet's settings travel in the
// other fleet* variables.
const (
	fleetChildEnv     = "SAFEGEN_PGJOURNAL_FLEET_CHILD" // worker index
	fleetURLEnv       = "SAFEGEN_PGJOURNAL_FLEET_URL"
	fleetKeyEnv       = "SAFEGEN_PGJOURNAL_FLEET_API_KEY"
	fleetNamespaceEnv = "SAFEGEN_PGJOURNAL_FLEET_NAMESPACE"
	fleetJobs         = 200
	fleetWorkers      = 4
	fleetLease        = time.Second
)

func fleetParams(i int) *safegen.GenerationCreateParams {
	return &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: fmt.Sprintf("fleet job %d", i)}
}

func fleetIntentID(i int) string { return fmt.Sprintf("job-%d", i) }

// Four worker processes share one PostgreSQL journal and 200 jobs against a
// faulty server; two are SIGKILLed mid-run. The survivors take over the dead
// workers' intents once their leases run out, and sweep the jobs nobody
// began. Every job is billed exactly once and none is lost.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	// Create the schema before the workers start (they would manage alone).
	j0, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(ns))
	require.NoError(t, err)
	require.NoError(t, j0.Close())

	srv := safegentest.Start(safegentest.WithRateLimit(0, 0),
		safegentest.WithFaultRates(safegentest.FaultRates{Status503: 0.1, DropAfterCommit: 0.05, Reset: 0.05}, 7))
	t.Cleanup(srv.Close)

	type worker struct {
		cmd *exec.Cmd
		out strings.Builder
		err error
	}
	workers := make([]*worker, fleetWorkers)
	var wg sync.WaitGroup
	for w := range fleetWorkers {
		wk := &worker{cmd: exec.Command(os.Args[0], "-test.run=^$")}
		wk.cmd.Env = append(os.Environ(),
			fleetChildEnv+"="+strconv.Itoa(w), fleetURLEnv+"="+srv.URL,
			fleetKeyEnv+"="+srv.APIKey, fleetNamespaceEnv+"="+ns)
		wk.cmd.Stdout, wk.cmd.Stderr = &wk.out, &wk.out
		require.NoError(t, wk.cmd.Start())
		workers[w] = wk
		wg.Add(1)
		go func() { defer wg.Done(); wk.err = wk.cmd.Wait() }()
	}
	t.Cleanup(func() {
		for _, wk := range workers {
			_ = wk.cmd.Process.Kill()
		}
		wg.Wait()
	})

	// Kill workers 0 and 1 mid-run, while they hold leases.
	done := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx,
			`SELECT count(*) FROM safegen_intents WHERE namespace = $1 AND done_at IS NOT NULL`, ns).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return done() >= fleetJobs/5 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, workers[0].cmd.Process.Kill())
	require.NoError(t, workers[1].cmd.Process.Kill())
	// What the dead held: pending under their leases, for a survivor's
	// Resume to take over once the leases run out.
	var orphans []string
	rows, err := pool.Query(ctx, `SELECT intent_id FROM safegen_intents WHERE namespace = $1
		AND done_at IS NULL AND (owner LIKE 'worker-0-%' OR owner LIKE 'worker-1-%')`, ns)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		orphans = append(orphans, id)
	}
	require.NoError(t, rows.Err())
	n := done()
	require.Less(t, n, fleetJobs, "killed mid-run")
	t.Logf("killed workers 0 and 1 with %d/%d jobs done, holding %v", n, fleetJobs, orphans)

	wg.Wait()
	for w, wk := range workers {
		if w < 2 {
			require.Error(t, wk.err, "worker %d was killed", w)
			continue
		}
		require.NoError(t, wk.err, "worker %d:\n%s", w, wk.out.String())
		t.Log(strings.TrimSpace(wk.out.String()))
	}

	// The ledger: every job billed exactly once.
	l := srv.Ledger()
	assert.Equal(t, fleetJobs, l.Total(), "charges")
	assert.Empty(t, l.Duplicates())

	// The journal: every job has a completed intent with a 2xx outcome, under
	// the key the server billed.
	rows, err = pool.Query(ctx, `SELECT intent_id, key, coalesce(status, 0), done_at IS NOT NULL
		FROM safegen_intents WHERE namespace = $1`, ns)
	require.NoError(t, err)
	byKey := l.ByIdempotencyKey()
	seen := map[string]bool{}
	for rows.Next() {
		var id, key string
		var status int
		var completed bool
		require.NoError(t, rows.Scan(&id, &key, &status, &completed))
		seen[id] = true
		assert.True(t, completed, "%s is completed", id)
		assert.True(t, status >= 200 && status <= 299, "%s: status %d", id, status)
		assert.Equal(t, 1, byKey[key], "%s (key %s) billed once", id, key)
	}
	require.NoError(t, rows.Err())
	for i := range fleetJobs {
		assert.True(t, seen[fleetIntentID(i)], "job %d is in the journal", i)
	}
	// The dead workers' in-flight intents were finished by a survivor.
	for _, id := range orphans {
		var completed bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT done_at IS NOT NULL FROM safegen_intents
			WHERE namespace = $1 AND intent_id = $2`, ns, id).Scan(&completed))
		assert.True(t, completed, "orphan %s completed", id)
	}
}

// fleetChild is one worker of TestFleet: it sends its share of the jobs
// (job index mod workers), running Resume between jobs so that it finishes
// what dead workers left pending, then keeps resuming and sweeping the jobs
// nobody began until every job is completed. It exits 0 when all are done.
func fleetChild() int {
	w, _ := strconv.Atoi(os.Getenv(fleetChildEnv))
	ns := os.Getenv(fleetNamespaceEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	fail := func(format string, args ...any) int {
		fmt.Printf("worker %d: "+format+"\n", append([]any{w}, args...)...)
		return 1
	}
	pool, err := pgxpool.New(ctx, os.Getenv(dsnEnv))
	if err != nil {
		return fail("pool: %v", err)
	}
	defer pool.Close()
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(ns), pgjournal.WithLease(fleetLease),
		pgjournal.WithOwner(fmt.Sprintf("worker-%d-pid-%d", w, os.Getpid())))
	if err != nil {
		return fail("journal: %v", err)
	}
	defer j.Close()
	c, err := safegen.NewClient(os.Getenv(fleetKeyEnv), safegen.WithBaseURL(os.Getenv(fleetURLEnv)),
		safegen.WithJournal(j), safegen.WithBackoff(time.Millisecond, 2, 20*time.Millisecond))
	if err != nil {
		return fail("client: %v", err)
	}
	var created, resumed, swept, failed int
	create := func(i int) {
		if _, err := c.Generations.Create(ctx, fleetParams(i), safegen.WithIntentID(fleetIntentID(i))); err != nil {
			failed++ // left pending: a Resume (ours or another's) finishes it
		}
	}
	resume := func() {
		r, err := c.Resume(ctx)
		if r != nil {
			resumed += len(r.Completed)
		}
		_ = err
	}
	for i := w; i < fleetJobs; i += fleetWorkers {
		create(i)
		created++
		if created%10 == 0 {
			resume()
		}
	}
	for ctx.Err() == nil {
		resume()
		missing, pending, err := fleetStatus(ctx, pool, ns)
		if err != nil {
			return fail("status: %v", err)
		}
		if len(missing) == 0 && pending == 0 {
			fmt.Printf("worker %d: created %d, resumed %d, swept %d, failed attempts %d\n", w, created, resumed, swept, failed)
			return 0
		}
		// Jobs nobody began (their worker died first): begin and send them.
		// Two survivors may race on one: they send the same key and bytes.
		for _, i := range missing {
			create(i)
			swept++
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fail("gave up: %v", ctx.Err())
}

// fleetStatus returns the jobs with no intent yet and the number of pending
// intents.
func fleetStatus(ctx context.Context, pool *pgxpool.Pool, ns string) ([]int, int, error) {
	rows, err := pool.Query(ctx, `SELECT intent_id, done_at IS NULL FROM safegen_intents WHERE namespace = $1`, ns)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	have := map[string]bool{}
	pending := 0
	for rows.Next() {
		var id string
		var p bool
		if err := rows.Scan(&id, &p); err != nil {
			return nil, 0, err
		}
		have[id] = true
		if p {
			pending++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	var missing []int
	for i := range fleetJobs {
		if !have[fleetIntentID(i)] {
			missing = append(missing, i)
		}
	}
	return missing, pending, nil
}
