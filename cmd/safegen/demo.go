package main

import (
	"bufio"
	"context"
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
		safegentest.WithFaultRates(safegentest.FaultRates{
			Status500: d.serverErr / 3, Status502HTML: d.serverErr / 3, Status503: d.serverErr / 3,
			RateLimit429: d.rateLimit, Reset: d.reset, DropAfterCommit: d.drop, RetryAfter: d.retryAfter,
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
	mode := "one worker process"
	if d.noKeys {
		mode = "a plain client WITHOUT idempotency keys (the counterfactual)"
	}
	if d.crash {
		mode = fmt.Sprintf("a worker process SIGKILLed %d times and restarted", d.kills)
	}
	fmt.Fprintf(e.stdout, "safegen demo: %d generations, %d in flight, against the embedded fake API (dialect %s), %s\n",
		d.size, d.concurrency, d.dialect, mode)
	shown := jpath
	if d.noKeys {
		shown = "none"
	}
	fmt.Fprintf(e.stdout, "faults: drop-after-commit %.0f%%, reset %.0f%%, 5xx %.0f%%, 429 %.0f%% (Retry-After %s); seed %d; journal %s\n",
		d.drop*100, d.reset*100, d.serverErr*100, d.rateLimit*100, d.retryAfter, d.seed, shown)

	res := newResults(d.size)
	prog := newProgress(e, d.size, res, srv)
	prog.start()
	var err error
	switch {
	case d.noKeys:
		err = runWithoutKeys(ctx, srv.URL, srv.APIKey, &d, func(i int, gen string) { res.record(i, gen) })
	case d.crash:
		err = crashLoop(ctx, e, &d, srv, jpath, res, prog)
	default:
		w := workerConfig{url: srv.URL, apiKey: srv.APIKey, journal: jpath, size: d.size, concurrency: d.concurrency, dialect: d.dialect}
		_, err = w.run(ctx, func(i int, gen string) { res.record(i, gen) })
	}
	prog.stop()
	if err != nil {
		return fail(e, false, err)
	}
	t := tally(srv, res, d.size, time.Since(start))
	t.crash, t.noKeys = d.crash, d.noKeys
	t.print(e.stdout)
	if d.noKeys {
		// The counterfactual is expected to break the promise: it shows
		// what the keys prevent, so it is not a failure of the demo.
		return exitOK
	}
	if t.duplicates != 0 || t.lost != 0 || t.charges != d.size {
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
	size, concurrency    int
	dialect              string
}

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
	c, err := safegen.NewClient(w.apiKey, safegen.WithBaseURL(w.url), safegen.WithDialect(d), safegen.WithJournal(j),
		safegen.WithBackoff(5*time.Millisecond, 2, 100*time.Millisecond), safegen.WithMaxRetries(8),
		safegen.WithAttemptTimeout(5*time.Second), safegen.WithMaxRetryAfter(5*time.Second))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	rep, err := c.Resume(ctx)
	if err != nil {
		return 0, err
	}
	resumed := len(rep.Completed)
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

// one makes logical call i, re-running it under the same intent id after a
// failure: the journal gives it the same key, so this never bills twice.
func (w workerConfig) one(ctx context.Context, c *safegen.Client, i int, onDone func(int, string)) error {
	for {
		g, err := c.Generations.Create(ctx, demoParams(i), safegen.WithIntentID(intentID(i)))
		if err == nil {
			onDone(i, g.ID)
			return nil
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

// runDemoWorker is the child of demo --crash: it prints "done I GEN" per call.
func runDemoWorker(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("demo-worker", "demo-worker (internal)")
	var w workerConfig
	fs.StringVar(&w.url, "url", "", "")
	fs.StringVar(&w.journal, "journal", "", "")
	fs.IntVar(&w.size, "size", 0, "")
	fs.IntVar(&w.concurrency, "concurrency", 1, "")
	fs.StringVar(&w.dialect, "dialect", "default", "")
	if _, code, done := parseFlags(fs, e, args); done {
		return code
	}
	w.apiKey = e.getenv("SAFEGEN_API_KEY")
	if w.url == "" || w.journal == "" || w.size < 1 || w.apiKey == "" {
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
func crashLoop(ctx context.Context, e *env, d *demoConfig, srv *safegentest.Server, jpath string, res *results, prog *progress) error {
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
		cmd := exec.CommandContext(ctx, exe, "demo-worker", "--url", srv.URL, "--journal", jpath,
			"--size", strconv.Itoa(d.size), "--concurrency", strconv.Itoa(d.concurrency), "--dialect", d.dialect)
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
		prog.note(fmt.Sprintf("worker run %d: %s", run, describeRun(werr, killedAt.Load(), before, res.done.Load(), resumed.Load(), d.size)))
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
	kills                                               int
	crash, noKeys                                       bool
	causes                                              map[string]int
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
		switch r.Fault {
		case safegentest.FaultNone, safegentest.FaultLatency:
			if r.Status == 409 {
				t.causes["409 in progress"]++
			}
		case safegentest.FaultStatus, safegentest.FaultRateLimit:
			t.causes[strconv.Itoa(r.Status)]++
		case safegentest.FaultReset:
			t.causes["reset"]++
		case safegentest.FaultDropAfterCommit:
			t.causes["dropped after commit"]++
		}
	}
	t.kills = res.kills
	l := srv.Ledger()
	t.charges = l.Total()
	t.duplicates = len(l.Duplicates())
	if extra := t.charges - size; extra > t.duplicates {
		// Keyless charges cannot be grouped by key: every charge past one
		// per call is a call billed again.
		t.duplicates = extra
	}
	res.mu.Lock()
	for _, g := range res.gens {
		switch {
		case len(g) == 0:
			t.lost++
		case len(g) > 1:
			t.duplicates++
		}
	}
	res.mu.Unlock()
	return t
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
	if t.crash {
		rows = append(rows[:1], append([][2]string{{"worker processes SIGKILLed", strconv.Itoa(t.kills)}}, rows[1:]...)...)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-32s %s\n", r[0], r[1])
	}
	verdict := "every call billed exactly once, none lost"
	if t.duplicates != 0 || t.lost != 0 || t.charges != t.calls {
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
