package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/safegentest"
)

// On a terminal stdout and stderr are the same screen: help must appear once
// across both, not once on each.
func TestHelpPrintedOnce(t *testing.T) {
	for name, c := range commands() {
		if c.hidden {
			continue
		}
		code, out, errOut := runCmd(t, nil, name, "--help")
		assert.Equal(t, exitOK, code, name)
		screen := out + errOut
		assert.Equal(t, 1, strings.Count(screen, "usage: safegen "+name), "%s: %q", name, screen)
		assert.Empty(t, errOut, name)
	}
	// A bad flag: the complaint and the usage once, on stderr only.
	code, out, errOut := runCmd(t, nil, "generate", "--nope")
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, out)
	assert.Equal(t, 1, strings.Count(errOut, "usage: safegen generate"), errOut)
	assert.Contains(t, errOut, "-nope")
}

// Every message carries one "safegen:" prefix and names flags, not Go options.
func TestMessagesOnePrefixAndFlagNames(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	for _, tc := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"account"}, map[string]string{"SAFEGEN_API_KEY": "sk_x", "SAFEGEN_BASE_URL": "http://api.example.com"}, "--insecure-http"},
		{[]string{"get", "gen_missing"}, apiEnv(srv), "404"},
		{[]string{"generate", "--model", "m", "--prompt", "p", "--idempotency-key", "bad\x01"}, apiEnv(srv), "idempotency key"},
		{[]string{"resume", "--journal", filepath.Join(t.TempDir(), "missing")}, apiEnv(srv), "does not exist"},
	} {
		_, _, errOut := runCmd(t, tc.vars, tc.args...)
		assert.Contains(t, errOut, tc.want, "%v", tc.args)
		assert.NotContains(t, errOut, "safegen: safegen:", "%v", tc.args)
		assert.NotRegexp(t, `With[A-Z]`, errOut, "%v: a Go option name in a CLI message", tc.args)
		assert.Equal(t, 1, strings.Count(errOut, "safegen:"), "%v: %q", tc.args, errOut)
	}
}

func TestDurationFlagNeedsUnit(t *testing.T) {
	code, _, errOut := runCmd(t, nil, "account", "--timeout", "30")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `"30" has no unit`)
	assert.Contains(t, errOut, "30s")
	code, _, errOut = runCmd(t, nil, "account", "--timeout", "soon")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "not a duration")
}

// A mistyped --journal must cost nothing: no journal created, no folders, and
// a file that is not a journal keeps every byte.
func TestResumeRefusesWrongJournalPath(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such", "journal")
	code, _, errOut := runCmd(t, apiEnv(srv), "resume", "--journal", missing)
	assert.Equal(t, exitLocal, code, errOut)
	_, err := os.Stat(filepath.Join(dir, "no"))
	assert.True(t, os.IsNotExist(err), "no folder created")

	notes := filepath.Join(dir, "notes.txt")
	content := []byte("buy milk\nship the release\n")
	require.NoError(t, os.WriteFile(notes, content, 0o644))
	code, _, errOut = runCmd(t, apiEnv(srv), "resume", "--journal", notes)
	assert.Equal(t, exitLocal, code, errOut)
	assert.Contains(t, errOut, "not a journal")
	got, err := os.ReadFile(notes)
	require.NoError(t, err)
	assert.Equal(t, content, got, "notes.txt keeps its bytes")
	_, err = os.Stat(notes + ".lock")
	assert.True(t, os.IsNotExist(err), "no lock file beside it")
}

// request_id= is the body's request_id (the creating request), and --json
// carries every field of the generation.
func TestGenerationOutputFields(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond))
	vars := apiEnv(srv)
	code, out, errOut := runCmd(t, vars, "generate", "--model", "veo-3-1-fast", "--prompt", "a fox", "--duration", "4", "--json")
	require.Equal(t, exitOK, code, errOut)
	var g map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &g))
	for _, f := range []string{"id", "request_id", "status", "model", "prompt", "duration_s", "cost", "created_at"} {
		assert.Contains(t, g, f)
	}
	assert.EqualValues(t, 4, g["duration_s"])
	require.NotEmpty(t, g["request_id"])

	// A replay carries a fresh X-Request-Id; the id to quote stays the
	// creating request's, from the body.
	reqLine := regexp.MustCompile(`request_id=(\S+)`)
	var seen []string
	for range 2 {
		code, out, errOut = runCmd(t, vars, "generate", "--model", "img-2", "--prompt", "x", "--idempotency-key", "cli-req-1", "--wait")
		require.Equal(t, exitOK, code, errOut)
		m := reqLine.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		seen = append(seen, m[1])
	}
	assert.Contains(t, out, "replayed=true")
	assert.Equal(t, seen[0], seen[1], "request_id is the body's, the same on a replay")
}

// The counterfactual: the same faults and seed without keys bill calls twice,
// with keys never; "0 duplicates" reads as a comparison.
func TestDemoNoKeysCounterfactual(t *testing.T) {
	args := []string{"demo", "--size", "120", "--concurrency", "16", "--seed", "3", "--retry-after", "0", "--drop", "0.2"}
	code, out, errOut := runCmd(t, nil, append(args, "--no-keys")...)
	require.Equal(t, exitOK, code, errOut)
	m := regexp.MustCompile(`duplicates\s+(\d+)\n`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	assert.NotEqual(t, "0", m[1], "without keys a dropped-after-commit call is billed again")
	assert.Contains(t, out, "without idempotency keys the same faults billed")

	code, out, errOut = runCmd(t, nil, args...)
	require.Equal(t, exitOK, code, errOut)
	assert.Regexp(t, `duplicates\s+0\n`, out)

	code, _, _ = runCmd(t, nil, "demo", "--no-keys", "--crash")
	assert.Equal(t, exitUsage, code)
}

func TestLicense(t *testing.T) {
	for _, p := range []string{"../../LICENSE", "../../journal/pgjournal/LICENSE"} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Contains(t, string(b), "Apache License")
		assert.Contains(t, string(b), "Version 2.0, January 2004")
	}
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	assert.Contains(t, string(readme), "Apache-2.0")
}
