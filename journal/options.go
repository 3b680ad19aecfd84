package journal

import (
	"errors"
	"time"
)

// DefaultRetention is how long a File keeps a completed intent: one server
// key window (24 h) plus a margin, so that a re-run with the same intent id
// still finds the recorded outcome instead of calling again.
const DefaultRetention = 25 * time.Hour

// DefaultCompactThreshold is the file size under which a File never compacts
// itself.
const DefaultCompactThreshold = 1 << 20

// DefaultFlushInterval bounds how long a Complete waits in memory when no
// Begin comes to carry it to disk.
const DefaultFlushInterval = 100 * time.Millisecond

// Option configures Open. Options apply in order; the last one wins.
type Option func(*config) error

type config struct {
	retention     time.Duration
	compactAt     int64
	flushInterval time.Duration
	clock         func() time.Time
	strict        bool
	mustExist     bool
	sync          syncFunc // nil: (*os.File).Sync; tests observe or fail it
}

func defaultConfig() config {
	return config{
		retention:     DefaultRetention,
		compactAt:     DefaultCompactThreshold,
		flushInterval: DefaultFlushInterval,
		clock:         time.Now,
	}
}

// WithRetention sets how long a finished intent is kept after it finished
// (its outcome was recorded and its job, if it has one, is Done; on the
// journal's clock) before compaction may drop it. Pending intents and
// unfinished jobs are never dropped. Default DefaultRetention (25 h).
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return errors.New("journal: negative retention")
		}
		c.retention = d
		return nil
	}
}

// WithClock sets the clock that dates outcomes and job steps for
// retention. Default time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("journal: nil clock")
		}
		c.clock = now
		return nil
	}
}

// WithCompactThreshold sets the file size above which the File rewrites
// itself once at least half of its bytes are dead (completed intents past
// retention, outcomes merged into their intents, duplicates). Zero disables
// automatic compaction; Compact still works. Default DefaultCompactThreshold
// (1 MiB).
func WithCompactThreshold(bytes int64) Option {
	return func(c *config) error {
		if bytes < 0 {
			return errors.New("journal: negative compaction threshold")
		}
		c.compactAt = bytes
		return nil
	}
}

// WithFlushInterval bounds how long a Complete may stay in memory before it is
// written and synced when no Begin carries it sooner. Default
// DefaultFlushInterval (100 ms).
func WithFlushInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("journal: flush interval must be positive")
		}
		c.flushInterval = d
		return nil
	}
}

// WithStrict makes Open fail with an error wrapping ErrCorrupt when the file
// holds damaged records, instead of repairing it. Default: repair, and say
// what was dropped in Recovery.
func WithStrict() Option {
	return func(c *config) error {
		c.strict = true
		return nil
	}
}

// WithMustExist makes Open refuse a journal file that does not exist (an
// error wrapping fs.ErrNotExist) instead of creating it and its parent
// directories: for tools that only read or finish an existing journal, where
// a mistyped path must not leave an empty journal behind. Default off.
func WithMustExist() Option {
	return func(c *config) error {
		c.mustExist = true
		return nil
	}
}
