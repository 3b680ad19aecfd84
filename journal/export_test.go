package journal

import "os"

// WithSyncFunc makes the File call fn instead of (*os.File).Sync for every
// sync of the journal and of its compacted copy, so a test can see when
// bytes reach stable storage, or make a sync fail. fn is given the file to
// sync; it calls f.Sync() itself when the sync should really happen.
func WithSyncFunc(fn func(f *os.File) error) Option {
	return func(c *config) error {
		c.sync = fn
		return nil
	}
}
