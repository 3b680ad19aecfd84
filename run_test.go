package safegen_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

const runOutputSize = 200 << 10

// newRunServer is a fake whose generations finish in a few milliseconds and
// whose outputs are runOutputSize bytes.
func newRunServer(t *testing.T, opts ...safegentest.Option) *safegentest.Server {
	t.Helper()
	return safegentest.NewServer(t, append([]safegentest.Option{safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(2*time.Millisecond, 3*time.Millisecond),
		safegentest.WithOutputSize(runOutputSize)}, opts...)...)
}

// fastPolls keeps Wait's real polling in milliseconds.
var fastPolls = safegen.WithPollInterval(time.Millisecond, 5*time.Millisecond)

// assertOutput checks that the file at path holds exactly the server's
// output bytes for generation id.
func assertOutput(t *testing.T, path, id string, size int64) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	want, err := io.ReadAll(safegentest.OutputBytes(id, size))
	require.NoError(t, err)
	require.Equal(t, len(want), len(got))
	require.True(t, bytes.Equal(want, got), "file at %s is not the server's output", path)
}

func TestRunWholeJob(t *testing.T) {
	srv := newRunServer(t)
	c := newClient(t, srv, fastPolls)
	path := filepath.Join(t.TempDir(), "out", "fox.mp4")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	gen, err := c.Generations.Run(context.Background(), params, path)
	require.NoError(t, err)
	assert.Equal(t, safegen.StatusSucceeded, gen.Status)
	require.NotNil(t, gen.Output)
	assertOutput(t, path, gen.ID, runOutputSize)
	sum, _ := fileSHA256(t, path)
	assert.Equal(t, gen.Output.SHA256, sum)
	assert.Equal(t, 1, srv.Ledger().Total())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no partial file left beside the output")
}

func TestRunFailedGeneration(t *testing.T) {
	srv := newRunServer(t)
	c := newClient(t, srv, fastPolls)
	path := filepath.Join(t.TempDir(), "cat.png")
	gen, err := c.Generations.Run(context.Background(),
		&safegen.GenerationCreateParams{Model: "img-2", Prompt: "[fail] a cat"}, path)
	require.Nil(t, gen)
	require.ErrorIs(t, err, safegen.ErrGenerationFailed)
	var je *safegen.JobError
	require.ErrorAs(t, err, &je)
	require.NotNil(t, je.Generation, "the error carries the generation")
	assert.NotEmpty(t, je.Generation.ID)
	assert.Equal(t, safegen.StatusFailed, je.Generation.Status)
	assert.Equal(t, safegen.JobTerminal, je.Step)
	assert.NoFileExists(t, path)
	assert.Equal(t, 1, srv.Ledger().Total())
}

func TestRunBadInput(t *testing.T) {
	srv := newRunServer(t)
	c := newClient(t, srv)
	ctx := context.Background()
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		params *safegen.GenerationCreateParams
		path   string
	}{
		"empty path": {params, ""},
		"directory":  {params, dir},
		"nil params": {nil, filepath.Join(dir, "x")},
		"no prompt":  {&safegen.GenerationCreateParams{Model: "img-2"}, filepath.Join(dir, "x")},
	} {
		gen, err := c.Generations.Run(ctx, tc.params, tc.path)
		assert.Nil(t, gen, name)
		assert.ErrorIs(t, err, safegen.ErrInvalidRequest, name)
	}
	assert.Empty(t, srv.Requests(), "nothing sent for bad input")
}

// A worker dies while waiting (here: its context ends once the create was
// accepted). Re-running Run with the same intent id never creates again: it
// waits for the same generation and downloads its output.
func TestRunRerunAfterCrashWhileWaiting(t *testing.T) {
	clk := safegentest.NewManualClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := newRunServer(t, safegentest.WithClock(clk))
	path := filepath.Join(t.TempDir(), "job.mp4")
	jpath := filepath.Join(t.TempDir(), "journal")
	j, err := journal.Open(jpath)
	require.NoError(t, err)
	c := newClient(t, srv, safegen.WithJournal(j), fastPolls)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = c.Generations.Run(ctx, params, path, safegen.WithIntentID("order-1"))
	cancel()
	var je *safegen.JobError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, safegen.JobAccepted, je.Step)
	require.NotNil(t, je.Generation)
	firstID := je.Generation.ID
	require.NoError(t, j.Close())

	// The restarted process: same journal, same intent id; meanwhile the
	// generation finished on the server.
	clk.Advance(time.Second)
	j, err = journal.Open(jpath)
	require.NoError(t, err)
	defer j.Close()
	unfinished, err := j.Unfinished(context.Background())
	require.NoError(t, err)
	require.Len(t, unfinished, 1)
	assert.Equal(t, safegen.JobAccepted, unfinished[0].Job.Step)
	assert.Equal(t, firstID, unfinished[0].Job.GenerationID)

	c = newClient(t, srv, safegen.WithJournal(j), fastPolls)
	gen, err := c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("order-1"))
	require.NoError(t, err)
	assert.Equal(t, firstID, gen.ID, "the same generation, not a new one")
	assertOutput(t, path, gen.ID, runOutputSize)
	assert.Equal(t, 1, srv.Ledger().Total(), "created and billed once")
	assert.Len(t, billableAttempts(srv), 1, "the re-run sent no create: the journal had its outcome")
	unfinished, err = j.Unfinished(context.Background())
	require.NoError(t, err)
	assert.Empty(t, unfinished)

	// Run again once done: nothing is sent, the file is checked.
	before := len(srv.Requests())
	gen, err = c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("order-1"))
	require.NoError(t, err)
	assert.Equal(t, firstID, gen.ID)
	assert.Equal(t, before, len(srv.Requests()), "a finished job makes no request")

	// Another path under the same intent id is refused.
	_, err = c.Generations.Run(context.Background(), params, path+".other", safegen.WithIntentID("order-1"))
	require.ErrorIs(t, err, safegen.ErrInvalidRequest)
}

// A download cut mid-body leaves a partial file; Resume carries the job on
// and fetches only the rest.
func TestResumeFinishesCutDownload(t *testing.T) {
	srv := newRunServer(t)
	path := filepath.Join(t.TempDir(), "video.mp4")
	j := journal.NewMemory()
	c := newClient(t, srv, safegen.WithJournal(j), fastPolls, safegen.WithMaxRetries(0))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 50 << 10}) // under the 64 KiB that earns a free resume
	_, err := c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("clip-1"))
	var je *safegen.JobError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, safegen.JobTerminal, je.Step)
	assert.NoFileExists(t, path)

	rep, err := c.Resume(context.Background())
	require.NoError(t, err)
	require.Len(t, rep.Jobs, 1)
	jr := rep.Jobs[0]
	require.NoError(t, jr.Err)
	assert.Equal(t, safegen.JobTerminal, jr.From)
	assert.Equal(t, safegen.JobDownloaded, jr.Reached)
	assert.Empty(t, rep.Completed)
	assertOutput(t, path, jr.Generation.ID, runOutputSize)
	assert.Equal(t, 1, srv.Ledger().Total())
	var fetched int64
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r.Path, "/v1/outputs/") {
			fetched += r.ResponseBytes
		}
	}
	assert.LessOrEqual(t, fetched, int64(runOutputSize+runOutputSize/10), "resumed, not restarted")
}

// The create's answer is lost after the server billed it: Resume re-sends the
// job's create (a replay), then waits and downloads.
func TestResumeJobWhoseCreateWasLost(t *testing.T) {
	srv := newRunServer(t)
	path := filepath.Join(t.TempDir(), "lost.mp4")
	j := journal.NewMemory()
	c := newClient(t, srv, safegen.WithJournal(j), fastPolls, safegen.WithMaxRetries(0))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit})
	_, err := c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("lost-1"))
	var je *safegen.JobError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, safegen.JobStarted, je.Step)
	assert.Nil(t, je.Generation)
	assert.Equal(t, 1, srv.Ledger().Total())

	rep, err := c.Resume(context.Background())
	require.NoError(t, err)
	require.Len(t, rep.Jobs, 1)
	require.NoError(t, rep.Jobs[0].Err)
	assert.Equal(t, safegen.JobStarted, rep.Jobs[0].From)
	assert.Equal(t, safegen.JobDownloaded, rep.Jobs[0].Reached)
	assertOutput(t, path, rep.Jobs[0].Generation.ID, runOutputSize)
	assert.Equal(t, 1, srv.Ledger().Total(), "the re-sent create was a replay")
	pending, err := j.Pending(context.Background())
	require.NoError(t, err)
	assert.Empty(t, pending)
}

// A refused create ends the job: nothing to resume.
func TestRunRefusedCreateEndsJob(t *testing.T) {
	srv := newRunServer(t)
	srv.SetCredits(srv.APIKey, 0)
	j := journal.NewMemory()
	c := newClient(t, srv, safegen.WithJournal(j))
	_, err := c.Generations.Run(context.Background(), params, filepath.Join(t.TempDir(), "x"), safegen.WithIntentID("broke-1"))
	require.ErrorIs(t, err, safegen.ErrInsufficientCredits)
	unfinished, err := j.Unfinished(context.Background())
	require.NoError(t, err)
	assert.Empty(t, unfinished)
}

// Every dialect runs the whole job.
func TestRunEveryDialect(t *testing.T) {
	for _, d := range []struct {
		sdk safegen.Dialect
		srv safegentest.Dialect
	}{
		{safegen.DialectDefault, safegentest.DialectDefault}, {safegen.DialectRimp, safegentest.DialectRimp},
		{safegen.DialectRealm, safegentest.DialectRealm}, {safegen.DialectRelaystation, safegentest.DialectRelaystation},
		{safegen.DialectClipia, safegentest.DialectClipia}, {safegen.DialectPatomic, safegentest.DialectPatomic},
	} {
		t.Run(string(d.srv), func(t *testing.T) {
			srv := newRunServer(t, safegentest.WithDialect(d.srv))
			c := newClient(t, srv, safegen.WithDialect(d.sdk), fastPolls, safegen.WithJournal(journal.NewMemory()))
			path := filepath.Join(t.TempDir(), "out.bin")
			srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
				safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 1000})
			gen, err := c.Generations.Run(context.Background(), params, path, safegen.WithIntentID("d-1"))
			require.NoError(t, err)
			assertOutput(t, path, gen.ID, runOutputSize)
			assert.Equal(t, 1, srv.Ledger().Total())
		})
	}
}

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil)), n
}
