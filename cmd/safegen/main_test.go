package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safegen/safegen-go/internal/leakcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

func TestMain(m *testing.M) {
	// demo --crash re-runs this binary as its worker process.
	if os.Getenv(workerEnv) == "1" {
		e := &env{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}
		os.Exit(run(context.Background(), e, os.Args[1:]))
	}
	leakcheck.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe to read while a command writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCmd runs the command in-process with the given environment.
func runCmd(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	e := &env{stdout: &out, stderr: &errb, stdin: strings.NewReader(""), getenv: func(k string) string { return vars[k] }}
	code = run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func apiEnv(srv *safegentest.Server) map[string]string {
	return map[string]string{"SAFEGEN_API_KEY": srv.APIKey, "SAFEGEN_BASE_URL": srv.URL}
}

func TestDemo(t *testing.T) {
	code, out, errOut := runCmd(t, nil, "demo", "--size", "80", "--concurrency", "16", "--seed", "7", "--retry-after", "0")
	require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errOut, out)
	assert.Regexp(t, `logical calls\s+80\n`, out)
	assert.Regexp(t, `charges in the ledger\s+80\n`, out)
	assert.Regexp(t, `duplicates\s+0\n`, out)
	assert.Regexp(t, `lost\s+0\n`, out)
	assert.Regexp(t, `failed attempts by cause\s+\S`, out)
	assert.Regexp(t, `outputs verified \(size, sha256\)\s+78/78\n`, out, "80 jobs, 2 canceled")
	assert.Regexp(t, `jobs canceled after create\s+2 \(`, out)
	assert.Contains(t, out, "every job created and billed once, none lost, every output on disk verified")
}

// TestDemoCrash is the crash test across processes: the worker (this test
// binary, re-run) runs whole jobs (create, wait, download) through the file
// journal against the fake server in this process, with API and download
// faults, is SIGKILLed at random points many times (in every step: creates
// in flight, waits, downloads half on disk) and restarted (Resume, then its
// own loop with the same intent ids). The demo checks the ledger and every
// output file against the server's bytes itself, and exits non-zero on any
// duplicate, loss or mismatch.
func TestDemoCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	dir := t.TempDir()
	code, out, errOut := runCmd(t, nil, "demo", "--crash", "--kills", "12", "--size", "200", "--concurrency", "16",
		"--seed", "11", "--retry-after", "0", "--journal-dir", dir)
	require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errOut, out)
	assert.Regexp(t, `charges in the ledger\s+200\n`, out)
	assert.Regexp(t, `duplicates\s+0\n`, out)
	assert.Regexp(t, `lost\s+0\n`, out)
	kills := regexp.MustCompile(`worker processes SIGKILLed\s+(\d+)`).FindStringSubmatch(out)
	require.NotNil(t, kills, out)
	n, err := strconv.Atoi(kills[1])
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, 6, "the worker is killed again and again while work is in flight")
	assert.Regexp(t, `outputs verified \(size, sha256\)\s+196/196\n`, out, "200 jobs, 4 canceled")
	assert.Regexp(t, `\(\d+ downloads cut mid-body by a kill\)`, out, "kills land mid-download too")
	fi, err := os.Stat(filepath.Join(dir, "demo.journal"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestUsageAndHelp(t *testing.T) {
	code, _, errOut := runCmd(t, nil)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "usage: safegen")
	code, out, _ := runCmd(t, nil, "--help")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "fake-server")
	code, _, errOut = runCmd(t, nil, "frobnicate")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	for name, c := range commands() {
		if c.hidden {
			continue
		}
		code, out, _ := runCmd(t, nil, name, "--help")
		assert.Equal(t, exitOK, code, name)
		assert.Contains(t, out, "usage: safegen "+name, name)
	}
	for _, args := range [][]string{
		{"generate", "--nope"},
		{"generate", "--model", "img-2"},
		{"get"},
		{"get", "a", "b"},
		{"demo", "--size", "0"},
		{"demo", "--drop", "0.5", "--reset", "0.5"},
		{"fake-server", "--faults", "bogus=1"},
		{"fake-server", "--faults", "500=2"},
		{"resume"},
		{"generate", "--model", "img-2", "--prompt", "x", "--intent-id", "j1"},
	} {
		code, _, _ := runCmd(t, nil, args...)
		assert.Equal(t, exitUsage, code, "%v", args)
	}
	code, _, errOut = runCmd(t, nil, "account")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "SAFEGEN_API_KEY")
}

func TestGenerateGetWaitEstimateAccount(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond))
	vars := apiEnv(srv)
	code, out, errOut := runCmd(t, vars, "generate", "--model", "veo-3-1-fast", "--prompt", "a fox", "--duration", "4", "--json")
	require.Equal(t, exitOK, code, errOut)
	var g struct {
		ID             string  `json:"id"`
		Status         string  `json:"status"`
		Cost           float64 `json:"cost"`
		IdempotencyKey string  `json:"idempotency_key"`
		Attempts       int     `json:"attempts"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &g))
	assert.NotEmpty(t, g.ID)
	assert.Equal(t, 12.0, g.Cost)
	assert.Equal(t, 1, g.Attempts)
	assert.NoError(t, safegen.ValidateIdempotencyKey(safegen.DialectDefault, g.IdempotencyKey))

	code, out, _ = runCmd(t, vars, "wait", g.ID)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, g.ID+"  succeeded")

	code, out, _ = runCmd(t, vars, "get", g.ID, "--json")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, `"status": "succeeded"`)

	code, out, _ = runCmd(t, vars, "generate", "--model", "img-2", "--prompt", "[fail] a cat", "--wait")
	assert.Equal(t, exitGenFailed, code, out)
	assert.Contains(t, out, "failed")

	code, out, _ = runCmd(t, vars, "estimate", "--model", "veo-3-1-fast", "--prompt", "x", "--duration", "2")
	assert.Equal(t, exitOK, code)
	assert.Equal(t, "6 credits\n", out)

	code, out, _ = runCmd(t, vars, "account", "--json")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, `"credits"`)

	// The same key twice is one charge.
	for i := 0; i < 2; i++ {
		code, _, _ = runCmd(t, vars, "generate", "--model", "img-2", "--prompt", "same", "--idempotency-key", "cli-order-1")
		assert.Equal(t, exitOK, code)
	}
	assert.Equal(t, 1, srv.Ledger().ByIdempotencyKey()["cli-order-1"])
}

func TestExitCodes(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	vars := apiEnv(srv)
	code, out, errOut := runCmd(t, vars, "get", "gen_missing", "--json")
	assert.Equal(t, exitAPI, code)
	assert.Contains(t, out, `"status": 404`)
	assert.Contains(t, errOut, "404")

	srv.SetCredits(srv.APIKey, 0)
	code, _, errOut = runCmd(t, vars, "generate", "--model", "img-2", "--prompt", "x")
	assert.Equal(t, exitAPI, code)
	assert.Contains(t, errOut, "insufficient_credits")

	code, _, errOut = runCmd(t, map[string]string{"SAFEGEN_API_KEY": "sk_bad", "SAFEGEN_BASE_URL": srv.URL}, "account")
	assert.Equal(t, exitAPI, code)
	assert.NotContains(t, errOut, "sk_bad")

	closed := safegentest.Start()
	url := closed.URL
	closed.Close()
	code, _, _ = runCmd(t, map[string]string{"SAFEGEN_API_KEY": "sk", "SAFEGEN_BASE_URL": url}, "account", "--max-retries", "0")
	assert.Equal(t, exitNetwork, code)

	code, _, _ = runCmd(t, vars, "generate", "--model", "img-2", "--prompt", "x", "--idempotency-key", "bad\x01key")
	assert.Equal(t, exitUsage, code)
}

func TestResumeCommand(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	path := filepath.Join(t.TempDir(), "j.journal")
	// Leave one intent pending, as a crash would: journaled, sent, answer lost.
	j, err := journal.Open(path)
	require.NoError(t, err)
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j), safegen.WithMaxRetries(0))
	require.NoError(t, err)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit})
	_, err = c.Generations.Create(context.Background(), &safegen.GenerationCreateParams{Model: "img-2", Prompt: "pending"}, safegen.WithIntentID("job-9"))
	require.Error(t, err)
	c.Close()
	require.NoError(t, j.Close())
	require.Equal(t, 1, srv.Ledger().Total())

	code, out, errOut := runCmd(t, apiEnv(srv), "resume", "--journal", path)
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "resumed: 1 completed, 0 failed, 0 expired")
	assert.Contains(t, out, "job-9")
	assert.Contains(t, out, "replayed=true")
	assert.Equal(t, 1, srv.Ledger().Total(), "the resumed intent was replayed, not billed again")

	code, out, _ = runCmd(t, apiEnv(srv), "resume", "--journal", path, "--json")
	require.Equal(t, exitOK, code)
	assert.JSONEq(t, `{"completed":[],"failed":[],"expired":[],"jobs":[]}`, out)
}

func TestFakeServer(t *testing.T) {
	var out, errb syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	done := make(chan int)
	go func() {
		done <- run(ctx, e, []string{"fake-server", "--addr", "127.0.0.1:0", "--dialect", "realm", "--faults", "503=0.5", "--json"})
	}()
	var info struct {
		URL    string `json:"url"`
		APIKey string `json:"api_key"`
	}
	require.Eventually(t, func() bool { return json.Unmarshal([]byte(out.String()), &info) == nil }, 5*time.Second, 5*time.Millisecond)
	c, err := safegen.NewClient(info.APIKey, safegen.WithBaseURL(info.URL), safegen.WithDialect(safegen.DialectRealm),
		safegen.WithBackoff(time.Millisecond, 2, 2*time.Millisecond), safegen.WithMaxRetries(20))
	require.NoError(t, err)
	g, err := c.Generations.Create(context.Background(), &safegen.GenerationCreateParams{Model: "img-2", Prompt: "x"})
	require.NoError(t, err)
	assert.NotEmpty(t, g.ID)
	c.Close()
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code)
	case <-time.After(5 * time.Second):
		t.Fatal("fake-server did not stop on cancel")
	}
	assert.Contains(t, errb.String(), "1 charges")

	code, _, errOut := runCmd(t, nil, "fake-server", "--addr", "256.1.1.1:99999")
	assert.Equal(t, exitLocal, code)
	assert.Contains(t, errOut, "safegentest")
}

func TestWebhookVerify(t *testing.T) {
	secret := "whsec_" + "c2FmZWdlbi10ZXN0LXNlY3JldC1rZXktMzItYnl0ZXM="
	body := []byte(`{"id":"evt_1","type":"generation.succeeded","request_id":"req_1","created_at":"2026-11-26T00:00:00Z","data":{"id":"gen_1","status":"succeeded"}}`)
	h := safegen.SignPayload(secret, body, time.Now())
	var args []string
	for name, vs := range h {
		for _, v := range vs {
			args = append(args, "--header", name+": "+v)
		}
	}
	file := filepath.Join(t.TempDir(), "body.json")
	require.NoError(t, os.WriteFile(file, body, 0o600))

	code, out, errOut := runCmd(t, nil, append([]string{"webhook", "verify", "--secret", secret, "--body-file", file}, args...)...)
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "valid: evt_1 generation.succeeded generation=gen_1 status=succeeded")

	tampered := filepath.Join(t.TempDir(), "tampered.json")
	require.NoError(t, os.WriteFile(tampered, []byte(strings.Replace(string(body), "gen_1", "gen_2", 1)), 0o600))
	code, out, errOut = runCmd(t, nil, append([]string{"webhook", "verify", "--secret", secret, "--body-file", tampered, "--json"}, args...)...)
	assert.Equal(t, exitAPI, code)
	assert.Contains(t, out, `"valid": false`)
	assert.NotContains(t, errOut+out, secret)

	code, _, _ = runCmd(t, nil, "webhook", "verify", "--body-file", file)
	assert.Equal(t, exitUsage, code, "no secret")
	code, _, _ = runCmd(t, nil, "webhook", "frob")
	assert.Equal(t, exitUsage, code)
}
