package saferiver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/riverqueue/river"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

// Worker is the River worker of GenerationArgs jobs: it runs each job's whole
// generation with Generations.Run under IntentID(job.ID), so that every run of
// the job, on any worker, continues the same intent: one key, one charge. It
// is safe for concurrent use by multiple goroutines, as River uses it.
//
// Register it with river.AddWorker(workers, w).
type Worker struct {
	river.WorkerDefaults[GenerationArgs]

	client  *safegen.Client
	journal *pgjournal.Journal
	cfg     config
}

type config struct {
	dir      string
	timeout  time.Duration
	cancelOn []error
	callOpts []safegen.RequestOption
	logger   *slog.Logger
}

// Option configures a Worker.
type Option func(*config) error

// WithOutputDir sets the directory relative output paths are taken in.
// Every worker that may run a job must see the same directory (a shared
// volume). Default: the process's working directory.
func WithOutputDir(dir string) Option {
	return func(c *config) error {
		if dir == "" {
			return errors.New("saferiver: empty output directory")
		}
		c.dir = dir
		return nil
	}
}

// WithTimeout sets the River timeout of each run of a job: its context ends
// then, and River retries it. It must cover a generation's whole wait and
// download, and stay below River's RescueStuckJobsAfter. A negative timeout
// is refused: River never rescues a job without one. Default 0: the River
// client's JobTimeout.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("saferiver: timeout %v: River never rescues a job without a timeout", d)
		}
		c.timeout = d
		return nil
	}
}

// WithCancelOn adds errors that cancel a job (matched with errors.Is) to
// those MapError cancels. Default: none.
func WithCancelOn(errs ...error) Option {
	return func(c *config) error {
		c.cancelOn = append(c.cancelOn, errs...)
		return nil
	}
}

// WithRequestOptions adds per-call options to every Generations.Run of the
// Worker (retries, timeouts, poll intervals). The Worker sets the intent id
// itself. Default: none.
func WithRequestOptions(opts ...safegen.RequestOption) Option {
	return func(c *config) error {
		c.callOpts = append(c.callOpts, opts...)
		return nil
	}
}

// WithLogger sets where the Worker says what it did with a job that did not
// simply complete (a snooze for a lease, a cancellation). Default: silent.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("saferiver: nil logger")
		}
		c.logger = l
		return nil
	}
}

// NewWorker returns the Worker of GenerationArgs jobs. c must have been
// created with safegen.WithJournal(j): the journal records each job's key and
// steps, and its leases decide which worker drives a job at a time. j must be
// in the database River uses, in one namespace per API key.
func NewWorker(c *safegen.Client, j *pgjournal.Journal, opts ...Option) (*Worker, error) {
	if c == nil || j == nil {
		return nil, errors.New("saferiver: NewWorker needs a Client and its pgjournal.Journal")
	}
	cfg := config{dir: ".", logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	return &Worker{client: c, journal: j, cfg: cfg}, nil
}

// Timeout returns the timeout of a run of the job (WithTimeout).
func (w *Worker) Timeout(*river.Job[GenerationArgs]) time.Duration { return w.cfg.timeout }

// OutputPath returns where the job's output goes.
func (w *Worker) OutputPath(job *river.Job[GenerationArgs]) string {
	p := job.Args.Output
	if p == "" {
		p = IntentID(job.ID)
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(w.cfg.dir, p)
}

// Output is what a completed job records in its River row (the "output" key
// of its metadata): the generation, and the verified file.
type Output struct {
	IntentID     string `json:"intent_id"`
	GenerationID string `json:"generation_id"`
	Path         string `json:"path"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256"`
}

// Work runs the job's generation to its output on disk. If another live
// worker holds the job's intent (a Client.Resume elsewhere, or an earlier run
// of this job still alive after River rescued it), it snoozes the job for
// what that lease has left instead. Errors are mapped with MapError.
func (w *Worker) Work(ctx context.Context, job *river.Job[GenerationArgs]) error {
	id := IntentID(job.ID)
	lease, err := w.journal.Acquire(ctx, id)
	if err != nil {
		return err
	}
	if !lease.Held {
		w.cfg.logger.Info("saferiver: intent held by another worker; job snoozed",
			"job_id", job.ID, "intent_id", id, "owner", lease.Owner, "lease_left", lease.Left)
		return river.JobSnooze(jitter(lease.Left + 50*time.Millisecond))
	}
	// A run that stops short hands the intent back at once, so the job's
	// next run may take it on any worker (after success it is free already).
	defer func() {
		if err := w.journal.Release(context.WithoutCancel(ctx), id); err != nil {
			w.cfg.logger.Warn("saferiver: lease not released; it runs out by itself",
				"job_id", job.ID, "intent_id", id, "error", err.Error())
		}
	}()
	path := w.OutputPath(job)
	opts := append(w.cfg.callOpts[:len(w.cfg.callOpts):len(w.cfg.callOpts)], safegen.WithIntentID(id))
	gen, err := w.client.Generations.Run(ctx, &job.Args.GenerationCreateParams, path, opts...)
	if err != nil {
		mapped := MapError(err, w.cfg.cancelOn...)
		var cancel *river.JobCancelError
		if errors.As(mapped, &cancel) {
			w.cfg.logger.Warn("saferiver: job cancelled", "job_id", job.ID, "intent_id", id, "error", err.Error())
		}
		return mapped
	}
	out := Output{IntentID: id, GenerationID: gen.ID, Path: path}
	if gen.Output != nil && gen.Output.SHA256 != "" {
		out.Size, out.SHA256 = gen.Output.Size, gen.Output.SHA256
	} else if out.Size, out.SHA256, err = fileSum(path); err != nil {
		// A job an earlier run finished (its worker died before River
		// heard): Run found the file verified against the journal, and
		// returned the generation as created.
		return err
	}
	// Outside a River client (a test calling Work) there is no row to
	// record into; the job is done all the same.
	_ = river.RecordOutput(ctx, out)
	return nil
}

// fileSum returns the size and hex SHA-256 of the file at path.
func fileSum(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
