package safegen

import (
	"bytes"
	"context"
	"errors"
	"time"
)

// KeyJournal persists the intent of every billable call before its first byte
// is sent, so that its idempotency key survives a crash of the caller's
// process. Implementations live in package journal (file, memory) and
// journal/pgjournal (PostgreSQL). They must be safe for concurrent use.
type KeyJournal interface {
	// Begin records a new intent durably before returning, or returns the
	// intent already recorded under in.ID (its key, its bytes, its outcome).
	Begin(ctx context.Context, in Intent) (Intent, error)
	// Complete records the definitive outcome of the intent with this key.
	// It may be batched: losing it only costs a harmless replay.
	Complete(ctx context.Context, key string, out Outcome) error
	// Pending lists the intents that have no outcome yet, oldest first.
	Pending(ctx context.Context) ([]Intent, error)
}

// Intent is one logical billable call as the journal records it: enough to
// send it again, byte for byte, under the same idempotency key.
type Intent struct {
	// ID is the caller's name for the logical call (WithIntentID); it is
	// the key itself when the caller gave none.
	ID string `json:"id"`
	// Key is the Idempotency-Key sent on every attempt.
	Key string `json:"key"`
	// Method and Path are the request line, Path including any query.
	Method string `json:"method"`
	Path   string `json:"path"`
	// Body is the exact request body sent on every attempt.
	Body []byte `json:"body,omitempty"`
	// CreatedAt is when the intent was first recorded; the server forgets
	// the key one key window (24 h by default) after its first use.
	CreatedAt time.Time `json:"created_at"`
	// Outcome is nil while the intent is pending.
	Outcome *Outcome `json:"outcome,omitempty"`
	// Job is the progress of the whole job (Generations.Run) this intent
	// starts; nil for a plain call.
	Job *Job `json:"job,omitempty"`
}

// Pending reports whether the intent has no recorded outcome.
func (in Intent) Pending() bool { return in.Outcome == nil }

// sameRequest reports whether other describes the same request bytes.
func (in Intent) sameRequest(other Intent) bool {
	return in.Method == other.Method && in.Path == other.Path && bytes.Equal(in.Body, other.Body)
}

// Validate reports whether the intent can be journaled.
func (in Intent) Validate() error {
	switch {
	case in.ID == "":
		return errors.New("safegen: intent has no id")
	case in.Key == "":
		return errors.New("safegen: intent has no idempotency key")
	case in.Method == "" || in.Path == "":
		return errors.New("safegen: intent has no method or path")
	case in.CreatedAt.IsZero():
		return errors.New("safegen: intent has no creation time")
	}
	return nil
}

// JobStep is how far a whole job (Generations.Run) has got. Each step is
// recorded after it happened, so a job resumes from the step after its last
// recorded one.
type JobStep string

// The steps of a whole job, in order.
const (
	// JobStarted: the intent is recorded, before the create's first byte.
	JobStarted JobStep = "started"
	// JobAccepted: the server accepted the create; Job.GenerationID is set.
	// A resumed job never creates again: it waits for this generation.
	JobAccepted JobStep = "accepted"
	// JobTerminal: the generation reached a terminal status (Job.Status).
	JobTerminal JobStep = "terminal"
	// JobDownloaded: the output is at Job.Path, its size and sha256
	// verified and fsynced. The job is done.
	JobDownloaded JobStep = "downloaded"
)

// Job is the recorded progress of a whole paid job: create, wait, download.
type Job struct {
	// Step is the last step recorded.
	Step JobStep `json:"step"`
	// Path is where the output goes (Run's path argument).
	Path string `json:"path"`
	// GenerationID is set from JobAccepted on.
	GenerationID string `json:"generation_id,omitempty"`
	// Status is the generation's last known status.
	Status GenerationStatus `json:"status,omitempty"`
	// Size and SHA256 describe the output on disk (JobDownloaded).
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// UpdatedAt is when the step was recorded.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Done reports whether the job needs nothing more: its output is on disk,
// or its generation ended failed or canceled (nothing to download).
func (j *Job) Done() bool {
	if j == nil {
		return true
	}
	return j.Step == JobDownloaded || (j.Step == JobTerminal && j.Status != StatusSucceeded)
}

// JobJournal is a KeyJournal that also records the steps of whole jobs, so
// Resume (or a re-run of Generations.Run with the same intent id) carries an
// unfinished job on from its last step instead of starting it again. The
// journals of this module (journal.File, journal.Memory, pgjournal.Journal)
// implement it. With a KeyJournal that does not, Run still never bills twice
// (the create is journaled), but a resumed job starts again from its create,
// which the server replays.
type JobJournal interface {
	KeyJournal
	// Advance records the job's progress for the intent with this key. It
	// may be batched like Complete: losing a step only costs redoing it
	// (waiting again, re-checking the file on disk). An unknown key is an
	// error wrapping ErrIntentNotFound.
	Advance(ctx context.Context, key string, job Job) error
	// Unfinished lists the intents whose Job is not Done, oldest first,
	// whether or not their create has an outcome.
	Unfinished(ctx context.Context) ([]Intent, error)
}

// Outcome is the definitive answer to an intent: the server's status and body
// (kept so a re-run of the same intent returns it without a new call), or the
// client's decision that the intent expired unsent.
type Outcome struct {
	// StatusCode and Body are the server's definitive response (a 2xx, or a
	// 4xx other than 409 request_in_progress).
	StatusCode int    `json:"status,omitempty"`
	Body       []byte `json:"body,omitempty"`
	// RequestID is the server's X-Request-Id for that response.
	RequestID string `json:"request_id,omitempty"`
	// Expired is set when Resume gave the intent up because it was older
	// than the server's key window: re-sending it could bill twice.
	Expired bool `json:"expired,omitempty"`
	// CompletedAt is when the outcome was recorded.
	CompletedAt time.Time `json:"completed_at"`
}

// The errors of the KeyJournal contract, returned (wrapped) by every journal
// implementation (journal.File, journal.Memory, pgjournal.Journal) and matched
// with errors.Is. Package journal re-exports them under its historical names.
var (
	// ErrKeyInUse means Begin was given an idempotency key that the journal
	// already holds under another intent id. It also matches
	// ErrIdempotencyKeyReuse: one key, two logical calls.
	ErrKeyInUse error = keyInUseError{}
	// ErrIntentNotFound means Complete or Advance was given a key the
	// journal does not hold.
	ErrIntentNotFound = errors.New("journal: no intent with this key")
	// ErrJournalClosed means the journal was used after Close.
	ErrJournalClosed = errors.New("journal: closed")
)

// keyInUseError is ErrKeyInUse: a sentinel that is also a key reuse.
type keyInUseError struct{}

func (keyInUseError) Error() string {
	return "journal: idempotency key already recorded under another intent id"
}

// Is makes ErrKeyInUse match ErrIdempotencyKeyReuse.
func (keyInUseError) Is(target error) bool { return target == ErrIdempotencyKeyReuse }
