package journaltest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// RunJobs runs the conformance suite of safegen.JobJournal against the
// journals open returns, each fresh and empty, as Run does. Run calls it
// for journals that implement JobJournal.
func RunJobs(t *testing.T, open func(t *testing.T) safegen.JobJournal) {
	t.Helper()
	runCases(t, open, []namedCase[safegen.JobJournal]{
		{"BeginRecordsJob", testJobBegin},
		{"AdvanceThroughSteps", testJobSteps},
		{"TerminalDone", testJobTerminalDone},
		{"AdvanceUnknown", testJobAdvanceUnknown},
		{"UnfinishedWithOutcome", testJobWithOutcome},
		{"AdvanceWithoutJob", testJobAdvanceWithoutJob},
		{"UnfinishedOrder", testJobOrder},
		{"NoAliasing", testJobNoAliasing},
		{"Concurrent", testJobConcurrent},
	})
}

func started(path string) safegen.Job {
	return safegen.Job{Step: safegen.JobStarted, Path: path, UpdatedAt: t0}
}

func jobIntent(id string, job safegen.Job) safegen.Intent {
	in := intent(id, "key-"+id, []byte(`{"prompt":"`+id+`"}`))
	in.Job = &job
	return in
}

// requireJob checks that got records want (times to the microsecond, what
// every journal keeps).
func requireJob(t *testing.T, want *safegen.Job, got *safegen.Job) {
	t.Helper()
	if want == nil {
		require.Nil(t, got, "job")
		return
	}
	require.NotNil(t, got, "job")
	w, g := *want, *got
	require.True(t, w.UpdatedAt.Equal(g.UpdatedAt), "updated at: want %v, got %v", w.UpdatedAt, g.UpdatedAt)
	w.UpdatedAt, g.UpdatedAt = time.Time{}, time.Time{}
	require.Equal(t, w, g)
}

// recorded returns the intent the journal holds under in.ID.
func recorded(t *testing.T, j safegen.JobJournal, in safegen.Intent) safegen.Intent {
	t.Helper()
	probe := intent(in.ID, "probe-"+in.ID, []byte("probe"))
	got, err := j.Begin(context.Background(), probe)
	require.NoError(t, err)
	require.Equal(t, in.Key, got.Key, "the intent is recorded")
	return got
}

func unfinishedIDs(t *testing.T, j safegen.JobJournal) []string {
	t.Helper()
	u, err := j.Unfinished(context.Background())
	require.NoError(t, err)
	ids := []string{}
	for _, in := range u {
		require.NotNil(t, in.Job, "%s is listed without its job", in.ID)
		require.False(t, in.Job.Done(), "%s is listed with a done job", in.ID)
		ids = append(ids, in.ID)
	}
	return ids
}

func testJobBegin(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	in := jobIntent("run-1", started("out/fox.mp4"))
	got, err := j.Begin(ctx, in)
	require.NoError(t, err)
	requireSame(t, in, got)
	requireJob(t, in.Job, got.Job)
	plain := intent("plain", "key-plain", []byte("plain"))
	_, err = j.Begin(ctx, plain)
	require.NoError(t, err)

	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 1, "a plain call is no job")
	requireSame(t, in, u[0])
	requireJob(t, in.Job, u[0].Job)
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Len(t, p, 2, "a job's create is pending like any call")
	requireJob(t, in.Job, recorded(t, j, in).Job)
	require.Nil(t, recorded(t, j, plain).Job)

	// A job begun done (nothing left to do) is not unfinished.
	done := jobIntent("run-done", safegen.Job{Step: safegen.JobDownloaded, Path: "out/done.mp4", Size: 1, SHA256: "ab", UpdatedAt: t0})
	_, err = j.Begin(ctx, done)
	require.NoError(t, err)
	require.Equal(t, []string{"run-1"}, unfinishedIDs(t, j))
}

func testJobSteps(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	in := jobIntent("run-1", started("out/fox.mp4"))
	_, err := j.Begin(ctx, in)
	require.NoError(t, err)
	for i, tc := range []struct {
		job        safegen.Job
		complete   bool // record the create's outcome before this step
		unfinished bool
	}{
		{safegen.Job{Step: safegen.JobAccepted, Path: "out/fox.mp4", GenerationID: "gen_1", Status: safegen.StatusQueued, UpdatedAt: t0.Add(time.Second)}, true, true},
		{safegen.Job{Step: safegen.JobAccepted, Path: "out/fox.mp4", GenerationID: "gen_1", Status: safegen.StatusProcessing, UpdatedAt: t0.Add(2 * time.Second)}, false, true},
		{safegen.Job{Step: safegen.JobTerminal, Path: "out/fox.mp4", GenerationID: "gen_1", Status: safegen.StatusSucceeded, UpdatedAt: t0.Add(time.Hour)}, false, true},
		{safegen.Job{Step: safegen.JobDownloaded, Path: "out/fox.mp4", GenerationID: "gen_1", Status: safegen.StatusSucceeded,
			Size: 1 << 30, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", UpdatedAt: t0.Add(time.Hour + 1500*time.Microsecond)}, false, false},
	} {
		name := fmt.Sprintf("step %d (%s)", i, tc.job.Step)
		if tc.complete {
			require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_1"}`), CompletedAt: t0}), name)
		}
		require.NoError(t, j.Advance(ctx, in.Key, tc.job), name)
		got := recorded(t, j, in)
		requireJob(t, &tc.job, got.Job)
		require.NotNil(t, got.Outcome, "%s: the outcome stays", name)
		want := []string{}
		if tc.unfinished {
			want = []string{"run-1"}
		}
		require.Equal(t, want, unfinishedIDs(t, j), name)
	}
}

func testJobTerminalDone(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	cases := []struct {
		status safegen.GenerationStatus
		done   bool
	}{
		{safegen.StatusFailed, true},
		{safegen.StatusCanceled, true},
		{safegen.StatusSucceeded, false}, // its output is still to download
	}
	for _, tc := range cases {
		in := jobIntent(string(tc.status), started("out/"+string(tc.status)))
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
		job := safegen.Job{Step: safegen.JobTerminal, Path: in.Job.Path, GenerationID: "gen_" + in.ID, Status: tc.status, UpdatedAt: t0}
		require.Equal(t, tc.done, job.Done())
		require.NoError(t, j.Advance(ctx, in.Key, job))
		requireJob(t, &job, recorded(t, j, in).Job)
	}
	require.Equal(t, []string{"succeeded"}, unfinishedIDs(t, j))
}

func testJobAdvanceUnknown(t *testing.T, j safegen.JobJournal) {
	err := j.Advance(context.Background(), "no-such-key", started("out/x"))
	require.ErrorIs(t, err, safegen.ErrIntentNotFound)
	require.Empty(t, unfinishedIDs(t, j))
	p, err := j.Pending(context.Background())
	require.NoError(t, err)
	require.Empty(t, p, "an Advance on an unknown key records nothing")
}

// A job whose create has its outcome is still unfinished until its output is
// on disk: Unfinished lists it, Pending does not.
func testJobWithOutcome(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	in := jobIntent("run-1", started("out/fox.mp4"))
	_, err := j.Begin(ctx, in)
	require.NoError(t, err)
	out := safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_1"}`), RequestID: "req_1", CompletedAt: t0.Add(time.Second)}
	require.NoError(t, j.Complete(ctx, in.Key, out))
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 1)
	want := in
	want.Outcome = &out
	requireSame(t, want, u[0])
	requireJob(t, in.Job, u[0].Job)
	// Advancing keeps the outcome; completing again keeps the job.
	acc := safegen.Job{Step: safegen.JobAccepted, Path: "out/fox.mp4", GenerationID: "gen_1", UpdatedAt: t0.Add(2 * time.Second)}
	require.NoError(t, j.Advance(ctx, in.Key, acc))
	require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 500, CompletedAt: t0}))
	got := recorded(t, j, in)
	requireSame(t, want, got)
	requireJob(t, &acc, got.Job)
}

func testJobAdvanceWithoutJob(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	in := intent("plain", "key-plain", []byte("plain"))
	_, err := j.Begin(ctx, in)
	require.NoError(t, err)
	require.Empty(t, unfinishedIDs(t, j))
	job := started("out/late.mp4")
	require.NoError(t, j.Advance(ctx, in.Key, job))
	require.Equal(t, []string{"plain"}, unfinishedIDs(t, j))
	requireJob(t, &job, recorded(t, j, in).Job)
}

func testJobOrder(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	at := func(id string, d time.Duration, job *safegen.Job) safegen.Intent {
		in := intent(id, "key-"+id, []byte(id))
		in.CreatedAt = t0.Add(d)
		in.Job = job
		return in
	}
	run := started("out/x")
	done := safegen.Job{Step: safegen.JobTerminal, Status: safegen.StatusFailed, UpdatedAt: t0}
	// Begun in this order; oldest first, ties in order of Begin.
	for _, in := range []safegen.Intent{
		at("late", 2*time.Second, &run), at("tie1", time.Second, &run), at("plain", 0, nil),
		at("done", 0, &done), at("tie2", time.Second, &run), at("early", 0, &run), at("completed", 0, &run),
	} {
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
	}
	require.NoError(t, j.Complete(ctx, "key-completed", safegen.Outcome{StatusCode: 201, CompletedAt: t0}))
	require.Equal(t, []string{"early", "completed", "tie1", "tie2", "late"}, unfinishedIDs(t, j))
}

func testJobNoAliasing(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	job := started("out/original.mp4")
	in := jobIntent("run-1", job)
	got, err := j.Begin(ctx, in)
	require.NoError(t, err)
	in.Job.Path = "out/caller-reused.mp4" // the caller reuses its Job
	got.Job.Path = "out/scribbled.mp4"    // or scribbles on what it got
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 1)
	assert.Equal(t, "out/original.mp4", u[0].Job.Path)
	u[0].Job.Step = safegen.JobDownloaded
	assert.Equal(t, "out/original.mp4", recorded(t, j, in).Job.Path)
	assert.Equal(t, []string{"run-1"}, unfinishedIDs(t, j))
}

// Advances race with Begins, Completes, Pending and Unfinished; each job
// ends at its last step and only the unfinished ones are listed.
func testJobConcurrent(t *testing.T, j safegen.JobJournal) {
	ctx := context.Background()
	const n = 30
	steps := func(i int) []safegen.Job {
		path := fmt.Sprintf("out/%d.mp4", i)
		gen := fmt.Sprintf("gen_%d", i)
		return []safegen.Job{
			{Step: safegen.JobAccepted, Path: path, GenerationID: gen, Status: safegen.StatusQueued, UpdatedAt: t0.Add(time.Second)},
			{Step: safegen.JobTerminal, Path: path, GenerationID: gen, Status: safegen.StatusSucceeded, UpdatedAt: t0.Add(2 * time.Second)},
			{Step: safegen.JobDownloaded, Path: path, GenerationID: gen, Status: safegen.StatusSucceeded, Size: int64(i), UpdatedAt: t0.Add(3 * time.Second)},
		}
	}
	// Jobs with i%3 == 0 get their output; the others stop at terminal.
	last := func(i int) int {
		if i%3 == 0 {
			return 2
		}
		return 1
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			in := jobIntent(fmt.Sprintf("run-%d", i), started(fmt.Sprintf("out/%d.mp4", i)))
			if _, err := j.Begin(ctx, in); err != nil {
				errs <- err
				return
			}
			for s, job := range steps(i)[:last(i)+1] {
				if s == 1 {
					errs <- j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, CompletedAt: t0})
				}
				errs <- j.Advance(ctx, in.Key, job)
			}
		}()
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("plain-%d", i)
			_, err := j.Begin(ctx, intent(key, key, []byte(key)))
			errs <- err
			errs <- j.Complete(ctx, key, safegen.Outcome{StatusCode: 200, CompletedAt: t0})
			_, err = j.Unfinished(ctx)
			errs <- err
			_, err = j.Pending(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var want []string
	for i := range n {
		in := jobIntent(fmt.Sprintf("run-%d", i), safegen.Job{})
		requireJob(t, &steps(i)[last(i)], recorded(t, j, in).Job)
		if last(i) < 2 {
			want = append(want, in.ID)
		}
	}
	require.ElementsMatch(t, want, unfinishedIDs(t, j))
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	require.Empty(t, p)
}
