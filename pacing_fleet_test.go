package safegen

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safegen/safegen-go/safegentest"
)

// quotaWorkerEnv turns the test binary into one worker process of
// BenchmarkSharedQuotaFleet (see TestMain): it holds the worker's settings.
const quotaWorkerEnv = "SAFEGEN_QUOTA_WORKER"

// quotaFleet is one run: processes sharing one API key of a safegentest
// server whose quota (limit requests a window) is below their demand.
type quotaFleet struct {
	processes   int
	concurrency int // creates in flight per process
	limit       int
	window      time.Duration
	windows     int  // how long the processes run
	shared      bool // WithSharedQuota; else WithRateLimit at the whole key's rate
}

type fleetFigures struct {
	requests, limited, charges int
	quota                      float64 // what the quota allowed over the run
	perProcess                 []int
}

func (f fleetFigures) limitedShare() float64 { return float64(f.limited) / float64(max(f.requests, 1)) }
func (f fleetFigures) usedShare() float64    { return float64(f.charges) / f.quota }

func (f fleetFigures) String() string {
	return fmt.Sprintf("%d creates sent, %d answered 429 (%.2f%%), %d billed = %.1f%% of the quota (%.0f), per process %v",
		f.requests, f.limited, 100*f.limitedShare(), f.charges, 100*f.usedShare(), f.quota, f.perProcess)
}

// run starts the processes (this test binary, as workers) at once and
// counts, from the server's requests and ledger, what they got.
func (fl quotaFleet) run(tb testing.TB) fleetFigures {
	tb.Helper()
	srv := safegentest.NewServer(tb, safegentest.WithRateLimit(fl.limit, 10), safegentest.WithRateWindow(fl.window),
		safegentest.WithOutputSize(0))
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	run := fl.window * time.Duration(fl.windows)
	mode := "local"
	if fl.shared {
		mode = "shared"
	}
	cfg := strings.Join([]string{srv.URL, mode, strconv.Itoa(fl.concurrency), run.String(),
		strconv.FormatFloat(float64(fl.limit)/fl.window.Seconds(), 'f', -1, 64)}, " ")
	figs := fleetFigures{perProcess: make([]int, fl.processes)}
	var wg sync.WaitGroup
	var failed atomic.Value
	start := make(chan struct{})
	for i := 0; i < fl.processes; i++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), quotaWorkerEnv+"="+cfg, "SAFEGEN_API_KEY="+srv.APIKey)
		out, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_ = stdin.Close() // the go signal: all processes start together
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if n, ok := strings.CutPrefix(sc.Text(), "created "); ok {
					figs.perProcess[i], _ = strconv.Atoi(n)
				}
			}
			if err := cmd.Wait(); err != nil {
				failed.Store(fmt.Errorf("worker %d: %w", i, err))
			}
		}()
	}
	close(start)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	for _, r := range srv.Requests() {
		if r.Method != http.MethodPost || r.Path != "/v1/generations" {
			continue
		}
		figs.requests++
		if r.Status == http.StatusTooManyRequests {
			figs.limited++
		}
	}
	figs.charges = srv.Ledger().Total()
	figs.quota = float64(fl.limit) * run.Seconds() / fl.window.Seconds()
	return figs
}

// quotaWorker is one process of the fleet: concurrency loops of creates
// until the run time is over; it prints how many were created.
func quotaWorker(cfg string) int {
	f := strings.Fields(cfg)
	if len(f) != 5 {
		fmt.Fprintln(os.Stderr, "quota worker: bad settings:", cfg)
		return 2
	}
	conc, _ := strconv.Atoi(f[2])
	run, _ := time.ParseDuration(f[3])
	rps, _ := strconv.ParseFloat(f[4], 64)
	opts := []Option{WithBaseURL(f[0]), WithMaxRetries(3), WithBackoff(50*time.Millisecond, 2, time.Second)}
	if f[1] == "shared" {
		opts = append(opts, WithSharedQuota())
	} else {
		opts = append(opts, WithRateLimit(rps, 1))
	}
	c, err := NewClient(os.Getenv("SAFEGEN_API_KEY"), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	_, _ = bufio.NewReader(os.Stdin).ReadByte() // wait for the go signal (EOF)
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	params := &GenerationCreateParams{Model: "img-2", Prompt: "a quota shared by a fleet"}
	var created atomic.Int64
	var wg sync.WaitGroup
	for k := 0; k < conc; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := c.Generations.Create(ctx, params); err == nil {
					created.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("created %d\n", created.Load())
	return 0
}

// BenchmarkSharedQuotaFleet: four processes share one API key whose quota
// (48 creates a 2 s window, 24 a second) is far below their demand (four
// creates in flight each, back to back). Each b.N runs six windows, in real
// time, once with WithSharedQuota and once with local pacing only
// (WithRateLimit at the whole key's rate in every process, as a process
// that believes it is alone would be paced). The figures come from the
// server: 429s among the creates it saw, and charges in its ledger against
// what the quota allowed.
//
//	go test -run '^$' -bench SharedQuotaFleet -benchtime 1x .
func BenchmarkSharedQuotaFleet(b *testing.B) {
	for _, shared := range []bool{true, false} {
		name := "local-pacing-only"
		if shared {
			name = "shared-quota"
		}
		b.Run(name, func(b *testing.B) {
			fl := quotaFleet{processes: 4, concurrency: 4, limit: 48, window: 2 * time.Second, windows: 6, shared: shared}
			var sum fleetFigures
			for i := 0; i < b.N; i++ {
				f := fl.run(b)
				b.Logf("%s: %v", name, f)
				sum.requests += f.requests
				sum.limited += f.limited
				sum.charges += f.charges
				sum.quota += f.quota
			}
			b.ReportMetric(100*sum.limitedShare(), "%429")
			b.ReportMetric(100*sum.usedShare(), "%quota")
			if shared && (sum.limitedShare() > 0.02 || sum.usedShare() < 0.85) {
				b.Errorf("WithSharedQuota: %.2f%% 429s (want <= 2%%), %.1f%% of the quota used (want >= 85%%)",
					100*sum.limitedShare(), 100*sum.usedShare())
			}
		})
	}
}
