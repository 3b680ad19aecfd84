package pgjournal_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// spendChildEnv makes the test binary run as one worker of a spend fleet
// (see spendChild): "reserve" or "client". Its settings travel in the
// fleet* variables and spendLimitEnv.
const (
	spendChildEnv  = "SAFEGEN_PGJOURNAL_SPEND_CHILD"
	spendWorkerEnv = "SAFEGEN_PGJOURNAL_SPEND_WORKER"
	spendLimitEnv  = "SAFEGEN_PGJOURNAL_SPEND_LIMIT"
	spendJobs      = 160
)

// spendWorker is one child process of a spend fleet.
type spendWorker struct {
	cmd  *exec.Cmd
	out  strings.Builder
	err  error
	done chan struct{}
}

// startSpendWorker starts worker w of a spend fleet in mode.
func startSpendWorker(t *testing.T, mode string, w int, ns string, limit float64, srv *safegentest.Server) *spendWorker {
	t.Helper()
	wk := &spendWorker{cmd: exec.Command(os.Args[0], "-test.run=^$"), done: make(chan struct{})}
	wk.cmd.Env = append(os.Environ(), spendChildEnv+"="+mode,
		spendWorkerEnv+"="+strconv.Itoa(w), fleetNamespaceEnv+"="+ns,
		spendLimitEnv+"="+strconv.FormatFloat(limit, 'g', -1, 64))
	if srv != nil {
		wk.cmd.Env = append(wk.cmd.Env, fleetURLEnv+"="+srv.URL, fleetKeyEnv+"="+srv.APIKey)
	}
	wk.cmd.Stdout, wk.cmd.Stderr = &wk.out, &wk.out
	require.NoError(t, wk.cmd.Start())
	go func() { defer close(wk.done); wk.err = wk.cmd.Wait() }()
	t.Cleanup(func() {
		_ = wk.cmd.Process.Kill()
		<-wk.done
	})
	return wk
}

func (wk *spendWorker) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-wk.done:
	case <-time.After(d):
		t.Fatalf("worker still running after %v", d)
	}
}

func totals(t testing.TB, pool *pgxpool.Pool, ns string) (spent, reserved float64) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT spent, reserved FROM safegen_spend_totals WHERE namespace = $1`,
		ns).Scan(&spent, &reserved)
	if err != nil {
		return 0, 0 // no row yet
	}
	return spent, reserved
}

// Four worker processes reserve and settle on one namespace against one
// limit, all at once; two are SIGKILLed mid-run, between a reserve and its
// settle for all they know. At no moment the parent looks, nor at the end,
// do spent and reserved together pass the limit, and the totals row always
// agrees with the key rows.
func TestFleetSpendReserve(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	pool := newPool(t)
	ns := freshNamespace(t)
	j0, err := pgjournal.New(context.Background(), pool, pgjournal.WithNamespace(ns))
	require.NoError(t, err)
	require.NoError(t, j0.Close())
	const limit = 500.5
	workers := make([]*spendWorker, fleetWorkers)
	for w := range workers {
		workers[w] = startSpendWorker(t, "reserve", w, ns, limit, nil)
	}
	highest, samples := 0.0, 0
	sample := func() {
		spent, reserved := totals(t, pool, ns)
		highest = max(highest, spent+reserved)
		samples++
	}
	rows := func() int {
		var n int
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM safegen_spend WHERE namespace = $1`, ns).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { sample(); return rows() >= 60 }, 20*time.Second, time.Millisecond)
	require.NoError(t, workers[0].cmd.Process.Kill())
	require.NoError(t, workers[1].cmd.Process.Kill())
	t.Logf("killed workers 0 and 1 with %d keys reserved or charged", rows())
	for running := true; running; {
		sample()
		running = false
		for _, wk := range workers[2:] {
			select {
			case <-wk.done:
			default:
				running = true
			}
		}
		time.Sleep(time.Millisecond)
	}
	for w, wk := range workers {
		if w < 2 {
			wk.wait(t, 10*time.Second)
			require.Error(t, wk.err, "worker %d was killed", w)
			continue
		}
		require.NoError(t, wk.err, "worker %d:\n%s", w, wk.out.String())
		t.Log(strings.TrimSpace(wk.out.String()))
	}
	sample()
	spent, reserved := requireConsistent(t, pool, ns)
	t.Logf("limit %v: spent %v, reserved %v; highest of %d samples %v", limit, spent, reserved, samples, highest)
	assert.LessOrEqual(t, spent+reserved, limit)
	assert.LessOrEqual(t, highest, limit)
	var perKey float64
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT coalesce(sum(reserved + charged), 0) FROM safegen_spend WHERE namespace = $1`, ns).Scan(&perKey))
	assert.LessOrEqual(t, perKey, limit)
	for _, w := range []int{0, 1} {
		var n int
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM safegen_spend WHERE namespace = $1 AND key LIKE $2`,
			ns, fmt.Sprintf("w%d-%%", w)).Scan(&n))
		assert.Positive(t, n, "worker %d reserved before it was killed", w)
	}
}

// spendPrice is what key i of a reserve worker asks: 1.25 to 5.25 credits.
func spendPrice(i int) float64 { return 1.25 + float64(i*7%5) }

// spendReserveChild reserves keys w0-0, w0-1, ... and settles each to its
// price, half of it, 0 (a refund) or not at all (an unknown outcome).
func spendReserveChild(w int, ns string, limit float64) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv(dsnEnv))
	if err != nil {
		fmt.Println("pool:", err)
		return 1
	}
	defer pool.Close()
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(ns))
	if err != nil {
		fmt.Println("journal:", err)
		return 1
	}
	defer j.Close()
	var accepted, refused int
	for i := range 400 {
		key := fmt.Sprintf("w%d-%d", w, i)
		price := spendPrice(i)
		rep, err := j.Reserve(ctx, key, price, limit)
		if errors.Is(err, safegen.ErrSpendLimit) {
			refused++
			continue
		}
		if err == nil && rep.Spent+rep.Reserved > limit {
			err = fmt.Errorf("accepted past the limit: %+v", rep)
		}
		if err != nil {
			fmt.Printf("worker %d: reserve %s: %v\n", w, key, err)
			return 1
		}
		accepted++
		time.Sleep(time.Millisecond) // the call
		var charged float64
		switch i % 4 {
		case 0:
			continue
		case 1:
			charged = 0
		case 2:
			charged = price
		default:
			charged = price / 2
		}
		if _, err := j.Settle(ctx, key, charged); err != nil {
			fmt.Printf("worker %d: settle %s: %v\n", w, key, err)
			return 1
		}
	}
	fmt.Printf("worker %d: accepted %d, refused %d\n", w, accepted, refused)
	return 0
}

func spendParams(i int) *safegen.GenerationCreateParams {
	// 2 to 6 seconds of video at 3 credits a second: 6 to 18 credits.
	return &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: fmt.Sprintf("spend job %d", i), DurationS: 2 + i%5}
}

func spendIntentID(i int) string { return fmt.Sprintf("spend-job-%d", i) }

// Four worker processes, each a Client with WithSpendLimit and the
// PostgreSQL journal on one namespace, create their share of 160 jobs
// (1,920 credits of work) against a faulty server under a limit of 1,000;
// two are SIGKILLed mid-run and started again, and Resume learns what their
// calls did. The server charges no more than the limit, every charge once,
// and once no outcome is unknown it has charged all but less than one
// price of it.
func TestFleetSpendLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	j0, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(ns))
	require.NoError(t, err)
	require.NoError(t, j0.Close())
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0),
		safegentest.WithFaultRates(safegentest.FaultRates{Status503: 0.1, DropAfterCommit: 0.08, Reset: 0.05,
			Latency: 0.3, LatencyDur: 15 * time.Millisecond}, 11))
	t.Cleanup(srv.Close)
	const limit, maxPrice = 1000.0, 18.0

	workers := make([]*spendWorker, fleetWorkers)
	for w := range workers {
		workers[w] = startSpendWorker(t, "client", w, ns, limit, srv)
	}
	credits := func() float64 { return float64(srv.Ledger().Credits(srv.APIKey)) }
	require.Eventually(t, func() bool { return credits() >= 300 }, 30*time.Second, time.Millisecond)
	require.NoError(t, workers[0].cmd.Process.Kill())
	require.NoError(t, workers[1].cmd.Process.Kill())
	spent, reserved := totals(t, pool, ns)
	t.Logf("killed workers 0 and 1 with %v credits charged by the server; journal: spent %v, reserved %v", credits(), spent, reserved)
	for _, w := range []int{0, 1} {
		workers[w].wait(t, 10*time.Second)
		require.Error(t, workers[w].err, "worker %d was killed", w)
		workers[w] = startSpendWorker(t, "client", w, ns, limit, srv)
	}
	for w, wk := range workers {
		wk.wait(t, 60*time.Second)
		require.NoError(t, wk.err, "worker %d:\n%s", w, wk.out.String())
		t.Log(strings.TrimSpace(wk.out.String()))
	}

	charged := credits()
	spent, reserved = requireConsistent(t, pool, ns)
	// The Client settles before it records the outcome, so a worker killed
	// between the two leaves the intent pending and Resume settles it: no
	// answered call keeps its reservation.
	var stranded float64
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(sum(s.reserved), 0) FROM safegen_spend s
		JOIN safegen_intents i ON i.namespace = s.namespace AND i.key = s.key
		WHERE s.namespace = $1 AND NOT s.settled AND i.done_at IS NOT NULL`, ns).Scan(&stranded))
	t.Logf("limit %v: the server charged %v (%d charges, %v refunded); journal: spent %v, reserved %v (%v of it for calls answered but never settled)",
		limit, charged, srv.Ledger().Total(), srv.Ledger().Refunded(srv.APIKey), spent, reserved, stranded)
	assert.LessOrEqual(t, charged, limit, "the server never charged past the limit")
	assert.Empty(t, srv.Ledger().Duplicates())
	assert.Zero(t, stranded, "no answered call keeps its reservation")
	assert.InDelta(t, 0, reserved, 1e-9, "no outcome left unknown")
	assert.InDelta(t, charged, spent, 1e-9, "the journal's book matches the server's")
	assert.Greater(t, charged, limit-maxPrice, "the budget is not wasted")
}

// spendClientChild is one worker of TestFleetSpendLimit: it creates its
// share of the jobs (job index mod workers) with a spend limit, running
// Resume every ten jobs, then keeps resuming until no call of the
// namespace holds a reservation with its outcome unknown and its own
// Resume can send nothing more (what is left does not fit).
func spendClientChild(w int, ns string, limit float64) int {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
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
		safegen.WithJournal(j), safegen.WithSpendLimit(limit), safegen.WithBackoff(time.Millisecond, 2, 20*time.Millisecond))
	if err != nil {
		return fail("client: %v", err)
	}
	var created, refused, failed, resumed int
	resume := func() (idle bool) {
		r, _ := c.Resume(ctx)
		if r == nil {
			return false
		}
		resumed += len(r.Completed)
		for _, f := range r.Failed {
			if !errors.Is(f.Err, safegen.ErrSpendLimit) {
				return false
			}
		}
		return len(r.Completed) == 0
	}
	for i := w; i < spendJobs; i += fleetWorkers {
		_, err := c.Generations.Create(ctx, spendParams(i), safegen.WithIntentID(spendIntentID(i)))
		switch {
		case err == nil:
			created++
		case errors.Is(err, safegen.ErrSpendLimit):
			refused++
		default:
			failed++ // left pending: a Resume (ours or another's) finishes it
		}
		if (created+refused+failed)%10 == 0 {
			resume()
		}
	}
	for ctx.Err() == nil {
		idle := resume()
		var unknown int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM safegen_spend s
			JOIN safegen_intents i ON i.namespace = s.namespace AND i.key = s.key
			WHERE s.namespace = $1 AND NOT s.settled AND i.done_at IS NULL`, ns).Scan(&unknown); err != nil {
			return fail("status: %v", err)
		}
		if idle && unknown == 0 {
			rep := c.Spend()
			fmt.Printf("worker %d: created %d, refused %d, failed attempts %d, resumed %d; spend %+v\n",
				w, created, refused, failed, resumed, rep)
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fail("gave up: %v", ctx.Err())
}

// spendChild runs the spend fleet worker the environment names.
func spendChild() int {
	w, _ := strconv.Atoi(os.Getenv(spendWorkerEnv))
	ns := os.Getenv(fleetNamespaceEnv)
	limit, err := strconv.ParseFloat(os.Getenv(spendLimitEnv), 64)
	if err != nil {
		fmt.Println("limit:", err)
		return 1
	}
	switch os.Getenv(spendChildEnv) {
	case "reserve":
		return spendReserveChild(w, ns, limit)
	case "client":
		return spendClientChild(w, ns, limit)
	}
	fmt.Println("unknown spend child mode")
	return 1
}
