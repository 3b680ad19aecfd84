package journal

import (
	"context"
	"fmt"
	"os"
	"runtime"
)

// syncFunc makes a file's written bytes durable. It is (*os.File).Sync
// unless a test sets config.sync to observe the order of writes, syncs and
// requests, or to make a sync fail.
type syncFunc func(f *os.File) error

// syncFile syncs f with the configured syncFunc.
func (c *config) syncFile(f *os.File) error {
	if c.sync != nil {
		return c.sync(f)
	}
	return f.Sync()
}

// appendLocked queues frame for the next group commit and returns the
// appended count its durability waits for.
func (j *File) appendLocked(frame []byte) uint64 {
	j.buf = append(j.buf, frame...)
	j.appended += uint64(len(frame))
	j.total += int64(len(frame))
	return j.appended
}

// waitDurable returns once every byte appended up to seq is synced to disk.
// If no commit is running, the caller leads one itself, so a lone caller pays
// one write and one fsync and no hand-off; callers arriving during a commit
// queue up and share the next one.
func (j *File) waitDurable(ctx context.Context, seq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.durable < seq {
		if j.err != nil {
			return j.err
		}
		if !j.flushing {
			j.flushing = true
			// Let callers that are about to append (a wave of calls
			// returning together) join this commit instead of the next.
			j.mu.Unlock()
			runtime.Gosched()
			j.mu.Lock()
			if j.writeLocked() == nil && !j.closed {
				j.maybeCompactLocked()
			}
			j.endLeadLocked()
			continue
		}
		ch := j.flushed
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			j.mu.Lock()
			return ctx.Err()
		}
		j.mu.Lock()
	}
	return nil
}

// writeLocked writes and syncs buf. The caller holds mu and the leader role
// (flushing); mu is released during the I/O so that others keep appending.
func (j *File) writeLocked() error {
	if len(j.buf) == 0 {
		return nil
	}
	batch, target := j.buf, j.appended
	j.buf, j.spare = j.spare[:0], nil
	j.mu.Unlock()
	_, err := j.f.Write(batch)
	if err == nil {
		err = j.cfg.syncFile(j.f)
	}
	j.mu.Lock()
	if cap(batch) <= 1<<20 {
		j.spare = batch[:0]
	}
	if err != nil {
		// The file now ends in an unknown state: refuse every later call,
		// and let the next Open repair the tail.
		j.err = fmt.Errorf("journal: write %s: %w", j.path, err)
		return j.err
	}
	j.durable = target
	return nil
}

// endLeadLocked gives up the leader role and wakes the waiting callers.
func (j *File) endLeadLocked() {
	j.flushing = false
	close(j.flushed)
	j.flushed = make(chan struct{})
}

// timerFlush carries Completes to disk when no Begin came to do it.
func (j *File) timerFlush() {
	defer j.timerInFlight.Done()
	j.mu.Lock()
	j.timerArmed = false
	closed, seq := j.closed, j.appended
	j.mu.Unlock()
	if !closed {
		_ = j.waitDurable(context.Background(), seq) // a failure is sticky: the next call reports it
	}
}
