package journal

import (
	"bytes"
	"os"
)

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

// ContentSize is the size of the records of the journal at path: the
// file's size less the zeros an open File writes ahead of them (no record
// ends in a zero byte: its payload is a JSON object).
func ContentSize(path string) (int64, error) {
	data, err := os.ReadFile(path)
	return int64(len(bytes.TrimRight(data, "\x00"))), err
}
