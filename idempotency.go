package safegen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/google/uuid"
)

// NewIdempotencyKey returns a fresh random key (a UUID v4), the kind the
// client makes for every billable call that has none.
func NewIdempotencyKey() (string, error) {
	u, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("safegen: making an idempotency key: %w", err)
	}
	return u.String(), nil
}

// ValidateIdempotencyKey reports whether key is acceptable to the dialect's
// server: 1 to 255 printable ASCII characters (200 for rimp), with no space
// at either end (HTTP would strip it, and the server would store another key).
func ValidateIdempotencyKey(d Dialect, key string) error {
	max := d.maxKeyLen()
	if len(key) == 0 || len(key) > max {
		return fmt.Errorf("%w: length %d, want 1 to %d", ErrInvalidIdempotencyKey, len(key), max)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return fmt.Errorf("%w: byte %d is not printable ASCII", ErrInvalidIdempotencyKey, i)
		}
	}
	if key[0] == ' ' || key[len(key)-1] == ' ' {
		return fmt.Errorf("%w: leading or trailing space", ErrInvalidIdempotencyKey)
	}
	return nil
}

// prepareKey gives a keyed call its key: the caller's, the journal's for the
// same intent, or a fresh one; and journals the intent before anything is
// sent. When the journal already holds the outcome, r.resume carries it.
func (c *Client) prepareKey(ctx context.Context, s *settings, r request) (string, request, error) {
	if r.resume != nil {
		r.journaled = r.resume
		return r.resume.Key, r, ValidateIdempotencyKey(c.s.dialect, r.resume.Key)
	}
	if s.intentID != "" && c.s.journal == nil {
		return "", r, errors.New("safegen: WithIntentID needs a journal: pass WithJournal to NewClient")
	}
	key := s.idempotencyKey
	if key == "" {
		var err error
		if key, err = NewIdempotencyKey(); err != nil {
			return "", r, err
		}
	}
	if err := ValidateIdempotencyKey(c.s.dialect, key); err != nil {
		return "", r, err
	}
	j := c.s.journal
	if j == nil {
		return key, r, nil
	}
	in := Intent{ID: s.intentID, Key: key, Method: r.method, Path: r.path, Body: r.body, CreatedAt: c.s.clock.Now().UTC(), Job: r.job}
	if in.ID == "" {
		in.ID = key
	}
	got, err := j.Begin(ctx, in)
	c.journaled(ctx, JournalEvent{Step: JournalBegin, IntentID: in.ID, IdempotencyKey: got.Key, Err: err,
		New: err == nil && got.Key == key && got.CreatedAt.Equal(in.CreatedAt) && got.Outcome == nil})
	if err != nil {
		return "", r, fmt.Errorf("safegen: %s %s: journal: intent not recorded, nothing sent: %w", r.method, r.path, err)
	}
	if got.Key != key && s.idempotencyKey != "" {
		return "", r, fmt.Errorf("safegen: %s %s: intent %q is journaled under another key %s: %w",
			r.method, r.path, got.ID, got.Key, ErrIdempotencyKeyReuse)
	}
	if !got.sameRequest(in) {
		return "", r, fmt.Errorf("safegen: %s %s: intent %q (key %s) is journaled with another request (%s %s, %d bytes); nothing sent: %w",
			r.method, r.path, got.ID, got.Key, got.Method, got.Path, len(got.Body), ErrIdempotencyKeyReuse)
	}
	if err := ValidateIdempotencyKey(c.s.dialect, got.Key); err != nil {
		return "", r, fmt.Errorf("safegen: journaled intent %q: %w", got.ID, err)
	}
	r.journaled = &got
	if got.Outcome != nil {
		r.resume = &got
	}
	return got.Key, r, nil
}

// fromOutcome answers a call from the outcome the journal recorded.
func (c *Client) fromOutcome(r request, out Outcome) (*response, error) {
	key := r.resume.Key
	if out.Expired {
		return nil, fmt.Errorf("safegen: %s %s: intent %q (key %s) was given up unsent past the key window; reconcile it: %w",
			r.method, r.path, r.resume.ID, key, ErrIntentExpired)
	}
	h := http.Header{}
	if out.RequestID != "" {
		h.Set("X-Request-Id", out.RequestID)
	}
	resp := &response{status: out.StatusCode, header: h, body: out.Body, meta: ResponseMeta{
		StatusCode: out.StatusCode, RequestID: out.RequestID, IdempotencyKey: key, Replayed: true, FromJournal: true,
	}}
	if out.StatusCode < 200 || out.StatusCode > 299 {
		e := newAPIError(r.method, r.path, out.StatusCode, h, out.Body)
		e.IdempotencyKey = key
		return resp, e
	}
	return resp, nil
}

// complete records a definitive answer. A failure is only logged: losing
// an outcome costs a harmless replay later, not a double charge.
func (c *Client) complete(ctx context.Context, s *settings, intentID, key string, out *response) {
	o := Outcome{StatusCode: out.status, Body: out.body, RequestID: out.meta.RequestID, CompletedAt: c.s.clock.Now().UTC()}
	err := c.s.journal.Complete(context.WithoutCancel(ctx), key, o)
	c.journaled(ctx, JournalEvent{Step: JournalComplete, IntentID: intentID, IdempotencyKey: key, Err: err})
	if err != nil {
		s.logger.Warn("safegen: journal: outcome not recorded; a later Resume will replay it",
			"idempotency_key", key, "error", err.Error())
	}
}

// ResumeReport is what Client.Resume did with each pending intent and each
// unfinished job.
type ResumeReport struct {
	// Completed intents got a 2xx (often a replay of a call the crash
	// interrupted).
	Completed []ResumeResult
	// Failed intents got an error: a definitive 4xx (recorded), or a
	// failure that leaves them pending for the next Resume (StillPending).
	Failed []ResumeResult
	// Expired intents were older than the key window minus the margin:
	// not re-sent, since the server may have forgotten the key and would
	// bill again. Reconcile them by hand (their request ids, your records).
	Expired []Intent
	// Jobs are the whole jobs (Generations.Run) that Resume carried on
	// from their last recorded step: their intents appear here, not in
	// Completed or Failed.
	Jobs []JobResult
}

// ResumeResult is one re-driven intent.
type ResumeResult struct {
	Intent     Intent
	StatusCode int
	Body       []byte
	Meta       ResponseMeta
	Err        error
	// StillPending reports that the intent has no outcome yet.
	StillPending bool
}

// JobResult is one whole job that Resume carried on.
type JobResult struct {
	// Intent is the job's intent as the journal held it before Resume.
	Intent Intent
	// From is the step the job resumed after; Reached the last step it
	// completed in this Resume (JobDownloaded when its output is on disk).
	From, Reached JobStep
	// Generation is its generation's last known state; nil if the create
	// was never accepted.
	Generation *Generation
	// Err is why it stopped short (a *JobError), nil when it finished.
	Err error
}

// Decode unmarshals the result's body into v (a *Generation for a create).
func (r ResumeResult) Decode(v any) error {
	if len(r.Body) == 0 {
		return fmt.Errorf("%w: empty body", ErrMalformedResponse)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedResponse, err)
	}
	return nil
}

// resumeConcurrency bounds how many intents Resume re-sends at once.
const resumeConcurrency = 4

// Resume re-sends every pending journaled intent with its original key and
// exact bytes, so calls interrupted by a crash are finished (and replayed,
// not billed again). Intents older than the key window minus the margin are
// reported expired and never re-sent. With a JobJournal it also carries
// every unfinished whole job (Generations.Run) on from its last recorded
// step: it never creates again a job whose create was accepted, it waits for
// it, and it resumes its download from the bytes on disk. It needs
// WithJournal. Call options (retries, timeouts) apply to every re-sent
// intent.
func (c *Client) Resume(ctx context.Context, opts ...Option) (*ResumeReport, error) {
	j := c.s.journal
	if j == nil {
		return nil, errors.New("safegen: Resume needs a journal: pass WithJournal to NewClient")
	}
	s, err := c.callSettings(opts)
	if err != nil {
		return nil, err
	}
	if s.idempotencyKey != "" || s.intentID != "" {
		return nil, errors.New("safegen: Resume takes no idempotency key or intent id")
	}
	pending, err := j.Pending(ctx)
	if err != nil {
		return nil, fmt.Errorf("safegen: journal: listing pending intents: %w", err)
	}
	if jj, ok := j.(JobJournal); ok {
		unfinished, err := jj.Unfinished(ctx)
		if err != nil {
			return nil, fmt.Errorf("safegen: journal: listing unfinished jobs: %w", err)
		}
		seen := make(map[string]bool, len(pending))
		for _, in := range pending {
			seen[in.Key] = true
		}
		for _, in := range unfinished {
			if !seen[in.Key] {
				pending = append(pending, in)
			}
		}
	}
	sort.SliceStable(pending, func(a, b int) bool { return pending[a].CreatedAt.Before(pending[b].CreatedAt) })
	ctx, ob := c.observeCall(ctx, CallInfo{Operation: OpResume})
	defer func() { ob.finish(ResponseMeta{}, ctx.Err()) }()
	report := &ResumeReport{}
	results := make([]*ResumeResult, len(pending))
	jobs := make([]*JobResult, len(pending))
	cutoff := c.s.clock.Now().Add(-(c.s.keyWindow - c.s.resumeMargin))
	sem := make(chan struct{}, resumeConcurrency)
	var wg sync.WaitGroup
	for i, in := range pending {
		if in.Outcome == nil && in.CreatedAt.Before(cutoff) {
			report.Expired = append(report.Expired, in)
			o := Outcome{Expired: true, CompletedAt: c.s.clock.Now().UTC()}
			err := j.Complete(context.WithoutCancel(ctx), in.Key, o)
			c.journaled(ctx, JournalEvent{Step: JournalExpire, IntentID: in.ID, IdempotencyKey: in.Key, Err: err})
			if err != nil {
				c.s.logger.Warn("safegen: journal: expiry not recorded", "idempotency_key", in.Key, "error", err.Error())
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int, in Intent) {
			defer wg.Done()
			defer func() { <-sem }()
			if in.Job != nil {
				jobs[i] = c.resumeJob(ctx, in, opts)
				return
			}
			results[i] = c.resumeOne(ctx, in, opts)
		}(i, in)
	}
	wg.Wait()
	for i, r := range results {
		switch {
		case jobs[i] != nil:
			report.Jobs = append(report.Jobs, *jobs[i])
		case r == nil:
		case r.Err == nil:
			report.Completed = append(report.Completed, *r)
		default:
			report.Failed = append(report.Failed, *r)
		}
	}
	return report, ctx.Err()
}

// resumeJob carries one whole job on from its last recorded step: a create
// without an outcome is re-sent (same key, same bytes), a recorded one is
// read back from the journal; then wait and download as Run does.
func (c *Client) resumeJob(ctx context.Context, in Intent, opts []Option) *JobResult {
	res := &JobResult{Intent: in, From: in.Job.Step}
	cur := in // the copy the pipeline and the recorder advance
	cur.Job = new(Job)
	*cur.Job = *in.Job
	ctx, ob := c.observeCall(ctx, CallInfo{Operation: OpRun, IntentID: in.ID, IdempotencyKey: in.Key})
	op := opFor(Intent{Method: in.Method, Path: in.Path}) // the create itself, not the job
	cctx, cob := c.observeCall(ctx, CallInfo{Operation: op, Method: in.Method, Path: withoutQuery(in.Path), IntentID: in.ID, IdempotencyKey: in.Key})
	resp, err := c.send(cctx, request{op: op, method: in.Method, path: in.Path, body: in.Body, keyed: true, resume: &cur}, opts)
	cob.end(resp, err)
	var gen *Generation
	gen, res.Err = c.Generations.carryOn(ctx, &cur, resp, err, in.Job.Path, opts)
	ob.end(resp, res.Err)
	res.Reached = cur.Job.Step
	res.Generation = gen
	var je *JobError
	if errors.As(res.Err, &je) && je.Generation != nil {
		res.Generation = je.Generation
	}
	return res
}

func (c *Client) resumeOne(ctx context.Context, in Intent, opts []Option) *ResumeResult {
	in.Outcome = nil
	op := opFor(in)
	ctx, ob := c.observeCall(ctx, CallInfo{Operation: op, Method: in.Method, Path: withoutQuery(in.Path), IntentID: in.ID, IdempotencyKey: in.Key})
	resp, err := c.send(ctx, request{op: op, method: in.Method, path: in.Path, body: in.Body, keyed: true, resume: &in}, opts)
	ob.end(resp, err)
	r := &ResumeResult{Intent: in, Err: err}
	if resp != nil {
		r.StatusCode, r.Body, r.Meta = resp.status, resp.body, resp.meta
	}
	var apiErr *APIError
	r.StillPending = err != nil && !(errors.As(err, &apiErr) && definitive(apiErr.StatusCode, apiErr.Code))
	return r
}
