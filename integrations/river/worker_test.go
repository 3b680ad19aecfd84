package saferiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// node is one worker process's parts: a journal with its own owner id, a
// Client over it, and the Worker; nodes of one test share the database, the
// fake API and the output directory.
type node struct {
	journal *pgjournal.Journal
	client  *safegen.Client
	worker  *saferiver.Worker
}

func newNode(t testing.TB, pool *pgxpool.Pool, srv *safegentest.Server, dir, owner string, lease time.Duration) *node {
	t.Helper()
	j := newJournal(t, pool, owner, lease)
	c := newClient(t, srv, j)
	w, err := saferiver.NewWorker(c, j, saferiver.WithOutputDir(dir))
	require.NoError(t, err)
	return &node{journal: j, client: c, worker: w}
}

func fastServer(t testing.TB, opts ...safegentest.Option) *safegentest.Server {
	return safegentest.NewServer(t, append([]safegentest.Option{safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(5*time.Millisecond, 10*time.Millisecond), safegentest.WithOutputSize(1024)}, opts...)...)
}

func args(prompt string) saferiver.GenerationArgs {
	return saferiver.GenerationArgs{GenerationCreateParams: safegen.GenerationCreateParams{Model: "img-2", Prompt: prompt}}
}

// TestWorkerRunsAJobEnqueuedInATransaction: the application enqueues with
// InsertTx beside its own row; a job whose transaction rolls back is never
// worked, never sent.
func TestWorkerRunsAJobEnqueuedInATransaction(t *testing.T) {
	ctx := context.Background()
	pool := newDatabase(t)
	srv := fastServer(t)
	dir := t.TempDir()
	n := newNode(t, pool, srv, dir, "w1", time.Minute)
	workers := river.NewWorkers()
	river.AddWorker(workers, n.worker)
	rc := startRiver(t, pool, river.QueueDefault, workers)
	_, err := pool.Exec(ctx, `CREATE TABLE orders (id integer PRIMARY KEY, prompt text NOT NULL)`)
	require.NoError(t, err)

	var jobID int64
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders VALUES (1, 'a red fox in snow')`); err != nil {
			return err
		}
		res, err := rc.InsertTx(ctx, tx, args("a red fox in snow"), nil)
		if err == nil {
			jobID = res.Job.ID
		}
		return err
	}))
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO orders VALUES (2, 'never sent')`)
	require.NoError(t, err)
	_, err = rc.InsertTx(ctx, tx, args("never sent"), nil)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	waitState(t, pool, jobID, "completed")
	_, out := jobState(t, pool, jobID)
	var o saferiver.Output
	require.NoError(t, json.Unmarshal([]byte(out), &o))
	assert.Equal(t, saferiver.IntentID(jobID), o.IntentID)
	assert.Equal(t, filepath.Join(dir, saferiver.IntentID(jobID)), o.Path, "no Output: named after the intent")
	b, err := os.ReadFile(o.Path)
	require.NoError(t, err)
	assert.Len(t, b, 1024)
	assert.Equal(t, int64(1024), o.Size)

	l := srv.Ledger()
	require.Equal(t, 1, l.Total())
	assert.Equal(t, o.GenerationID, l.Charges[0].GenerationID)
	var rows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&rows))
	assert.Equal(t, 1, rows, "the rolled-back job never existed")
	for _, r := range srv.Requests() {
		assert.NotContains(t, string(r.Body), "never sent")
	}
}

func TestWorkCancelsWhatNoRetryCanChange(t *testing.T) {
	pool := newDatabase(t)
	srv := fastServer(t, safegentest.WithCredits(0))
	n := newNode(t, pool, srv, t.TempDir(), "w1", time.Minute)
	workers := river.NewWorkers()
	river.AddWorker(workers, n.worker)
	rc := startRiver(t, pool, river.QueueDefault, workers)
	res, err := rc.Insert(context.Background(), args("no credits left"), nil)
	require.NoError(t, err)
	waitState(t, pool, res.Job.ID, "cancelled")
	assert.Zero(t, srv.Ledger().Total())
	assert.Len(t, srv.Requests(), 1, "refused once, not retried")
}

func TestWorkSnoozesALongRetryAfter(t *testing.T) {
	pool := newDatabase(t)
	srv := fastServer(t)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultRateLimit, Method: http.MethodPost, Path: "/v1/generations",
		Code: "anomaly_paused", RetryAfter: "1800"})
	n := newNode(t, pool, srv, t.TempDir(), "w1", time.Minute)
	workers := river.NewWorkers()
	river.AddWorker(workers, n.worker)
	rc := startRiver(t, pool, river.QueueDefault, workers)
	res, err := rc.Insert(context.Background(), args("paused"), nil)
	require.NoError(t, err)
	waitState(t, pool, res.Job.ID, "scheduled")
	var wait time.Duration
	var attempt int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT (extract(epoch FROM scheduled_at - now()) * 1000000)::bigint * 1000, attempt FROM river_job WHERE id = $1`,
		res.Job.ID).Scan(&wait, &attempt))
	assert.InDelta(t, float64(30*time.Minute), float64(wait), float64(4*time.Minute), "snoozed for the Retry-After (plus up to a tenth)")
	// The snoozed run released the intent: any worker may take it later.
	other := newJournal(t, pool, "w2", time.Minute)
	l, err := other.Acquire(context.Background(), saferiver.IntentID(res.Job.ID))
	require.NoError(t, err)
	assert.True(t, l.Held)
}

func TestMapError(t *testing.T) {
	apiErr := func(status int, code string, ra time.Duration) error {
		return &safegen.APIError{StatusCode: status, Code: code, RetryAfter: ra}
	}
	spend := errors.New("spend limit reached")
	for _, tc := range []struct {
		name   string
		err    error
		want   string // "nil", "cancel", "snooze", "retry"
		snooze time.Duration
	}{
		{"nil", nil, "nil", 0},
		{"key reuse", apiErr(409, "idempotency_key_reuse", 0), "cancel", 0},
		{"quota spent", apiErr(429, "quota_exceeded", 0), "cancel", 0},
		{"insufficient credits", apiErr(402, "insufficient_credits", 0), "cancel", 0},
		{"invalid request", apiErr(422, "model_input_invalid", 0), "cancel", 0},
		{"generation failed", &safegen.JobError{Step: safegen.JobTerminal, Err: safegen.ErrGenerationFailed,
			Generation: &safegen.Generation{ID: "gen_1", Status: safegen.StatusFailed}}, "cancel", 0},
		{"intent expired", fmt.Errorf("resume: %w", safegen.ErrIntentExpired), "cancel", 0},
		{"the caller's own", fmt.Errorf("wrapped: %w", spend), "cancel", 0},
		{"spend limit", &safegen.JobError{Step: safegen.JobStarted, Err: &safegen.SpendLimitError{Limit: 10, Spent: 9, Requested: 12}}, "cancel", 0},
		{"long Retry-After", &safegen.JobError{Step: safegen.JobStarted, Err: apiErr(429, "anomaly_paused", 30*time.Minute)}, "snooze", 30 * time.Minute},
		{"429 past its retries", apiErr(429, "rate_limit_exceeded", 2*time.Second), "snooze", 2 * time.Second},
		{"429 without a wait", apiErr(429, "rate_limit_exceeded", 0), "snooze", time.Minute},
		{"server error", apiErr(503, "service_unavailable", 0), "retry", 0},
		{"in progress", apiErr(409, "request_in_progress", 0), "retry", 0},
		{"timeout", &safegen.JobError{Step: safegen.JobAccepted, Err: context.DeadlineExceeded}, "retry", 0},
		{"corrupt output", fmt.Errorf("download: %w", safegen.ErrOutputCorrupt), "retry", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := saferiver.MapError(tc.err, spend)
			var cancel *river.JobCancelError
			var snooze *river.JobSnoozeError
			switch tc.want {
			case "nil":
				assert.NoError(t, got)
			case "cancel":
				require.ErrorAs(t, got, &cancel)
				assert.ErrorIs(t, got, tc.err, "the cause stays reachable")
			case "snooze":
				require.ErrorAs(t, got, &snooze)
				assert.GreaterOrEqual(t, snooze.Duration, tc.snooze)
				assert.LessOrEqual(t, snooze.Duration, tc.snooze+tc.snooze/10)
			case "retry":
				assert.Same(t, tc.err, got)
			}
		})
	}
}

func TestNewWorkerValidates(t *testing.T) {
	_, err := saferiver.NewWorker(nil, nil)
	require.Error(t, err)
	pool := newDatabase(t)
	srv := fastServer(t)
	j := newJournal(t, pool, "w1", time.Minute)
	c := newClient(t, srv, j)
	for _, o := range []saferiver.Option{saferiver.WithOutputDir(""), saferiver.WithTimeout(-1), saferiver.WithLogger(nil)} {
		_, err := saferiver.NewWorker(c, j, o)
		require.Error(t, err)
	}
	w, err := saferiver.NewWorker(c, j, saferiver.WithTimeout(time.Minute), saferiver.WithOutputDir("/data"))
	require.NoError(t, err)
	job := &river.Job[saferiver.GenerationArgs]{JobRow: &rivertype.JobRow{ID: 7}, Args: args("x")}
	assert.Equal(t, time.Minute, w.Timeout(job))
	assert.Equal(t, "/data/river-job-7", w.OutputPath(job))
	job.Args.Output = "videos/fox.mp4"
	assert.Equal(t, "/data/videos/fox.mp4", w.OutputPath(job))
	job.Args.Output = "/elsewhere/fox.mp4"
	assert.Equal(t, "/elsewhere/fox.mp4", w.OutputPath(job))
	assert.Equal(t, saferiver.Kind, job.Args.Kind())
	b, err := json.Marshal(job.Args)
	require.NoError(t, err)
	assert.True(t, bytes.Contains(b, []byte(`"model":"img-2"`)), "the params are flat in the job's JSON: %s", b)
}
