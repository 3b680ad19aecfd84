package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	safegen "github.com/safegen/safegen-go"
	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

// workerEnv carries a worker process's settings (JSON); its presence makes
// a binary that calls IsWorker run as one.
const workerEnv = "SAFEGEN_FLEET_WORKER"

// workerConfig is what a worker process needs; the coordinator passes it in
// workerEnv.
type workerConfig struct {
	ID          string        `json:"id"`
	DatabaseURL string        `json:"database_url"`
	Schema      string        `json:"schema"`
	BaseURL     string        `json:"base_url"`
	APIKey      string        `json:"api_key"`
	Dialect     string        `json:"dialect"`
	OutputDir   string        `json:"output_dir"`
	Concurrency int           `json:"concurrency"`
	Lease       time.Duration `json:"lease"`
	JobTimeout  time.Duration `json:"job_timeout"`
	RescueAfter time.Duration `json:"rescue_after"`
}

// IsWorker reports whether this process was started as a fleet worker.
func IsWorker() bool { return os.Getenv(workerEnv) != "" }

// WorkerMain runs this process as a fleet worker until SIGTERM or SIGINT,
// and returns its exit code.
func WorkerMain() int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(os.Getenv(workerEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "fleet worker: bad settings:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runWorker(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "fleet worker %s: %v\n", cfg.ID, err)
		return 1
	}
	return 0
}

// quickRetry retries a failed job after a short wait that grows with its
// attempts (River's default waits attempt⁴ seconds).
type quickRetry struct{}

func (quickRetry) NextRetry(job *rivertype.JobRow) time.Time {
	return time.Now().Add(min(time.Duration(job.Attempt)*200*time.Millisecond, 2*time.Second))
}

func runWorker(ctx context.Context, cfg workerConfig) error {
	pool, err := Connect(ctx, cfg.DatabaseURL, cfg.Schema, int32(cfg.Concurrency+8))
	if err != nil {
		return err
	}
	defer pool.Close()
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(Namespace), pgjournal.WithOwner(cfg.ID),
		pgjournal.WithLease(cfg.Lease))
	if err != nil {
		return err
	}
	defer j.Close()
	d, err := safegen.ParseDialect(cfg.Dialect)
	if err != nil {
		return err
	}
	c, err := safegen.NewClient(cfg.APIKey, safegen.WithBaseURL(cfg.BaseURL), safegen.WithDialect(d),
		safegen.WithJournal(j), safegen.WithSharedQuota(),
		safegen.WithBackoff(5*time.Millisecond, 2, 100*time.Millisecond), safegen.WithMaxRetries(8),
		safegen.WithAttemptTimeout(5*time.Second), safegen.WithMaxRetryAfter(5*time.Second),
		safegen.WithPollInterval(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := saferiver.NewWorker(c, j, saferiver.WithOutputDir(cfg.OutputDir), saferiver.WithTimeout(cfg.JobTimeout))
	if err != nil {
		return err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		ID:                   cfg.ID,
		Schema:               cfg.Schema,
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Concurrency}},
		Workers:              workers,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		RetryPolicy:          quickRetry{},
		FetchPollInterval:    100 * time.Millisecond,
		FetchCooldown:        20 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		return err
	}
	if err := rc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return rc.Stop(stopCtx)
}
