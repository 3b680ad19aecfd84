package journal

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	safegen "github.com/safegen/safegen-go"
)

// Memory is a safegen.JobJournal and safegen.SpendJournal held in memory
// only. It deduplicates intent ids and keys within one process run and
// forgets everything when the process ends, so it protects nothing across a
// crash: use it in tests, or in processes that only want intent-id
// deduplication. It keeps completed intents and the spend of every key for
// as long as it lives. It is safe for concurrent use by multiple goroutines.
type Memory struct {
	mu    sync.Mutex
	byID  map[string]*memEntry
	byKey map[string]*memEntry
	next  uint64
	spend safegen.SpendLedger
}

type memEntry struct {
	in    safegen.Intent
	order uint64
}

var _ safegen.JobJournal = (*Memory)(nil)

// NewMemory returns an empty in-memory journal.
func NewMemory() *Memory {
	return &Memory{byID: make(map[string]*memEntry), byKey: make(map[string]*memEntry)}
}

// Begin records in, with its Job if it has one, or returns the intent
// already recorded under in.ID unchanged (compare its bytes with yours). A
// key already recorded under another id is an error wrapping ErrKeyInUse.
func (m *Memory) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	if err := ctx.Err(); err != nil {
		return safegen.Intent{}, err
	}
	if err := in.Validate(); err != nil {
		return safegen.Intent{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.byID[in.ID]; ok {
		return cloneIntent(e.in), nil
	}
	if e, ok := m.byKey[in.Key]; ok {
		return safegen.Intent{}, fmt.Errorf("%w: key %q is held by intent %q", ErrKeyInUse, in.Key, e.in.ID)
	}
	e := &memEntry{in: normalize(in), order: m.next}
	m.next++
	m.byID[in.ID] = e
	m.byKey[in.Key] = e
	return cloneIntent(e.in), nil
}

// Complete records the outcome of the intent with this key. Completing an
// unknown key is an error wrapping ErrNotFound; completing a completed one
// does nothing.
func (m *Memory) Complete(ctx context.Context, key string, out safegen.Outcome) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byKey[key]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	if e.in.Outcome == nil {
		o := cloneOutcome(out)
		o.CompletedAt = o.CompletedAt.Round(0).UTC()
		e.in.Outcome = &o
	}
	return nil
}

// Pending lists the intents without an outcome, oldest first (by CreatedAt,
// then by order of Begin).
func (m *Memory) Pending(ctx context.Context) ([]safegen.Intent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	var ps []ordered
	for _, e := range m.byID {
		if e.in.Outcome == nil {
			ps = append(ps, ordered{e.in, e.order}) // Body is never changed in place
		}
	}
	m.mu.Unlock()
	return sortedCopies(ps), nil
}

// Advance records job as the progress of the whole job of the intent with
// this key, replacing the one recorded before. An unknown key is an error
// wrapping ErrNotFound.
func (m *Memory) Advance(ctx context.Context, key string, job safegen.Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	jb := normalizeJob(job)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byKey[key]
	if !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	e.in.Job = &jb
	return nil
}

// Unfinished lists the intents whose Job is not Done, with or without an
// outcome, oldest first (by CreatedAt, then by order of Begin).
func (m *Memory) Unfinished(ctx context.Context) ([]safegen.Intent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	var ps []ordered
	for _, e := range m.byID {
		if unfinished(e.in) {
			ps = append(ps, ordered{e.in, e.order})
		}
	}
	m.mu.Unlock()
	return sortedCopies(ps), nil
}

// unfinished reports whether in starts a whole job that needs more.
func unfinished(in safegen.Intent) bool { return in.Job != nil && !in.Job.Done() }

// ordered is an intent with the order of its Begin.
type ordered struct {
	in    safegen.Intent
	order uint64
}

// sortedCopies returns deep copies of the intents, oldest first: by
// CreatedAt, then by order of Begin.
func sortedCopies(ps []ordered) []safegen.Intent {
	slices.SortFunc(ps, func(a, b ordered) int {
		if c := a.in.CreatedAt.Compare(b.in.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.order, b.order)
	})
	out := make([]safegen.Intent, len(ps))
	for i, p := range ps {
		out[i] = cloneIntent(p.in)
	}
	return out
}

// normalize returns a deep copy of in with its times stripped of monotonic
// readings and in UTC, the form they take after a trip through the file.
func normalize(in safegen.Intent) safegen.Intent {
	in = cloneIntent(in)
	in.CreatedAt = in.CreatedAt.Round(0).UTC()
	if in.Outcome != nil {
		in.Outcome.CompletedAt = in.Outcome.CompletedAt.Round(0).UTC()
	}
	if in.Job != nil {
		*in.Job = normalizeJob(*in.Job)
	}
	return in
}

// normalizeJob returns job with its time stripped of its monotonic reading
// and in UTC.
func normalizeJob(job safegen.Job) safegen.Job {
	job.UpdatedAt = job.UpdatedAt.Round(0).UTC()
	return job
}

// cloneIntent returns a copy of in that shares no memory with it, so neither
// the caller nor the journal can change the other's bytes.
func cloneIntent(in safegen.Intent) safegen.Intent {
	in.Body = bytes.Clone(in.Body)
	if in.Outcome != nil {
		o := cloneOutcome(*in.Outcome)
		in.Outcome = &o
	}
	if in.Job != nil {
		jb := *in.Job // a Job holds no references
		in.Job = &jb
	}
	return in
}

func cloneOutcome(o safegen.Outcome) safegen.Outcome {
	o.Body = bytes.Clone(o.Body)
	return o
}
