package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func runArgs(env map[string]string, args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

func TestWithoutDatabaseSaysWhatItNeeds(t *testing.T) {
	code, _, stderr := runArgs(nil, "--workers", "3")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "needs a PostgreSQL database")
	assert.Contains(t, stderr, ".ci/postgres.sh start")
	assert.Contains(t, stderr, "DATABASE_URL")
}

func TestUsageErrors(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
	for _, args := range [][]string{
		{"--workers", "2", "--kills", "2"},
		{"--jobs", "0"},
		{"--job-timeout", "10s", "--rescue-after", "5s"},
		{"--no-such-flag"},
		{"extra"},
	} {
		code, _, stderr := runArgs(env, args...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
	}
	code, _, _ := runArgs(env, "--help")
	assert.Equal(t, 0, code)
}
