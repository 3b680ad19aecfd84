package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// demo --fleet runs the fleet demo, which needs River and a PostgreSQL
// driver. Those live in the integrations/river module, never in this one (an
// importer of the root module must not inherit them), so the demo is a
// command of that module, safegen-fleet, and demo --fleet runs it: from PATH
// when installed, else with `go run` when this is a checkout of safegen-go.
const (
	fleetCommand = "safegen-fleet"
	fleetPackage = "github.com/safegen/safegen-go/integrations/river/cmd/safegen-fleet"
	fleetModule  = "integrations/river" // in a checkout, from its root
)

// fleetNeedsDatabase says what demo --fleet needs without a database.
const fleetNeedsDatabase = `safegen demo --fleet needs a PostgreSQL database: the worker processes share
River's job table and the journal there. Give it with --database-url
postgres://user@host:port/db (or DATABASE_URL). A throwaway server, from a
checkout of safegen-go (PostgreSQL's initdb and pg_ctl on the machine):

    export DATABASE_URL=$(.ci/postgres.sh start /tmp/safegen-pg)
    safegen demo --fleet 4
    .ci/postgres.sh stop /tmp/safegen-pg

The demo creates its tables in a schema of its own and drops it at the end.`

func runFleetDemo(ctx context.Context, e *env, d *demoConfig, fs *flag.FlagSet) int {
	switch {
	case d.fleet < 1 || d.fleet > 64:
		return fail(e, false, usageError("--fleet must be 1 to 64 worker processes"))
	case d.crash || d.noKeys:
		return fail(e, false, usageError("--fleet does not combine with --crash or --no-keys"))
	}
	url := d.databaseURL
	if url == "" {
		url = e.getenv("DATABASE_URL")
	}
	if url == "" {
		fmt.Fprintln(e.stderr, fleetNeedsDatabase)
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	args := []string{"--workers", strconv.Itoa(d.fleet), "--jobs", strconv.Itoa(d.size), "--seed", strconv.FormatInt(d.seed, 10),
		"--drop", ftoa(d.drop), "--reset", ftoa(d.reset), "--5xx", ftoa(d.serverErr), "--429", ftoa(d.rateLimit),
		"--retry-after", d.retryAfter, "--dialect", d.dialect}
	if set["kills"] {
		args = append(args, "--kills", strconv.Itoa(d.kills))
	}
	if set["concurrency"] {
		args = append(args, "--concurrency", strconv.Itoa(d.concurrency))
	}
	cmd, how := fleetCmd(ctx, e, args)
	if cmd == nil {
		fmt.Fprintf(e.stderr, "safegen demo --fleet: %s is not on PATH and this is not a checkout of safegen-go.\n"+
			"It lives in its own module (River stays out of this one); install it with\n\n"+
			"    go install %s@latest\n\nthen run this again.\n", fleetCommand, fleetPackage)
		return exitLocal
	}
	fmt.Fprintf(e.stdout, "safegen demo --fleet: running %s (%s)\n", fleetCommand, how)
	// The database URL goes in the environment, not in a command line
	// anyone can read.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	// Interrupted, the fleet stops its workers itself.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee) && ee.ExitCode() == exitUsage:
		return exitUsage
	case errors.As(err, &ee):
		return exitLocal // the promise broken (1) or the run failed (4)
	}
	fmt.Fprintf(e.stderr, "safegen demo --fleet: %v\n", err)
	return exitLocal
}

// fleetCmd finds safegen-fleet: on PATH, else `go run` in the checkout this
// command runs from (the working directory or one of its parents).
func fleetCmd(ctx context.Context, e *env, args []string) (*exec.Cmd, string) {
	if path, err := lookPath(e, fleetCommand); err == nil {
		return exec.CommandContext(ctx, path, args...), path
	}
	goTool, err := lookPath(e, "go")
	if err != nil {
		return nil, ""
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, ""
	}
	for {
		mod := filepath.Join(dir, fleetModule)
		if _, err := os.Stat(filepath.Join(mod, "cmd", fleetCommand, "main.go")); err == nil {
			cmd := exec.CommandContext(ctx, goTool, append([]string{"run", "./cmd/" + fleetCommand}, args...)...)
			cmd.Dir = mod
			return cmd, "go run ./cmd/" + fleetCommand + " in " + mod
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, ""
		}
		dir = parent
	}
}

// lookPath is exec.LookPath on the command's own PATH.
func lookPath(e *env, name string) (string, error) {
	for _, dir := range filepath.SplitList(e.getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
