package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// workerEnv marks a process started by demo --crash as its worker.
const workerEnv = "SAFEGEN_DEMO_WORKER"

type demoConfig struct {
	size        int
	concurrency int
	seed        int64
	drop        float64
	reset       float64
	serverErr   float64
	rateLimit   float64
	retryAfter  string
	crash       bool
	kills       int
	journalDir  string
	dialect     string
	noKeys      bool
	outputSize  int64
	dlFaults    float64
	cancels     int
	maxCredits  float64
	fleet       int
	databaseURL string
}

func (d *demoConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&d.size, "size", 300, "logical calls (generations) to make")
	fs.IntVar(&d.concurrency, "concurrency", 32, "calls in flight at once")
	fs.Int64Var(&d.seed, "seed", 1, "seed of the fault draws and crash times")
	fs.Float64Var(&d.drop, "drop", 0.05, "rate of responses dropped after the work is committed and billed")
	fs.Float64Var(&d.reset, "reset", 0.05, "rate of connections reset before the work")
	fs.Float64Var(&d.serverErr, "5xx", 0.10, "rate of 500/502(HTML)/503 answers")
	fs.Float64Var(&d.rateLimit, "429", 0.05, "rate of 429 answers")
	fs.StringVar(&d.retryAfter, "retry-after", "1", "Retry-After of the 429s (seconds or an HTTP date)")
	fs.BoolVar(&d.crash, "crash", false, "run the worker as a child process, SIGKILL it mid-run and restart it (Resume, then the same loop)")
	fs.IntVar(&d.kills, "kills", 3, "with --crash: how many times the worker is killed")
	fs.StringVar(&d.journalDir, "journal-dir", "", "folder for the journal (default: a temporary folder, removed at the end)")
	fs.StringVar(&d.dialect, "dialect", "default", "vendor dialect of the fake server and the client")
	fs.Int64Var(&d.outputSize, "output-size", 32<<10, "bytes of each generation's output (each job downloads and verifies it)")
	fs.Float64Var(&d.dlFaults, "download-faults", 0.10, "rate of downloads cut mid-body, reset or answered 503")
	fs.IntVar(&d.cancels, "cancel-every", 50, "cancel every Nth job right after its create, while queued (refunded); 0 cancels none")
	fs.Float64Var(&d.maxCredits, "max-credits", -1, "spend limit of the worker's client in credits (jobs that no longer fit are refused before they are sent); default none")
	fs.BoolVar(&d.noKeys, "no-keys", false, "the counterfactual: the same faults against a plain client that retries without idempotency keys or a journal")
	fs.IntVar(&d.fleet, "fleet", 0, "run N worker processes through River on PostgreSQL instead (needs --database-url; runs safegen-fleet)")
	fs.StringVar(&d.databaseURL, "database-url", "", "with --fleet: the PostgreSQL database (default $DATABASE_URL)")
}

func (d *demoConfig) validate() error {
	switch {
	case d.size < 1 || d.size > 100000:
		return usageError("--size must be 1 to 100000")
	case d.concurrency < 1 || d.concurrency > 1000:
		return usageError("--concurrency must be 1 to 1000")
	case d.kills < 0 || d.kills > 1000:
		return usageError("--kills must be 0 to 1000")
	case d.outputSize < 1 || d.outputSize > 1<<30:
		return usageError("--output-size must be 1 byte to 1 GiB")
	case d.dlFaults < 0 || d.dlFaults > 0.9:
		return usageError("--download-faults must be between 0 and 0.9")
	case d.cancels < 0:
		return usageError("--cancel-every must not be negative")
	case d.noKeys && d.maxCredits >= 0:
		return usageError("--no-keys and --max-credits do not combine: the plain client has no spend guard")
	case d.noKeys && d.crash:
		return usageError("--no-keys and --crash do not combine: without a journal a killed worker loses its calls")
	}
	total := 0.0
	for _, r := range []float64{d.drop, d.reset, d.serverErr, d.rateLimit} {
		if r < 0 || r > 1 {
			return usageError("fault rates must be between 0 and 1")
		}
		total += r
	}
	if total > 0.9 {
		return usageError("fault rates add up to more than 0.9: nothing would get through")
	}
	if _, err := safegen.ParseDialect(d.dialect); err != nil {
		return usageError(err.Error())
	}
	return nil
}

func runDemo(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("demo", "demo [--size N] [--concurrency C] [--seed S] [--crash | --fleet N --database-url URL] [fault rates]")
	var d demoConfig
	d.register(fs)
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return fail(e, false, usageError("demo takes no positional arguments"))
	}
	if err := d.validate(); err != nil {
		return fail(e, false, err)
	}
	if d.fleet > 0 || d.databaseURL != "" {
		return runFleetDemo(ctx, e, &d, fs)
	}
	start := time.Now()
	srv := safegentest.Start(
		safegentest.WithDialect(safegentest.Dialect(d.dialect)),
		safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(20*time.Millisecond, 50*time.Millisecond),
		safegentest.WithOutputSize(d.outputSize),
		safegentest.WithFaultRates(safegentest.FaultRates{
			Status500: d.serverErr / 3, Status502HTML: d.serverErr / 3, Status503: d.serverErr / 3,
			RateLimit429: d.rateLimit, Reset: d.reset, DropAfterCommit: d.drop, RetryAfter: d.retryAfter,
			DownloadCut: d.dlFaults * 0.6, DownloadReset: d.dlFaults * 0.2, Download503: d.dlFaults * 0.2,
		}, d.seed))
	defer srv.Close()

	dir := d.journalDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "safegen-demo-")
		if err != nil {
			return fail(e, false, err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	jpath := filepath.Join(dir, "demo.journal")
	outDir := filepath.Join(dir, "outputs")
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fail(e, false, err)
	}
	mode := "one worker process"
	if d.noKeys {
		mode = "a plain client WITHOUT idempotency keys (the counterfactual)"
	}
	if d.crash {
		mode = fmt.Sprintf("a worker process SIGKILLed %d times and restarted", d.kills)
	}
	what := "whole jobs (create, wait, download and verify a %s output)"
	what = fmt.Sprintf(what, sizeText(d.outputSize))
	if d.noKeys {
		what = "creates"
	}
	fmt.Fprintf(e.stdout, "safegen demo: %d %s, %d in flight, against the embedded fake API (dialect %s), %s\n",
		d.size, what, d.concurrency, d.dialect, mode)
	shown := jpath
	if d.noKeys {
		shown = "none"
	}
	fmt.Fprintf(e.stdout, "faults: drop-after-commit %.0f%%, reset %.0f%%, 5xx %.0f%%, 429 %.0f%% (Retry-After %s), downloads cut/reset/503 %.0f%%; seed %d; journal %s\n",
		d.drop*100, d.reset*100, d.serverErr*100, d.rateLimit*100, d.retryAfter, d.dlFaults*100, d.seed, shown)

	res := newResults(d.size)
	prog := newProgress(e, d.size, res, srv)
	prog.start()
	var err error
	switch {
	case d.noKeys:
		err = runWithoutKeys(ctx, srv.URL, srv.APIKey, &d, func(i int, gen string) { res.record(i, gen) })
	case d.crash:
		err = crashLoop(ctx, e, &d, srv, jpath, outDir, res, prog)
	default:
		w := workerConfig{url: srv.URL, apiKey: srv.APIKey, journal: jpath, outDir: outDir, size: d.size, concurrency: d.concurrency,
			dialect: d.dialect, cancelEvery: d.cancels, maxCredits: d.maxCredits}
		_, err = w.run(ctx, func(i int, gen string) {
			if gen == refusedMark {
				res.refuse(i)
				return
			}
			res.record(i, gen)
		})
	}
	prog.stop()
	if err != nil {
		return fail(e, false, err)
	}
	t := tally(srv, res, d.size, time.Since(start))
	t.crash, t.noKeys = d.crash, d.noKeys
	t.limit = d.maxCredits
	if !d.noKeys {
		t.verifyOutputs(res, outDir, d.outputSize, d.cancels)
	}
	t.print(e.stdout)
	if d.noKeys {
		// The counterfactual is expected to break the promise: it shows
		// what the keys prevent, so it is not a failure of the demo.
		return exitOK
	}
	if t.broken() {
		fmt.Fprintln(e.stderr, "safegen demo: the promise was broken: see the table above")
		return exitLocal
	}
	return exitOK
}

// results collects, for every logical call, the generation ids it was
// answered with (more than one would be a double charge).
type results struct {
	mu    sync.Mutex
	gens  []map[string]bool
	done  atomic.Int64
	kills int // worker processes SIGKILLed (demo --crash)
	// midDownload counts partial outputs left on disk by the kills.
	midDownload int
	// refused are the jobs the spend limit refused before sending.
	refused map[int]bool
}

// refuse notes that job i was refused by the spend limit.
func (r *results) refuse(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused == nil {
		r.refused = map[int]bool{}
	}
	if !r.refused[i] && r.gens[i] == nil {
		r.refused[i] = true
		r.done.Add(1)
	}
}

func newResults(n int) *results {
	return &results{gens: make([]map[string]bool, n)}
}

// record notes that call i was answered with generation genID, and reports
// whether call i was not done before.
func (r *results) record(i int, genID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.gens) {
		return false
	}
	fresh := r.gens[i] == nil
	if fresh {
		r.gens[i] = map[string]bool{}
		r.done.Add(1)
	}
	r.gens[i][genID] = true
	return fresh
}

// workerConfig is one worker: open the journal, Resume what is pending,
// then make every logical call under its intent id until it succeeds.
type workerConfig struct {
	url, apiKey, journal string
	outDir               string // where each job's output goes
	size, concurrency    int
	dialect              string
	cancelEvery          int     // every Nth job is canceled after its create
	maxCredits           float64 // < 0: no spend limit
}

// canceled reports whether job i is one the demo cancels while queued.
func canceled(i, every int) bool { return every > 0 && i%every == every/2 }

// outputPath is where job i's output goes.
func outputPath(dir string, i int) string { return filepath.Join(dir, intentID(i)+".bin") }

func demoParams(i int) *safegen.GenerationCreateParams {
	models := []string{"veo-3-1-fast", "img-2", "veo-3-1", "img-2-hd"}
	p := &safegen.GenerationCreateParams{Model: models[i%len(models)], Prompt: fmt.Sprintf("demo scene %d: a paper boat on a rainy street", i)}
	if strings.HasPrefix(p.Model, "veo") {
		p.DurationS = 2 + i%5
	}
	return p
}

func intentID(i int) string { return fmt.Sprintf("demo-%05d", i) }

// run returns how many intents Resume finished.
func (w workerConfig) run(ctx context.Context, onDone func(i int, genID string)) (int, error) {
	var j *journal.File
	var err error
	for tries := 0; ; tries++ {
		j, err = journal.Open(w.journal)
		if err == nil || !errors.Is(err, journal.ErrLocked) || tries == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond) // a killed worker's lock is released when the kernel reaps it
	}
	if err != nil {
		return 0, err
	}
	defer j.Close()
	d, _ := safegen.ParseDialect(w.dialect)
	opts := []safegen.Option{safegen.WithBaseURL(w.url), safegen.WithDialect(d), safegen.WithJournal(j),
		safegen.WithBackoff(5*time.Millisecond, 2, 100*time.Millisecond), safegen.WithMaxRetries(8),
		safegen.WithAttemptTimeout(5 * time.Second), safegen.WithMaxRetryAfter(5 * time.Second),
		safegen.WithPollInterval(10*time.Millisecond, 100*time.Millisecond)}
	if w.maxCredits >= 0 {
		opts = append(opts, safegen.WithSpendLimit(w.maxCredits))
	}
	c, err := safegen.NewClient(w.apiKey, opts...)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	rep, err := c.Resume(ctx)
	if err != nil {
		return 0, err
	}
	resumed := len(rep.Completed) + len(rep.Jobs)
	for _, jr := range rep.Jobs {
		if jr.Err == nil && jr.Generation != nil {
			if i, ok := jobIndex(jr.Intent.ID); ok {
				onDone(i, jr.Generation.ID)
			}
		}
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for k := 0; k < w.concurrency; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := w.one(ctx, c, i, onDone); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	for i := 0; i < w.size; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
		case err := <-errs:
			close(jobs)
			wg.Wait()
			return resumed, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return resumed, err
	default:
	}
	return resumed, ctx.Err()
}

// one runs job i (create, wait, download), re-running it under the same
// intent id after a failure: the journal gives it the same key and its
// recorded steps, so this never bills twice and never creates again.
func (w workerConfig) one(ctx context.Context, c *safegen.Client, i int, onDone func(int, string)) error {
	for {
		var id string
		var err error
		if canceled(i, w.cancelEvery) {
			id, err = w.createAndCancel(ctx, c, i)
		} else {
			var g *safegen.Generation
			g, err = c.Generations.Run(ctx, demoParams(i), outputPath(w.outDir, i), safegen.WithIntentID(intentID(i)))
			if err == nil {
				id = g.ID
			}
		}
		if err == nil {
			onDone(i, id)
			return nil
		}
		if errors.Is(err, safegen.ErrSpendLimit) {
			if c.Spend().Reserved == 0 {
				onDone(i, refusedMark) // the limit is spent: the job is refused, not lost
				return nil
			}
			// Calls whose outcome is unknown hold reservations: wait
			// for their retries to settle them, then try again.
		}
		var apiErr *safegen.APIError
		if errors.As(err, &apiErr) && !errors.Is(err, safegen.ErrServer) && !errors.Is(err, safegen.ErrRateLimited) &&
			!errors.Is(err, safegen.ErrRequestInProgress) {
			return err // a definitive refusal: retrying cannot help
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createAndCancel creates job i and cancels it at once, while it is queued:
// the server refunds it. A repeated cancel is harmless.
func (w workerConfig) createAndCancel(ctx context.Context, c *safegen.Client, i int) (string, error) {
	g, err := c.Generations.Create(ctx, demoParams(i), safegen.WithIntentID(intentID(i)))
	if err != nil {
		return "", err
	}
	if _, err := c.Generations.Cancel(ctx, g.ID); err != nil && !errors.Is(err, safegen.ErrGenerationTerminal) {
		return "", err
	}
	return g.ID, nil
}

// refusedMark stands for a generation id when the spend limit refused a job.
const refusedMark = "refused"

// jobIndex is the job number in an intent id made by intentID.
func jobIndex(id string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "demo-"))
	return n, err == nil && strings.HasPrefix(id, "demo-")
}

// runDemoWorker is the child of demo --crash: it prints "done I GEN" per call.
func runDemoWorker(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("demo-worker", "demo-worker (internal)")
	var w workerConfig
	fs.StringVar(&w.url, "url", "", "")
	fs.StringVar(&w.journal, "journal", "", "")
	fs.IntVar(&w.size, "size", 0, "")
	fs.IntVar(&w.concurrency, "concurrency", 1, "")
	fs.StringVar(&w.dialect, "dialect", "default", "")
	fs.StringVar(&w.outDir, "out-dir", "", "")
	fs.IntVar(&w.cancelEvery, "cancel-every", 0, "")
	fs.Float64Var(&w.maxCredits, "max-credits", -1, "")
	if _, code, done := parseFlags(fs, e, args); done {
		return code
	}
	w.apiKey = e.getenv("SAFEGEN_API_KEY")
	if w.url == "" || w.journal == "" || w.outDir == "" || w.size < 1 || w.apiKey == "" {
		return fail(e, false, usageError("demo-worker is started by demo --crash"))
	}
	var mu sync.Mutex
	out := bufio.NewWriter(e.stdout)
	resumed, err := w.run(ctx, func(i int, gen string) {
		mu.Lock()
		fmt.Fprintf(out, "done %d %s\n", i, gen)
		out.Flush()
		mu.Unlock()
	})
	fmt.Fprintf(out, "resumed %d\n", resumed)
	out.Flush()
	if err != nil {
		return fail(e, false, err)
	}
	return exitOK
}

// crashLoop runs the worker as a child process, kills it with SIGKILL at
// random moments, and restarts it until a run completes.
func crashLoop(ctx context.Context, e *env, d *demoConfig, srv *safegentest.Server, jpath, outDir string, res *results, prog *progress) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(uint64(d.seed), 42))
	for run := 1; ; run++ {
		kill := run <= d.kills
		// The worker dies after a random number of newly finished calls,
		// at most half of those left, or after a random delay, whichever
		// comes first: always while work is in flight.
		remaining := d.size - int(res.done.Load())
		threshold := 1 + rng.IntN(max(1, remaining/2))
		delay := time.Duration(50+rng.IntN(350)) * time.Millisecond
		cmd := exec.CommandContext(ctx, exe, "demo-worker", "--url", srv.URL, "--journal", jpath, "--out-dir", outDir,
			"--size", strconv.Itoa(d.size), "--concurrency", strconv.Itoa(d.concurrency), "--dialect", d.dialect,
			"--cancel-every", strconv.Itoa(d.cancels), "--max-credits", strconv.FormatFloat(d.maxCredits, 'g', -1, 64))
		cmd.Env = append(os.Environ(), workerEnv+"=1", "SAFEGEN_API_KEY="+srv.APIKey)
		cmd.Stderr = io.Discard
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		before := res.done.Load()
		var resumed atomic.Int64
		var killedAt atomic.Int64
		var once sync.Once
		killNow := func() {
			once.Do(func() {
				killedAt.Store(res.done.Load())
				_ = cmd.Process.Signal(syscall.SIGKILL)
			})
		}
		fresh := 0
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 3 && f[0] == "done" && f[2] == refusedMark:
					if i, err := strconv.Atoi(f[1]); err == nil {
						res.refuse(i)
					}
				case len(f) == 3 && f[0] == "done":
					if i, err := strconv.Atoi(f[1]); err == nil && res.record(i, f[2]) {
						if fresh++; kill && fresh >= threshold {
							killNow()
						}
					}
				case len(f) == 2 && f[0] == "resumed":
					n, _ := strconv.Atoi(f[1])
					resumed.Store(int64(n))
				}
			}
		}()
		var timer *time.Timer
		if kill {
			timer = time.AfterFunc(delay, killNow)
		}
		<-readDone
		werr := cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		note := describeRun(werr, killedAt.Load(), before, res.done.Load(), resumed.Load(), d.size)
		if werr != nil {
			partials, _ := filepath.Glob(filepath.Join(outDir, "*.partial"))
			res.midDownload += len(partials)
			note += fmt.Sprintf(" (%d downloads cut mid-body by the kill)", len(partials))
		}
		prog.note(fmt.Sprintf("worker run %d: %s", run, note))
		if werr == nil {
			return nil
		}
		res.kills++
		var ee *exec.ExitError
		if errors.As(werr, &ee) && ee.ExitCode() != -1 {
			return fmt.Errorf("demo worker failed: %v", werr)
		}
		if run > d.kills+5 {
			return fmt.Errorf("demo worker keeps dying: %v", werr)
		}
	}
}

func describeRun(err error, killedAt, before, after, resumed int64, size int) string {
	if err != nil {
		return fmt.Sprintf("SIGKILLed with %d/%d calls done; restarting: Resume, then the same loop with the same intent ids", killedAt, size)
	}
	return fmt.Sprintf("completed (Resume finished %d in-flight intents; %d calls newly done this run)", resumed, after-before)
}

// demoTally is the final table, counted from what the server saw.
type demoTally struct {
	calls, attempts, replays, charges, duplicates, lost int
	kills, midDownload                                  int
	jobs                                                bool
	verified, outputs, corrupt, refunds, canceled       int
	fetched, outputBytes                                int64
	limit, spent                                        float64
	refused                                             int
	refunded                                            int64
	crash, noKeys                                       bool
	causes, dlCauses                                    map[string]int
	wall                                                time.Duration
}

func tally(srv *safegentest.Server, res *results, size int, wall time.Duration) demoTally {
	t := demoTally{calls: size, causes: map[string]int{}, wall: wall}
	for _, r := range srv.Requests() {
		if r.Method != "POST" || r.Path != "/v1/generations" {
			continue
		}
		t.attempts++
		if r.Replayed {
			t.replays++
		}
		if c := r.Cause(); c != "" {
			t.causes[c]++
		}
	}
	t.kills, t.midDownload = res.kills, res.midDownload
	t.limit = -1
	t.spent = float64(srv.Ledger().Credits(srv.APIKey) - srv.Ledger().Refunded(srv.APIKey))
	l := srv.Ledger()
	t.refunds, t.refunded = len(l.Refunds), l.Refunded(srv.APIKey)
	t.dlCauses = map[string]int{}
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r.Path, "/v1/outputs/") {
			t.fetched += r.ResponseBytes
			if c := r.Cause(); c != "" {
				t.dlCauses[c]++
			}
		}
	}
	t.charges = l.Total()
	t.duplicates = len(l.Duplicates())
	if extra := t.charges - size; extra > t.duplicates {
		// Keyless charges cannot be grouped by key: every charge past one
		// per call is a call billed again.
		t.duplicates = extra
	}
	res.mu.Lock()
	t.refused = len(res.refused)
	for i, g := range res.gens {
		switch {
		case len(g) == 0 && res.refused[i]:
		case len(g) == 0:
			t.lost++
		case len(g) > 1:
			t.duplicates++
		}
	}
	res.mu.Unlock()
	return t
}

// broken reports whether the table shows a broken promise.
func (t demoTally) broken() bool {
	overspent := t.limit >= 0 && t.spent > t.limit
	return t.duplicates != 0 || t.lost != 0 || t.charges != t.calls-t.refused || t.corrupt != 0 || t.verified != t.outputs || overspent
}

// verifyOutputs checks every finished job's file against the server's bytes
// for its generation.
func (t *demoTally) verifyOutputs(res *results, dir string, size int64, cancelEvery int) {
	t.jobs = true
	res.mu.Lock()
	defer res.mu.Unlock()
	for i, gens := range res.gens {
		if len(gens) == 1 && canceled(i, cancelEvery) {
			t.canceled++
		}
		if len(gens) != 1 || canceled(i, cancelEvery) {
			continue
		}
		t.outputs++
		t.outputBytes += size
		for id := range gens {
			if sameFile(outputPath(dir, i), safegentest.OutputBytes(id, size)) {
				t.verified++
			} else {
				t.corrupt++
			}
		}
	}
}

// sameFile reports whether the file at path holds exactly want's bytes.
func sameFile(path string, want io.Reader) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h1, h2 := sha256.New(), sha256.New()
	n1, err1 := io.Copy(h1, f)
	n2, err2 := io.Copy(h2, want)
	return err1 == nil && err2 == nil && n1 == n2 && bytes.Equal(h1.Sum(nil), h2.Sum(nil))
}

// spendText is the credits spent against the limit, if any.
func (t demoTally) spendText() string {
	if t.limit < 0 {
		return fmt.Sprintf("%g (no limit; --max-credits sets one)", t.spent)
	}
	return fmt.Sprintf("%g of a %g limit (%d jobs refused before sending: the limit was spent)", t.spent, t.limit, t.refused)
}

// joinCounts lists counts by name, sorted: "503: 2, reset: 1".
func joinCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s: %d", k, m[k]))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// sizeText is a byte count for people.
func sizeText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (t demoTally) print(w io.Writer) {
	keys := make([]string, 0, len(t.causes))
	for k := range t.causes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var causes []string
	retries := 0
	for _, k := range keys {
		causes = append(causes, fmt.Sprintf("%s: %d", k, t.causes[k]))
		retries += t.causes[k]
	}
	if len(causes) == 0 {
		causes = []string{"none"}
	}
	fmt.Fprintln(w)
	rows := [][2]string{
		{"logical calls", strconv.Itoa(t.calls)},
		{"attempts (server side)", strconv.Itoa(t.attempts)},
		{"failed attempts by cause", strings.Join(causes, ", ")},
		{"replays (same key, not billed)", strconv.Itoa(t.replays)},
		{"charges in the ledger", strconv.Itoa(t.charges)},
		{"duplicates", strconv.Itoa(t.duplicates)},
		{"lost", strconv.Itoa(t.lost)},
		{"wall time", t.wall.Round(time.Millisecond).String()},
	}
	if t.jobs {
		ratio := 0.0
		if t.outputBytes > 0 {
			ratio = float64(t.fetched) / float64(t.outputBytes)
		}
		rows = append(rows[:len(rows)-1], append([][2]string{
			{"failed downloads by cause", joinCounts(t.dlCauses)},
			{"outputs verified (size, sha256)", fmt.Sprintf("%d/%d", t.verified, t.outputs)},
			{"bytes fetched / bytes of output", fmt.Sprintf("%s / %s (%.2fx: cut downloads resumed)", sizeText(t.fetched), sizeText(t.outputBytes), ratio)},
			{"jobs canceled after create", fmt.Sprintf("%d (%d refunded while queued, %d credits back)", t.canceled, t.refunds, t.refunded)},
			{"credits spent (net of refunds)", t.spendText()},
		}, rows[len(rows)-1:]...)...)
	}
	if t.crash {
		killed := strconv.Itoa(t.kills)
		if t.midDownload > 0 {
			killed += fmt.Sprintf(" (%d downloads cut mid-body by a kill)", t.midDownload)
		}
		rows = append(rows[:1], append([][2]string{{"worker processes SIGKILLed", killed}}, rows[1:]...)...)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-32s %s\n", r[0], r[1])
	}
	verdict := "every call billed exactly once, none lost"
	if t.jobs {
		verdict = "every job created and billed once, none lost, every output on disk verified"
	}
	if t.broken() {
		verdict = "PROMISE BROKEN"
	}
	if t.noKeys {
		verdict = fmt.Sprintf("without idempotency keys the same faults billed %d extra charges for %d calls;\n"+
			"run without --no-keys to see the same faults with keys: 0 duplicates", t.charges-t.calls, t.calls)
	}
	fmt.Fprintf(w, "\n%s\n", verdict)
}

// progress shows live progress: a redrawn line on a terminal, a plain log
// line every second otherwise.
type progress struct {
	e     *env
	size  int
	res   *results
	srv   *safegentest.Server
	mu    sync.Mutex
	quit  chan struct{}
	ended chan struct{}
}

func newProgress(e *env, size int, res *results, srv *safegentest.Server) *progress {
	return &progress{e: e, size: size, res: res, srv: srv, quit: make(chan struct{}), ended: make(chan struct{})}
}

func (p *progress) start() {
	every := time.Second
	if p.e.isTerminal {
		every = 100 * time.Millisecond
	}
	go func() {
		defer close(p.ended)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *progress) line() string {
	done := p.res.done.Load()
	l := p.srv.Ledger()
	return fmt.Sprintf("%d/%d calls done, %d charges, %d duplicates", done, p.size, l.Total(), len(l.Duplicates()))
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.e.isTerminal {
		fmt.Fprintf(p.e.stdout, "\r\033[K%s", p.line())
		return
	}
	fmt.Fprintln(p.e.stdout, p.line())
}

// note prints an event on its own line.
func (p *progress) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.e.isTerminal {
		fmt.Fprint(p.e.stdout, "\r\033[K")
	}
	fmt.Fprintln(p.e.stdout, s)
}

func (p *progress) stop() {
	close(p.quit)
	<-p.ended
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.e.isTerminal {
		fmt.Fprint(p.e.stdout, "\r\033[K")
	}
	fmt.Fprintln(p.e.stdout, p.line())
}
