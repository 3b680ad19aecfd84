package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDemoFleetWithoutDatabaseSaysWhatItNeeds(t *testing.T) {
	code, stdout, stderr := runCmd(t, nil, "demo", "--fleet", "4")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "needs a PostgreSQL database")
	assert.Contains(t, stderr, "--database-url")
	assert.Contains(t, stderr, ".ci/postgres.sh start")
	assert.Empty(t, stdout)

	code, _, _ = runCmd(t, nil, "demo", "--database-url", "postgres://db")
	assert.Equal(t, exitUsage, code, "--database-url alone")
	code, _, _ = runCmd(t, nil, "demo", "--fleet", "2", "--crash", "--database-url", "postgres://db")
	assert.Equal(t, exitUsage, code)
}

// fakeFleet puts a safegen-fleet on a PATH of its own that prints its
// arguments and database URL, and exits with code.
func fakeFleet(t *testing.T, code string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("a shell script stands in for safegen-fleet")
	}
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"args: $*\"\necho \"url: $DATABASE_URL\"\nexit " + code + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "safegen-fleet"), []byte(script), 0o755))
	return dir
}

func TestDemoFleetRunsSafegenFleet(t *testing.T) {
	path := fakeFleet(t, "0")
	code, stdout, stderr := runCmd(t, map[string]string{"PATH": path}, "demo", "--fleet", "3", "--database-url", "postgres://u@db/x",
		"--size", "60", "--kills", "1", "--seed", "9", "--drop", "0.1")
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "running safegen-fleet ("+filepath.Join(path, "safegen-fleet")+")")
	assert.Contains(t, stdout, "args: --workers 3 --jobs 60 --seed 9 --drop 0.1 --reset 0.05 --5xx 0.1 --429 0.05 --retry-after 1 --dialect default --kills 1\n")
	assert.Contains(t, stdout, "url: postgres://u@db/x\n", "passed in the environment")

	// DATABASE_URL stands in for --database-url; a broken promise (1) is
	// a local failure.
	path = fakeFleet(t, "1")
	code, stdout, _ = runCmd(t, map[string]string{"PATH": path, "DATABASE_URL": "postgres://env"}, "demo", "--fleet", "2")
	assert.Equal(t, exitLocal, code)
	assert.Contains(t, stdout, "url: postgres://env\n")
	assert.NotContains(t, stdout, "--kills", "the fleet's own default")
}

func TestDemoFleetWithoutTheCommand(t *testing.T) {
	// Neither on PATH nor runnable with go (no go on this PATH).
	code, _, stderr := runCmd(t, map[string]string{"PATH": t.TempDir()}, "demo", "--fleet", "2", "--database-url", "postgres://db")
	assert.Equal(t, exitLocal, code)
	assert.Contains(t, stderr, "go install github.com/safegen/safegen-go/integrations/river/cmd/safegen-fleet@latest")
}
