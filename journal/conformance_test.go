package journal_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/journal/journaltest"
)

func TestMemoryConformance(t *testing.T) {
	journaltest.Run(t, func(*testing.T) safegen.KeyJournal { return journal.NewMemory() })
}

func TestFileConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) safegen.KeyJournal { return openFile(t, filepath.Join(t.TempDir(), "journal")) })
}

// TestFileReopenedConformance runs the suite over a File closed and opened
// again after every change, so every answer comes from what reached the disk.
func TestFileReopenedConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) safegen.KeyJournal {
		r := &reopening{t: t, path: filepath.Join(t.TempDir(), "journal")}
		r.j = openFile(t, r.path)
		return r
	})
}

func openFile(t *testing.T, path string, opts ...journal.Option) *journal.File {
	t.Helper()
	j, err := journal.Open(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { j.Close() })
	return j
}

// reopening is a JobJournal and SpendJournal that reopens its File after
// every Begin, Complete, Advance, Reserve and Settle.
type reopening struct {
	t    *testing.T
	path string
	mu   sync.Mutex
	j    *journal.File
}

func (r *reopening) reopen() {
	require.NoError(r.t, r.j.Close())
	j, err := journal.Open(r.path)
	require.NoError(r.t, err)
	require.Zero(r.t, j.Recovery(), "a cleanly closed journal needs no repair")
	r.j = j
	r.t.Cleanup(func() { j.Close() })
}

func (r *reopening) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.j.Begin(ctx, in)
}

func (r *reopening) Complete(ctx context.Context, key string, out safegen.Outcome) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.j.Complete(ctx, key, out)
}

func (r *reopening) Pending(ctx context.Context) ([]safegen.Intent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.j.Pending(ctx)
}

func (r *reopening) Advance(ctx context.Context, key string, job safegen.Job) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.j.Advance(ctx, key, job)
}

func (r *reopening) Unfinished(ctx context.Context) ([]safegen.Intent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.j.Unfinished(ctx)
}

func (r *reopening) Reserve(ctx context.Context, key string, credits, limit float64) (safegen.SpendReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.j.Reserve(ctx, key, credits, limit)
}

func (r *reopening) Settle(ctx context.Context, key string, charged float64) (safegen.SpendReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.j.Settle(ctx, key, charged)
}

func (r *reopening) Spend(ctx context.Context) (safegen.SpendReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.j.Spend(ctx)
}

// The spend outlives the File: a journal opened again on the same path
// starts from the totals the last one left.
func TestFileSpendReopen(t *testing.T) {
	journaltest.RunSpendReopen(t, func(t *testing.T) func() safegen.SpendJournal {
		path := filepath.Join(t.TempDir(), "journal")
		var j *journal.File
		return func() safegen.SpendJournal {
			if j != nil {
				require.NoError(t, j.Close())
			}
			j = openFile(t, path, journal.WithStrict())
			return j
		}
	})
}
