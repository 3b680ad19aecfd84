package safegen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// ErrGenerationFailed means the generation a job waited for ended failed or
// canceled, so there is no output to download. The error is a *JobError
// carrying the generation (its Error says why).
var ErrGenerationFailed = errors.New("safegen: generation ended without an output")

// JobError is why a whole job (Run, or a job carried on by Resume) stopped
// before its output was on disk. It always says how far the job got and, once
// the create was accepted, carries the generation: a job that was paid for is
// never reduced to an error without its id.
type JobError struct {
	// IntentID names the job in the journal ("" without a journal).
	IntentID string
	// Step is the last step the job completed: JobStarted when the create
	// itself failed, JobAccepted when waiting failed, JobTerminal when the
	// generation failed or the download failed.
	Step JobStep
	// Generation is the last known state of the generation; nil when the
	// create was never accepted.
	Generation *Generation
	// Err is the cause: the create's, Wait's or Download's error, or
	// ErrGenerationFailed.
	Err error
}

// Error returns one line: the job, the generation and what stopped it.
func (e *JobError) Error() string {
	var b strings.Builder
	b.WriteString("safegen: job")
	if e.IntentID != "" {
		b.WriteString(" " + e.IntentID)
	}
	if g := e.Generation; g != nil {
		fmt.Fprintf(&b, " (generation %s, %s)", g.ID, g.Status)
	}
	switch {
	case errors.Is(e.Err, ErrGenerationFailed):
		b.WriteString(": generation ended " + string(e.Generation.Status))
		if ge := e.Generation.Error; ge != nil && (ge.Code != "" || ge.Message != "") {
			b.WriteString(": " + clean(strings.TrimSpace(ge.Code+" "+ge.Message), 200))
		}
		return b.String()
	case e.Step == JobStarted:
		b.WriteString(": create: ")
	case e.Step == JobAccepted:
		b.WriteString(": waiting: ")
	default:
		b.WriteString(": download: ")
	}
	b.WriteString(strings.TrimPrefix(e.Err.Error(), "safegen: "))
	return b.String()
}

// Unwrap returns the cause.
func (e *JobError) Unwrap() error { return e.Err }

// Run is the whole paid job: create the generation (billed once: one key,
// journaled before the first byte when the Client has a journal), wait for it
// (webhook events fed to Notify end the wait at once; polling is the backup),
// and download its output to path, resumable and verified (see Download). It
// returns the succeeded generation once the output is on disk.
//
// With a JobJournal (journal.File, journal.Memory, pgjournal) and
// WithIntentID, each step is recorded: a re-run of Run with the same intent
// id after a crash, or Client.Resume, carries the job on from its last step.
// It never creates again a job whose create was accepted; it waits for that
// generation and resumes the download from the bytes already on disk. A
// re-run with another path for the same intent id is refused: the job's
// output has one home.
//
// A generation that ends failed or canceled returns a *JobError matching
// ErrGenerationFailed. Any other failure after the create was accepted
// returns a *JobError carrying the generation, so its id is never lost.
func (s *GenerationsService) Run(ctx context.Context, params *GenerationCreateParams, path string, opts ...RequestOption) (*Generation, error) {
	if ctx == nil {
		return nil, errors.New("safegen: nil context")
	}
	if err := params.validate(); err != nil {
		return nil, err
	}
	if err := checkOutputPath(path); err != nil {
		return nil, err
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	ctx, ob := s.c.startCall(ctx, OpRun, "", "", opts)
	job := &Job{Step: JobStarted, Path: path, UpdatedAt: s.c.s.clock.Now().UTC()}
	resp, err := s.c.call(ctx, request{op: OpCreate, method: http.MethodPost, path: "/v1/generations", body: body, params: params, keyed: true, job: job}, opts, nil)
	var in *Intent
	if resp != nil {
		in = resp.intent
	}
	var gen *Generation
	if in != nil && in.Job != nil && in.Job.Path != path {
		err = fmt.Errorf("%w: intent %q is a job writing to %q, not %q", ErrInvalidRequest, in.ID, in.Job.Path, path)
	} else {
		gen, err = s.carryOn(ctx, in, resp, err, path, opts)
	}
	ob.end(resp, err)
	return gen, err
}

// carryOn takes a job from its create's answer (or recorded step) to its
// output on disk, recording each step. in is the journaled intent (nil
// without a journal); resp and err are the create's answer.
func (s *GenerationsService) carryOn(ctx context.Context, in *Intent, resp *response, err error, path string, opts []RequestOption) (*Generation, error) {
	jr := &jobRecorder{c: s.c, in: in}
	// The key and intent id name the create; the safe calls that follow
	// (polls, the download, a URL refresh) take the rest of the options.
	opts = append(opts[:len(opts):len(opts)], withoutKey)
	if err != nil {
		if apiErr := (*APIError)(nil); errors.As(err, &apiErr) && definitive(apiErr.StatusCode, apiErr.Code) {
			// The create was refused for good (402, 422, a key reuse…):
			// the job is over, nothing was created.
			jr.advance(ctx, Job{Step: JobTerminal, Status: StatusFailed})
		}
		return nil, jr.fail(JobStarted, nil, err)
	}
	gen, err := decodeGeneration(resp)
	if err != nil {
		return nil, jr.fail(JobStarted, nil, err)
	}
	recorded := jr.job()
	if recorded.GenerationID != "" && recorded.GenerationID != gen.ID {
		return nil, jr.fail(JobStarted, gen, fmt.Errorf("%w: the journal's job is generation %s, the create answered %s",
			ErrMalformedResponse, recorded.GenerationID, gen.ID))
	}
	if recorded.Step == JobDownloaded {
		if recorded.SHA256 != "" && fileHolds(path, recorded.Size, recorded.SHA256, nil) {
			gen.Status = StatusSucceeded
			if gen.Output == nil {
				// The recorded create predates the output: describe the
				// file on disk (no URL: nothing more to fetch).
				gen.Output = &GenerationOutput{Size: recorded.Size, SHA256: recorded.SHA256}
			}
			return gen, nil
		}
		// The file was moved or damaged since: fetch it again.
	}
	if recorded.Step == JobStarted {
		jr.advance(ctx, Job{Step: JobAccepted, GenerationID: gen.ID, Status: gen.Status})
	}
	if !gen.Status.Terminal() || recorded.Step == JobTerminal || recorded.Step == JobDownloaded {
		// A recorded create body is old news: the generation moved on.
		done, err := s.Wait(ctx, gen.ID, opts...)
		if err != nil {
			return nil, jr.fail(JobAccepted, gen, err)
		}
		done.Meta = gen.Meta
		gen = done
	}
	if recorded.Step != JobTerminal && recorded.Step != JobDownloaded {
		jr.advance(ctx, Job{Step: JobTerminal, GenerationID: gen.ID, Status: gen.Status})
	}
	if gen.Status != StatusSucceeded {
		return nil, jr.fail(JobTerminal, gen, ErrGenerationFailed)
	}
	res, err := s.Download(ctx, gen, path, opts...)
	if err != nil {
		return nil, jr.fail(JobTerminal, gen, err)
	}
	jr.advance(ctx, Job{Step: JobDownloaded, GenerationID: gen.ID, Status: gen.Status, Size: res.Size, SHA256: res.SHA256})
	return gen, nil
}

// withoutKey drops a call's idempotency key and intent id.
func withoutKey(s *settings) error {
	s.idempotencyKey, s.intentID = "", ""
	return nil
}

// jobRecorder records a job's steps in the Client's journal when it is a
// JobJournal; otherwise it only remembers them.
type jobRecorder struct {
	c  *Client
	in *Intent
}

// job returns the job's recorded progress (the zero Job when none).
func (r *jobRecorder) job() Job {
	if r.in == nil || r.in.Job == nil {
		return Job{Step: JobStarted}
	}
	return *r.in.Job
}

// advance records a step. A failure is only logged: losing a step costs
// redoing it (waiting again, re-checking the file), never a second charge.
func (r *jobRecorder) advance(ctx context.Context, j Job) {
	if r.in == nil {
		return
	}
	prev := r.job()
	if j.Path == "" {
		j.Path = prev.Path
	}
	j.UpdatedAt = r.c.s.clock.Now().UTC()
	r.in.Job = &j
	jj, ok := r.c.s.journal.(JobJournal)
	if !ok {
		return
	}
	err := jj.Advance(context.WithoutCancel(ctx), r.in.Key, j)
	r.c.journaled(ctx, JournalEvent{Step: JournalAdvance, IntentID: r.in.ID, IdempotencyKey: r.in.Key, Job: j.Step, Err: err})
	if err != nil {
		r.c.s.logger.Warn("safegen: journal: job step not recorded; a resumed job will redo it",
			"intent_id", r.in.ID, "step", string(j.Step), "error", err.Error())
	}
}

func (r *jobRecorder) fail(step JobStep, gen *Generation, err error) error {
	id := ""
	if r.in != nil {
		id = r.in.ID
	}
	return &JobError{IntentID: id, Step: step, Generation: gen, Err: err}
}

// checkOutputPath refuses an output path that cannot be written: empty, or
// a directory.
func checkOutputPath(path string) error {
	if strings.TrimSpace(path) == "" {
		return fmt.Errorf("%w: empty output path", ErrInvalidRequest)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%w: output path %s is a directory", ErrInvalidRequest, path)
	}
	return nil
}
