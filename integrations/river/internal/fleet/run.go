package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	safegen "github.com/safegen/safegen-go"
	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/safegentest"
)

// Config is one fleet run.
type Config struct {
	DatabaseURL string
	// Schema is where the run's tables go (River's and the journal's); it
	// is created, and dropped at the end unless Keep. Default: a new one.
	Schema string
	Keep   bool

	Jobs        int // generations enqueued (transactionally)
	Workers     int // worker processes
	Kills       int // of them SIGKILLed mid-run and not restarted
	Concurrency int // jobs in flight per worker
	Seed        int64
	Faults      safegentest.FaultRates
	Dialect     string
	QuotaPerMin int   // the fake API's per-key rate limit; 0: none
	OutputSize  int64 // bytes of each output

	Lease       time.Duration // the journal's lease
	JobTimeout  time.Duration // River's timeout of a run of a job
	RescueAfter time.Duration // River's RescueStuckJobsAfter
	Deadline    time.Duration // the whole run's bound

	// Command returns a new worker process: a binary whose main calls
	// WorkerMain when IsWorker. Run adds the worker's settings to its
	// environment.
	Command func() *exec.Cmd
	// Progress receives a line about each event of the run; nil for none.
	Progress io.Writer
}

func (c *Config) defaults() {
	if c.Schema == "" {
		c.Schema = fmt.Sprintf("safegen_fleet_%d_%d", time.Now().Unix(), rand.IntN(1_000_000))
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Dialect == "" {
		c.Dialect = "default"
	}
	if c.Lease == 0 {
		c.Lease = 2 * time.Second
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = 8 * time.Second
	}
	if c.RescueAfter == 0 {
		c.RescueAfter = c.JobTimeout + 2*time.Second
	}
	if c.Deadline == 0 {
		c.Deadline = 5 * time.Minute
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// ErrUsage means a Config that cannot run.
var ErrUsage = errors.New("fleet: bad settings")

func (c *Config) validate() error {
	msg := ""
	switch {
	case c.DatabaseURL == "":
		msg = "no database URL"
	case c.Jobs < 1 || c.Jobs > 100000:
		msg = "jobs must be 1 to 100000"
	case c.Workers < 1 || c.Workers > 64:
		msg = "workers must be 1 to 64"
	case c.Kills < 0 || c.Kills >= c.Workers:
		msg = "kills must be 0 or more and leave at least one worker alive"
	case c.Concurrency < 1 || c.Concurrency > 100:
		msg = "concurrency must be 1 to 100"
	case c.Lease < 3*time.Millisecond:
		msg = "lease too short"
	case c.RescueAfter <= c.JobTimeout:
		msg = "River rescues a job only after its timeout: rescue-after must be longer than job-timeout"
	case c.Command == nil:
		msg = "no worker command"
	}
	if msg != "" {
		return fmt.Errorf("%w: %s", ErrUsage, msg)
	}
	return nil
}

// RolledBackPrompt marks the job enqueued in a transaction that rolls back:
// no job row may hold it, and the server must never see it.
const RolledBackPrompt = "enqueued, then rolled back: never sent"

// Params is the create of job i.
func Params(i int) safegen.GenerationCreateParams {
	models := []string{"veo-3-1-fast", "img-2", "veo-3-1", "img-2-hd"}
	p := safegen.GenerationCreateParams{Model: models[i%len(models)], Prompt: fmt.Sprintf("fleet job %d: a paper boat on a rainy street", i)}
	if p.Model[0] == 'v' {
		p.DurationS = 2 + i%5
	}
	return p
}

type process struct {
	id     string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error
	killed bool
}

// Run enqueues the jobs, starts the workers, kills Kills of them at random
// moments while jobs are in flight, waits until every job is completed,
// cancelled or discarded (or the deadline), stops the survivors, and
// returns the tally.
func Run(ctx context.Context, cfg Config) (*Tally, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	pool, err := OpenSchema(ctx, cfg.DatabaseURL, cfg.Schema, 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if !cfg.Keep {
		defer func() { _ = DropSchema(context.Background(), cfg.DatabaseURL, cfg.Schema) }()
	}
	dir, err := os.MkdirTemp("", "safegen-fleet-")
	if err != nil {
		return nil, err
	}
	if !cfg.Keep {
		defer os.RemoveAll(dir)
	}
	srv := safegentest.Start(
		safegentest.WithDialect(safegentest.Dialect(cfg.Dialect)),
		safegentest.WithRateLimit(cfg.QuotaPerMin, 0),
		safegentest.WithGenerationTiming(50*time.Millisecond, 300*time.Millisecond),
		safegentest.WithOutputSize(cfg.OutputSize),
		safegentest.WithFaultRates(cfg.Faults, cfg.Seed))
	defer srv.Close()
	fmt.Fprintf(cfg.Progress, "schema %s, outputs in %s, fake API at %s\n", cfg.Schema, dir, srv.URL)

	if err := enqueue(ctx, pool, cfg); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Progress, "enqueued %d jobs in transactions of 50 with their order rows; one more enqueued in a transaction rolled back\n", cfg.Jobs)

	procs := make([]*process, cfg.Workers)
	for i := range procs {
		p, err := startWorker(cfg, srv, dir, i)
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		procs[i] = p
	}
	fmt.Fprintf(cfg.Progress, "started %d worker processes, %d jobs in flight each\n", cfg.Workers, cfg.Concurrency)

	// Kill Kills distinct workers, each once a random share (15 % to 60 %)
	// of the jobs is done: always while jobs are in flight.
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 99))
	victims := rng.Perm(cfg.Workers)[:cfg.Kills]
	at := make([]int, cfg.Kills)
	for k := range at {
		at[k] = cfg.Jobs * (15 + rng.IntN(46)) / 100
	}
	sort.Ints(at)
	t := &Tally{Jobs: cfg.Jobs, Workers: cfg.Workers, PerWorker: map[string]int{}}
	lastNote, lastCompleted := time.Now(), 0
	for {
		final, completed, err := progress(ctx, pool)
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		for len(at) > 0 && completed >= at[0] {
			p := procs[victims[0]]
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			p.killed = true
			t.Killed = append(t.Killed, p.id)
			fmt.Fprintf(cfg.Progress, "SIGKILL %s with %d/%d jobs completed (not restarted: River rescues its jobs)\n", p.id, completed, cfg.Jobs)
			at, victims = at[1:], victims[1:]
		}
		if final >= cfg.Jobs {
			break
		}
		if alive(procs) == 0 {
			stopAll(procs)
			return nil, fmt.Errorf("fleet: every worker exited with %d/%d jobs final: %s", final, cfg.Jobs, workerErrors(procs))
		}
		if completed != lastCompleted && time.Since(lastNote) >= time.Second || time.Since(lastNote) >= 5*time.Second {
			note := ""
			if completed == lastCompleted {
				note = " (the rest await River's rescue: stuck past rescue-after, then the rescuer's next round)"
			}
			fmt.Fprintf(cfg.Progress, "%d/%d jobs completed, %d charges%s\n", completed, cfg.Jobs, srv.Ledger().Total(), note)
			lastNote, lastCompleted = time.Now(), completed
		}
		select {
		case <-ctx.Done():
			stopAll(procs)
			return nil, fmt.Errorf("fleet: %w with %d/%d jobs final", ctx.Err(), final, cfg.Jobs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopAll(procs)
	for _, p := range procs {
		if !p.killed && p.err != nil {
			return nil, fmt.Errorf("fleet: %s: %v: %s", p.id, p.err, p.stderr.String())
		}
	}
	if err := t.count(ctx, pool, srv); err != nil {
		return nil, err
	}
	t.Wall = time.Since(start)
	return t, nil
}

// enqueue is the application's side: each batch of jobs is inserted with its
// order rows in one transaction (InsertManyTx); one more job is inserted in
// a transaction that rolls back.
func enqueue(ctx context.Context, pool *pgxpool.Pool, cfg Config) error {
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: cfg.Schema})
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (id integer PRIMARY KEY, prompt text NOT NULL)`); err != nil {
		return err
	}
	for from := 0; from < cfg.Jobs; from += 50 {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var batch []river.InsertManyParams
			for i := from; i < min(from+50, cfg.Jobs); i++ {
				p := Params(i)
				if _, err := tx.Exec(ctx, `INSERT INTO orders (id, prompt) VALUES ($1, $2)`, i, p.Prompt); err != nil {
					return err
				}
				batch = append(batch, river.InsertManyParams{Args: saferiver.GenerationArgs{
					GenerationCreateParams: p, Output: fmt.Sprintf("order-%05d.out", i)}})
			}
			_, err := rc.InsertManyTx(ctx, tx, batch)
			return err
		})
		if err != nil {
			return fmt.Errorf("fleet: enqueueing: %w", err)
		}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO orders (id, prompt) VALUES (-1, $1)`, RolledBackPrompt); err != nil {
		return err
	}
	args := saferiver.GenerationArgs{GenerationCreateParams: safegen.GenerationCreateParams{Model: "img-2", Prompt: RolledBackPrompt}}
	if _, err := rc.InsertTx(ctx, tx, args, nil); err != nil {
		return err
	}
	return tx.Rollback(ctx)
}

func startWorker(cfg Config, srv *safegentest.Server, dir string, i int) (*process, error) {
	wc := workerConfig{ID: fmt.Sprintf("worker-%d", i+1), DatabaseURL: cfg.DatabaseURL, Schema: cfg.Schema,
		BaseURL: srv.URL, APIKey: srv.APIKey, Dialect: cfg.Dialect, OutputDir: dir, Concurrency: cfg.Concurrency,
		Lease: cfg.Lease, JobTimeout: cfg.JobTimeout, RescueAfter: cfg.RescueAfter}
	b, err := json.Marshal(wc)
	if err != nil {
		return nil, err
	}
	p := &process{id: wc.ID, cmd: cfg.Command(), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = &lockedWriter{w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: starting %s: %w", p.id, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// lockedWriter serializes writes to a buffer that is read at the end.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func alive(procs []*process) int {
	n := 0
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			n++
		}
	}
	return n
}

// stopAll asks every live worker to stop (River finishes its running jobs)
// and waits for them.
func stopAll(procs []*process) {
	for _, p := range procs {
		if p != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func workerErrors(procs []*process) string {
	var b bytes.Buffer
	for _, p := range procs {
		if p.err != nil && !p.killed {
			fmt.Fprintf(&b, "%s: %v: %s; ", p.id, p.err, p.stderr.String())
		}
	}
	return b.String()
}

// progress counts the jobs in a final state and the completed ones.
func progress(ctx context.Context, pool *pgxpool.Pool) (final, completed int, err error) {
	err = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('completed', 'cancelled', 'discarded')),
		count(*) FILTER (WHERE state = 'completed') FROM river_job`).Scan(&final, &completed)
	return final, completed, err
}
