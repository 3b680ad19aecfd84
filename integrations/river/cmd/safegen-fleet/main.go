// Command safegen-fleet is the fleet demo: N worker processes run paid
// generations as River jobs on PostgreSQL against the embedded fake API, with
// faults, while some of them are SIGKILLed and never restarted; River rescues
// their jobs, the journal's leases keep one worker per job at a time, and the
// tally counts what the server billed: every job once, none lost.
//
//	safegen-fleet --workers 4 --database-url postgres://...   (or DATABASE_URL)
//
// `safegen demo --fleet N --database-url URL` runs this command (from PATH, or
// with `go run` in a source checkout): it lives in the integrations/river
// module so that River never reaches the root module. Exit codes: 0 the
// promise held, 1 it did not, 2 usage, 4 the run failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/safegen/safegen-go/integrations/river/internal/fleet"
	"github.com/safegen/safegen-go/safegentest"
)

// NeedsDatabase says what the fleet needs when it has no database.
const NeedsDatabase = `safegen-fleet needs a PostgreSQL database: River's job table and the
journal live there, shared by the worker processes. Give it with
--database-url postgres://user@host:port/db or DATABASE_URL. A throwaway
server for a try, from a checkout of safegen-go:

    export DATABASE_URL=$(.ci/postgres.sh start /tmp/safegen-pg)
    safegen-fleet --workers 4
    .ci/postgres.sh stop /tmp/safegen-pg

The run creates its tables in a schema of its own and drops it at the end.`

func main() {
	if fleet.IsWorker() {
		os.Exit(fleet.WorkerMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("safegen-fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                            fleet.Config
		drop, reset, serverErr, rate   float64
		retryAfter                     string
		jobTimeout, rescueAfter, lease time.Duration
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", getenv("DATABASE_URL"), "PostgreSQL URL (default $DATABASE_URL)")
	fs.IntVar(&cfg.Workers, "workers", 4, "worker processes")
	fs.IntVar(&cfg.Jobs, "jobs", 300, "generations to enqueue")
	fs.IntVar(&cfg.Kills, "kills", 2, "workers SIGKILLed mid-run and not restarted")
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "jobs in flight per worker")
	fs.Int64Var(&cfg.Seed, "seed", 1, "seed of the fault draws and the kills")
	fs.Float64Var(&drop, "drop", 0.05, "rate of create responses dropped after the work is committed and billed")
	fs.Float64Var(&reset, "reset", 0.05, "rate of connections reset before the work")
	fs.Float64Var(&serverErr, "5xx", 0.10, "rate of 500/502(HTML)/503 answers")
	fs.Float64Var(&rate, "429", 0.05, "rate of 429 answers")
	fs.StringVar(&retryAfter, "retry-after", "1", "Retry-After of the 429s")
	fs.StringVar(&cfg.Dialect, "dialect", "default", "vendor dialect of the fake server and the clients")
	fs.IntVar(&cfg.QuotaPerMin, "quota", 0, "the fake API's requests a minute per API key (shared by the workers; 0: none)")
	fs.Int64Var(&cfg.OutputSize, "output-size", 4<<10, "bytes of each output")
	fs.DurationVar(&lease, "lease", 2*time.Second, "the journal's lease")
	fs.DurationVar(&jobTimeout, "job-timeout", 8*time.Second, "River's timeout of one run of a job")
	fs.DurationVar(&rescueAfter, "rescue-after", 10*time.Second, "River's RescueStuckJobsAfter (above the job timeout)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the schema and the outputs")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "safegen-fleet: no positional arguments")
		return 2
	}
	if cfg.DatabaseURL == "" {
		fmt.Fprintln(stderr, NeedsDatabase)
		return 2
	}
	cfg.Faults = safegentest.FaultRates{Status500: serverErr / 3, Status502HTML: serverErr / 3, Status503: serverErr / 3,
		RateLimit429: rate, Reset: reset, DropAfterCommit: drop, RetryAfter: retryAfter}
	cfg.Lease, cfg.JobTimeout, cfg.RescueAfter = lease, jobTimeout, rescueAfter
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "safegen-fleet:", err)
		return 4
	}
	cfg.Command = func() *exec.Cmd { return exec.Command(exe) }
	cfg.Progress = stdout
	fmt.Fprintf(stdout, "safegen fleet: %d jobs, %d worker processes (River on PostgreSQL), %d of them SIGKILLed mid-run\n",
		cfg.Jobs, cfg.Workers, cfg.Kills)
	fmt.Fprintf(stdout, "faults: drop-after-commit %.0f%%, reset %.0f%%, 5xx %.0f%%, 429 %.0f%%; seed %d\n",
		drop*100, reset*100, serverErr*100, rate*100, cfg.Seed)
	t, err := fleet.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "safegen-fleet:", err)
		if errors.Is(err, fleet.ErrUsage) {
			return 2
		}
		return 4
	}
	t.Print(stdout)
	if !t.OK() {
		return 1
	}
	return 0
}
