package saferiver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/safegentest"
)

// riverJob is the job River hands a worker: the same id on every run.
func riverJob(id int64, prompt string) *river.Job[saferiver.GenerationArgs] {
	return &river.Job[saferiver.GenerationArgs]{JobRow: &rivertype.JobRow{ID: id}, Args: args(prompt)}
}

func snoozed(t *testing.T, err error) time.Duration {
	t.Helper()
	var s *river.JobSnoozeError
	require.ErrorAs(t, err, &s)
	return s.Duration
}

// TestRescueWaitsForResume: a worker dies while its job waits for the
// generation. River's rescue runs the job on another worker before the dead
// worker's lease has run out: it snoozes, touching nothing. Then a
// Client.Resume elsewhere takes the intent over (lease run out) and, while
// it drives it, the rescued job snoozes again. Once Resume has finished, the
// rescued job completes from the journal. One charge.
func TestRescueWaitsForResume(t *testing.T) {
	ctx := context.Background()
	pool := newDatabase(t)
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(10*time.Millisecond, 1500*time.Millisecond), safegentest.WithOutputSize(1024))
	dir := t.TempDir()
	dead := newNode(t, pool, srv, dir, "dead", 400*time.Millisecond)
	rescuer := newNode(t, pool, srv, dir, "rescuer", time.Minute)
	resumer := newNode(t, pool, srv, dir, "resumer", time.Minute)
	job := riverJob(42, "orphaned by a crash")

	// The first run dies mid-wait: its create was accepted and journaled.
	runCtx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	_, err := dead.client.Generations.Run(runCtx, &job.Args.GenerationCreateParams, dead.worker.OutputPath(job),
		safegen.WithIntentID(saferiver.IntentID(job.ID)))
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, dead.journal.Close()) // the process is gone: nobody renews its lease
	require.Equal(t, 1, srv.Ledger().Total())

	// River's rescue, before the lease ran out: snooze for what it has left.
	d := snoozed(t, rescuer.worker.Work(ctx, job))
	assert.LessOrEqual(t, d, 600*time.Millisecond)

	// Resume takes the orphan once the lease has run out, and drives it.
	require.Eventually(t, func() bool {
		_, live := leaseOf(t, pool, saferiver.IntentID(job.ID))
		return !live
	}, 5*time.Second, 10*time.Millisecond)
	var report *safegen.ResumeReport
	resumed := make(chan error, 1)
	go func() {
		var err error
		report, err = resumer.client.Resume(ctx)
		resumed <- err
	}()
	// While Resume drives it (it waits for the generation), River's run
	// snoozes: Resume holds the lease.
	require.Eventually(t, func() bool {
		owner, live := leaseOf(t, pool, saferiver.IntentID(job.ID))
		return live && owner == "resumer"
	}, 5*time.Second, 5*time.Millisecond)
	snoozed(t, rescuer.worker.Work(ctx, job))
	require.NoError(t, <-resumed)
	require.Len(t, report.Jobs, 1)
	assert.Equal(t, safegen.JobDownloaded, report.Jobs[0].Reached)
	require.NoError(t, report.Jobs[0].Err)

	// The next run of the job finds it done: nothing sent, nothing billed.
	creates := countCreates(srv)
	require.NoError(t, rescuer.worker.Work(ctx, job))
	assert.Equal(t, creates, countCreates(srv), "answered from the journal")
	assert.Equal(t, 1, srv.Ledger().Total(), "billed once")
	assert.Empty(t, srv.Ledger().Duplicates())
}

// TestResumeSkipsWhatRiverDrives: while a River run drives a job (its
// journal renews the lease), a Client.Resume elsewhere does not list it, and
// a second run of the same job (River rescued the first, which is alive)
// snoozes. The first run completes; one charge.
func TestResumeSkipsWhatRiverDrives(t *testing.T) {
	ctx := context.Background()
	pool := newDatabase(t)
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(10*time.Millisecond, 800*time.Millisecond), safegentest.WithOutputSize(1024))
	dir := t.TempDir()
	first := newNode(t, pool, srv, dir, "first", 300*time.Millisecond)
	second := newNode(t, pool, srv, dir, "second", time.Minute)
	resumer := newNode(t, pool, srv, dir, "resumer", time.Minute)
	job := riverJob(43, "driven by River")

	done := make(chan error, 1)
	go func() { done <- first.worker.Work(ctx, job) }()
	require.Eventually(t, func() bool { return srv.Ledger().Total() == 1 }, 5*time.Second, 5*time.Millisecond)
	// Past the first run's lease (300 ms): only its renewals keep it.
	leased := time.Now()
	require.Eventually(t, func() bool {
		owner, live := leaseOf(t, pool, saferiver.IntentID(job.ID))
		require.True(t, live, "the run's journal renews its lease")
		require.Equal(t, "first", owner)
		return time.Since(leased) > 400*time.Millisecond
	}, 5*time.Second, 20*time.Millisecond)

	report, err := resumer.client.Resume(ctx)
	require.NoError(t, err)
	assert.Empty(t, report.Jobs, "Resume leaves a job a live worker drives")
	snoozed(t, second.worker.Work(ctx, job))

	require.NoError(t, <-done)
	require.NoError(t, second.worker.Work(ctx, job), "done: answered from the journal")
	assert.Equal(t, 1, srv.Ledger().Total())
	assert.Equal(t, 1, countCreates(srv))
}

// TestFailedRunHandsTheJobOn: a run that fails with an error River retries
// releases its lease, so the retry takes the job at once on another worker
// and carries it on: no second create.
func TestFailedRunHandsTheJobOn(t *testing.T) {
	ctx := context.Background()
	pool := newDatabase(t)
	srv := fastServer(t)
	dir := t.TempDir()
	a := newNode(t, pool, srv, dir, "a", time.Minute)
	b := newNode(t, pool, srv, dir, "b", time.Minute)
	job := riverJob(44, "fails once")
	// Every output download fails with 503 past the Client's retries.
	for range 8 {
		srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Method: "GET"})
	}
	err := a.worker.Work(ctx, job)
	require.Error(t, err)
	var cancel *river.JobCancelError
	var snooze *river.JobSnoozeError
	require.False(t, errors.As(err, &cancel) || errors.As(err, &snooze), "returned for River to retry: %v", err)
	require.NoError(t, b.worker.Work(ctx, job), "the retry, on another worker, at once")
	assert.Equal(t, 1, srv.Ledger().Total())
	assert.Equal(t, 1, countCreates(srv))
}

// leaseOf returns who holds the intent's lease and whether it is live.
func leaseOf(t testing.TB, pool *pgxpool.Pool, intentID string) (owner string, live bool) {
	t.Helper()
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT coalesce(owner, ''), coalesce(lease_until > now(), false) FROM safegen_intents WHERE intent_id = $1`,
		intentID).Scan(&owner, &live))
	return owner, live
}

func countCreates(srv *safegentest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == "POST" && r.Path == "/v1/generations" {
			n++
		}
	}
	return n
}
