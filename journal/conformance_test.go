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

// reopening is a JobJournal that reopens its File after every Begin,
// Complete and Advance.
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
