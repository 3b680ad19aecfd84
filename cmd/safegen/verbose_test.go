package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

// instantClock never sleeps, so a retried command runs at once.
type instantClock struct{}

func (instantClock) Now() time.Time                                   { return time.Now() }
func (instantClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func runWith(t *testing.T, vars map[string]string, opts []safegen.Option, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	e := &env{stdout: &out, stderr: &errb, stdin: strings.NewReader(""), getenv: func(k string) string { return vars[k] }, sdkOptions: opts}
	code = run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func TestVerbosePrintsEveryAttempt(t *testing.T) {
	srv := safegentest.NewServer(t)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: http.StatusServiceUnavailable},
		safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "2"})
	code, out, errOut := runWith(t, apiEnv(srv), []safegen.Option{safegen.WithClock(instantClock{})},
		"generate", "--model", "img-2", "--prompt", "a fox", "--idempotency-key", "0123456789abcdef-key", "--verbose")
	require.Equal(t, exitOK, code, errOut)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	require.Len(t, lines, 3, errOut)
	assert.Regexp(t, `^safegen: attempt 1 POST /v1/generations key=01234567…: 503 service_unavailable, retrying in \d+ms$`, lines[0])
	assert.Regexp(t, `^safegen: attempt 2 POST /v1/generations key=01234567…: 429 rate_limit_exceeded, retrying in 2s \(Retry-After 2s\)$`, lines[1])
	assert.Equal(t, "safegen: attempt 3 POST /v1/generations key=01234567…: 202", lines[2])
	assert.NotContains(t, errOut, "0123456789abcdef-key", "the key is shortened")
	assert.NotContains(t, errOut, srv.APIKey)
	assert.Contains(t, out, "attempts=3", "the attempts the lines show are the call's")

	code, _, errOut = runWith(t, apiEnv(srv), nil, "account")
	require.Equal(t, exitOK, code)
	assert.Empty(t, errOut, "silent without --verbose")
	code, _, errOut = runWith(t, apiEnv(srv), nil, "account", "--verbose")
	require.Equal(t, exitOK, code)
	assert.Equal(t, "safegen: attempt 1 GET /v1/account: 200\n", errOut)
}

func TestAttemptLine(t *testing.T) {
	for _, tc := range []struct {
		info safegen.AttemptInfo
		want string
	}{
		{safegen.AttemptInfo{Attempt: 1, Method: "POST", Path: "/v1/generations", IdempotencyKey: "k1", Cause: "transport",
			Err: errors.New("read: connection reset by peer"), Retry: true, Wait: 123456789},
			"safegen: attempt 1 POST /v1/generations key=k1: transport (read: connection reset by peer), retrying in 123ms"},
		{safegen.AttemptInfo{Attempt: 4, Method: "POST", Path: "/v1/generations", IdempotencyKey: "3f1c9a0e-7a2b", StatusCode: 503,
			Code: "service_unavailable", Cause: "503", Reason: "retries exhausted"},
			"safegen: attempt 4 POST /v1/generations key=3f1c9a0e…: 503 service_unavailable, retries exhausted"},
		{safegen.AttemptInfo{Attempt: 2, Method: "POST", Path: "/v1/generations", IdempotencyKey: "3f1c9a0e-7a2b", StatusCode: 202,
			Replayed: true, Cause: "ok", Reason: "done"},
			"safegen: attempt 2 POST /v1/generations key=3f1c9a0e…: 202 (replayed)"},
		{safegen.AttemptInfo{Attempt: 1, Method: "GET", Path: "https://cdn.example/out.mp4", Cause: "timeout",
			Err: safegen.ErrIdleTimeout, Retry: true, Wait: time.Second},
			"safegen: attempt 1 GET https://cdn.example/out.mp4: timeout (safegen: download idle timeout), retrying in 1s"},
	} {
		assert.Equal(t, tc.want, attemptLine(tc.info))
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, nil, "version")
	require.Equal(t, exitOK, code)
	assert.True(t, strings.HasPrefix(out, "safegen "+safegen.Version+" ("+runtime.Version()), out)
	code, _, _ = runCmd(t, nil, "version", "extra")
	assert.Equal(t, exitUsage, code)
	code, out, _ = runCmd(t, nil, "version", "--json")
	require.Equal(t, exitOK, code)
	var v map[string]string
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, safegen.Version, v["version"])
	assert.Equal(t, runtime.Version(), v["go"])
}
