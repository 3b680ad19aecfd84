package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/safegentest"
)

const cliOutputSize = 100 << 10

func newJobServer(t *testing.T, opts ...safegentest.Option) *safegentest.Server {
	t.Helper()
	return safegentest.NewServer(t, append([]safegentest.Option{safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond),
		safegentest.WithOutputSize(cliOutputSize)}, opts...)...)
}

func requireOutput(t *testing.T, path, id string) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	want, err := io.ReadAll(safegentest.OutputBytes(id, cliOutputSize))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "%s is not the server's output", path)
}

func TestRunCommand(t *testing.T) {
	srv := newJobServer(t)
	out := filepath.Join(t.TempDir(), "fox.mp4")
	code, stdout, stderr := runCmd(t, apiEnv(srv), "run", "--model", "veo-3-1-fast", "--prompt", "a fox", "--output", out, "--json")
	require.Equal(t, exitOK, code, stderr)
	var v struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		OutputPath string `json:"output_path"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &v))
	assert.Equal(t, "succeeded", v.Status)
	assert.Equal(t, out, v.OutputPath)
	requireOutput(t, out, v.ID)
	assert.Equal(t, 1, srv.Ledger().Total())

	// In a pipe, progress is plain lines on stderr.
	out2 := filepath.Join(t.TempDir(), "cat.png")
	code, stdout, stderr = runCmd(t, apiEnv(srv), "run", "--model", "img-2", "--prompt", "a cat", "--output", out2)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "(verified)")
	assert.Contains(t, stderr, "download cat.png: 100%")
	assert.NotContains(t, stderr, "\r")

	code, _, stderr = runCmd(t, apiEnv(srv), "run", "--model", "img-2", "--prompt", "[fail] x", "--output", filepath.Join(t.TempDir(), "f"))
	assert.Equal(t, exitGenFailed, code, stderr)

	code, _, _ = runCmd(t, apiEnv(srv), "run", "--model", "img-2", "--prompt", "x")
	assert.Equal(t, exitUsage, code)
}

// run --journal: killed mid-download (here: the download is cut and retries
// are off), the same command with the same intent id finishes the job
// without creating it again; safegen resume does the same for another job.
func TestRunJournaledThenResume(t *testing.T) {
	srv := newJobServer(t)
	dir := t.TempDir()
	jpath := filepath.Join(dir, "jobs.journal")
	out := filepath.Join(dir, "a.mp4")
	args := []string{"run", "--model", "img-2", "--prompt", "a boat", "--output", out, "--journal", jpath, "--intent-id", "job-a", "--max-retries", "0"}
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 10 << 10})
	code, _, _ := runCmd(t, apiEnv(srv), args...)
	require.NotEqual(t, exitOK, code)
	assert.NoFileExists(t, out)
	code, stdout, stderr := runCmd(t, apiEnv(srv), args...)
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, 1, srv.Ledger().Total(), "the re-run did not create again")
	id := strings.Fields(stdout)[0]
	requireOutput(t, out, id)

	outB := filepath.Join(dir, "b.mp4")
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 10 << 10})
	code, _, _ = runCmd(t, apiEnv(srv), "run", "--model", "img-2", "--prompt", "b", "--output", outB, "--journal", jpath, "--intent-id", "job-b", "--max-retries", "0")
	require.NotEqual(t, exitOK, code)
	code, stdout, stderr = runCmd(t, apiEnv(srv), "resume", "--journal", jpath)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "1 jobs")
	assert.Contains(t, stdout, "job-b  terminal -> downloaded")
	assert.FileExists(t, outB)
	assert.Equal(t, 2, srv.Ledger().Total())
}

func TestDownloadAndCancelCommands(t *testing.T) {
	srv := newJobServer(t)
	code, stdout, stderr := runCmd(t, apiEnv(srv), "generate", "--model", "img-2", "--prompt", "x", "--wait", "--json")
	require.Equal(t, exitOK, code, stderr)
	var g struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &g))
	out := filepath.Join(t.TempDir(), "x.png")
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 10 << 10})
	code, _, _ = runCmd(t, apiEnv(srv), "download", g.ID, "--output", out, "--max-retries", "0")
	require.NotEqual(t, exitOK, code)
	code, stdout, stderr = runCmd(t, apiEnv(srv), "download", g.ID, "--output", out, "--json")
	require.Equal(t, exitOK, code, stderr)
	var res struct {
		Reused, Fetched, Size int64
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Positive(t, res.Reused, "resumed from the partial file")
	assert.Equal(t, int64(cliOutputSize), res.Reused+res.Fetched)
	requireOutput(t, out, g.ID)

	slow := newJobServer(t, safegentest.WithGenerationTiming(time.Hour, time.Hour))
	code, stdout, stderr = runCmd(t, apiEnv(slow), "generate", "--model", "veo-3-1-fast", "--prompt", "x", "--json")
	require.Equal(t, exitOK, code, stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), &g))
	code, stdout, stderr = runCmd(t, apiEnv(slow), "cancel", g.ID)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "canceled")
	assert.Contains(t, stdout, "cost=0", "canceled while queued: refunded")
	assert.Len(t, slow.Ledger().Refunds, 1)
	code, _, _ = runCmd(t, apiEnv(slow), "download", g.ID, "--output", filepath.Join(t.TempDir(), "y"))
	assert.Equal(t, exitGenFailed, code)
}

func TestMaxCredits(t *testing.T) {
	srv := newJobServer(t)
	dir := t.TempDir()
	jpath := filepath.Join(dir, "j.journal")
	// img-2 costs 1 credit: a limit of 2 fits two runs.
	for i, want := range []int{exitOK, exitOK, exitLocal} {
		out := filepath.Join(dir, strconv.Itoa(i)+".png")
		code, _, stderr := runCmd(t, apiEnv(srv), "run", "--model", "img-2", "--prompt", "x", "--output", out,
			"--journal", jpath, "--max-credits", "2")
		require.Equal(t, want, code, stderr)
		assert.Contains(t, stderr, "spend: ")
		if want == exitLocal {
			assert.Contains(t, stderr, "spend limit")
			assert.NoFileExists(t, out)
		}
	}
	assert.Equal(t, 2, srv.Ledger().Total(), "the journal carried the spend across runs")
	code, _, stderr := runCmd(t, apiEnv(srv), "generate", "--model", "img-2", "--prompt", "x", "--max-credits", "0")
	assert.Equal(t, exitLocal, code, stderr)
	assert.Equal(t, 2, srv.Ledger().Total())
}

func TestDemoMaxCredits(t *testing.T) {
	code, out, errOut := runCmd(t, nil, "demo", "--size", "60", "--concurrency", "8", "--seed", "5", "--retry-after", "0",
		"--max-credits", "100")
	require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errOut, out)
	m := regexp.MustCompile(`credits spent \(net of refunds\)\s+(\d+) of a 100 limit \((\d+) jobs refused`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	spent, _ := strconv.Atoi(m[1])
	assert.LessOrEqual(t, spent, 100)
	assert.Greater(t, spent, 100-12, "the limit is used, not wasted")
	assert.Regexp(t, `lost\s+0\n`, out)
}
