package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	safegen "github.com/safegen/safegen-go"
)

// File is the file-backed safegen.JobJournal and safegen.SpendJournal, the
// SDK's embedded default. It writes checksummed records to one file, makes
// every Begin and Reserve durable (fsync) before returning while many
// concurrent callers share one fsync, batches Completes, Advances and
// Settles, keeps finished intents for the retention period and unfinished
// jobs for as long as they are unfinished, keeps the spend totals for as
// long as the file lives, compacts itself, and repairs a torn or damaged
// file at Open. One File at a time may hold a journal: a second opener, in
// this process or another, gets ErrLocked.
//
// A File is safe for concurrent use by multiple goroutines. Close it to flush
// the last Completes, truncate the zeros it wrote ahead of its records (see
// the package documentation) and release the lock.
type File struct {
	path   string
	cfg    config
	lock   *os.File
	report RecoveryReport

	mu     sync.Mutex
	f      *os.File // the journal, opened for append; owned by the leader
	byID   map[string]*entry
	byKey  map[string]*entry
	expiry []*entry // finished intents, by the time they were finished
	order  uint64   // next insertion order

	// version is the file's format version (FormatVersion once rewritten);
	// hdr is the size of its header record, zero in a version 1 file.
	version int
	hdr     int64

	// Group commit. Records are appended to buf; the leader (flushing)
	// writes and syncs what buf holds, then closes flushed to wake the
	// callers waiting for their records. appended and durable count every
	// byte ever appended and made durable.
	buf, spare        []byte
	appended, durable uint64
	flushing          bool
	flushed           chan struct{}

	// The file's content ends at off; from there to size it holds zeros
	// written ahead (preallocate), so that a commit overwrites blocks the
	// file already has and its fsync has no size or allocation to record.
	// Only the leader touches them.
	off, size int64

	// spend is the ledger of the safegen.SpendJournal (spend.go), changed
	// only with mu held.
	spend safegen.SpendLedger

	// Compaction accounting: total is the bytes in the file plus buf, live
	// the bytes of the records that still describe an intent or the spend;
	// spendLive is the part of live held by spend records counted in no
	// intent's size.
	total, live   int64
	spendLive     int64
	compactRetry  int64 // total under which a failed compaction is not retried
	closed        bool
	err           error // sticky: a failed write or sync leaves the file unknown
	timer         *time.Timer
	timerArmed    bool
	timerInFlight sync.WaitGroup
}

// entry is one intent held by a File.
type entry struct {
	in    safegen.Intent
	order uint64
	seq   uint64 // appended count just past its begin record
	// at is when the intent was finished (see finished), or else when its
	// outcome was recorded, on the journal's clock.
	at     time.Time
	size   int64 // bytes of its live records in the file
	queued bool  // in File.expiry
}

// finished reports whether the intent needs nothing more: its outcome is
// recorded and it starts no unfinished job. Only finished intents expire.
func (e *entry) finished() bool { return e.in.Outcome != nil && e.in.Job.Done() }

var _ safegen.JobJournal = (*File)(nil)

// RecoveryReport says what Open dropped to repair a damaged file. The zero
// value means the file was intact. Zeros after the last record are not
// damage: a File writes them ahead of its records while open, and a crash
// leaves them behind.
type RecoveryReport struct {
	// TruncatedBytes is the number of damaged bytes dropped: a torn tail,
	// and any damaged span between intact records.
	TruncatedBytes int64
	// SkippedRecords is the number of damaged spans dropped, each holding
	// one or more (partial) records.
	SkippedRecords int
	// Reason says where each damaged span was and what was wrong with it.
	Reason string
}

// Open opens the journal at path, creating it (mode 0600, and its missing
// parent directories with mode 0700) if needed; a new journal starts with a
// header record naming FormatVersion. A file at path that is not a journal
// (its first bytes are not a journal record and no intact record can be
// found in it) is refused with ErrNotJournal, and one written in a newer
// format than FormatVersion with ErrUnsupportedVersion; both are left
// untouched. Use WithMustExist to refuse a missing file too. It takes an
// exclusive lock on path+".lock", replays the records, and repairs a damaged
// file (see Recovery) unless WithStrict is given; zeros after the last
// record are free space, not damage. While it runs, a File writes nothing
// but the journal, its lock file and, during compaction, path+".compact".
func Open(path string, opts ...Option) (*File, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if path == "" {
		return nil, fmt.Errorf("journal: empty path")
	}
	// Look before creating anything: a wrong path must cost nothing.
	if err := checkJournalFile(path, cfg.mustExist); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, err
	}
	j, err := open(path, dir, lock, cfg)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return j, nil
}

func open(path, dir string, lock *os.File, cfg config) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal: read %s: %w", path, err)
	}
	if !looksLikeJournal(data) {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotJournal, path)
	}
	res := scan(data)
	if res.tail != nil && preallocated(data[res.end:]) {
		res.tail = nil // zeros written ahead, not damage
	}
	version, err := versionOf(res)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	report := reportOf(res)
	if cfg.strict && report.SkippedRecords > 0 {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %s", ErrCorrupt, path, report.Reason)
	}
	j := &File{
		path: path, cfg: cfg, lock: lock, report: report, f: f,
		byID:    make(map[string]*entry),
		byKey:   make(map[string]*entry),
		flushed: make(chan struct{}),
		version: version,
	}
	now := cfg.clock()
	for _, r := range res.records {
		j.apply(r.rec, int64(r.size), now)
	}
	slices.SortStableFunc(j.expiry, func(a, b *entry) int { return a.at.Compare(b.at) })
	j.total = int64(res.end)
	j.off, j.size = int64(res.end), int64(len(data))
	_ = os.Remove(path + ".compact") // left by a crash during compaction
	j.mu.Lock()
	defer j.mu.Unlock()
	j.flushing = true
	switch {
	case len(res.middle) > 0:
		err = j.compactLocked()
	case res.tail != nil:
		if err = f.Truncate(int64(res.end)); err == nil {
			err = f.Sync()
		}
		j.size = j.off
	}
	if err == nil && len(res.records) == 0 && j.hdr == 0 {
		err = j.writeHeaderLocked() // a new (or emptied) journal
	}
	if err == nil {
		err = syncDir(dir) // make a new file's name durable
	}
	if err == nil {
		j.maybeCompactLocked()
		err = j.err
	}
	j.flushing = false
	if err != nil {
		j.f.Close()
		return nil, fmt.Errorf("journal: repair %s: %w", path, err)
	}
	return j, nil
}

// checkJournalFile refuses, before anything is created, a path that holds a
// directory or a file that is not a journal, and (mustExist) a missing one.
func checkJournalFile(path string, mustExist bool) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if mustExist {
			return fmt.Errorf("journal: %s does not exist: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if st.IsDir() {
		return fmt.Errorf("%w: %s is a directory", ErrNotJournal, path)
	}
	// The start of the file holds the magic and, in a current file, the
	// small header record; only a file that does not start with the magic
	// is read further, for an intact record after a damaged start.
	data, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err == nil && len(data) == 4<<10 && !bytes.HasPrefix(data, magic[:]) {
		var more []byte
		more, err = io.ReadAll(io.LimitReader(f, headerSize+MaxRecordSize+headerSize-int64(len(data))))
		data = append(data, more...)
	}
	if err != nil {
		return fmt.Errorf("journal: read %s: %w", path, err)
	}
	if !looksLikeJournal(data) {
		return fmt.Errorf("%w: %s (its first bytes are not a journal record; refusing to touch it)", ErrNotJournal, path)
	}
	// A newer release's journal starts with its header: refuse it before
	// anything (the lock file included) is created.
	if payload, _, err := decodeFrame(data); err == nil {
		if r, err := decodeRecord(payload); err == nil && r.Op == opHeader && r.Version > FormatVersion {
			return fmt.Errorf("%w: %s", unsupported(r.Version), path)
		}
	}
	return nil
}

// versionOf returns the format version of the scanned file: its header's,
// or 1 without one. Any header naming a version newer than FormatVersion is
// an error wrapping ErrUnsupportedVersion.
func versionOf(res scanResult) (int, error) {
	version := 0
	for _, r := range res.records {
		if r.rec.Op != opHeader {
			continue
		}
		if r.rec.Version > FormatVersion {
			return 0, unsupported(r.rec.Version)
		}
		if version == 0 {
			version = r.rec.Version
		}
	}
	return max(version, 1), nil
}

func unsupported(version int) error {
	return fmt.Errorf("%w: the file is in format version %d, this release reads versions 1 to %d (open it with the release that wrote it)",
		ErrUnsupportedVersion, version, FormatVersion)
}

// writeHeaderLocked starts an empty file with the header record and syncs
// it. The caller holds mu and the leader role.
func (j *File) writeHeaderLocked() error {
	frame, err := encodeRecord(nil, &record{Op: opHeader, Version: FormatVersion})
	if err != nil {
		return err
	}
	j.appendLocked(frame)
	j.hdr = int64(len(frame))
	j.live += j.hdr
	j.version = FormatVersion
	return j.writeLocked()
}

// looksLikeJournal reports whether data (all or the start of a file) can be
// a journal: empty, starting with the record magic (a torn first record
// included), or holding at least one intact record after a damaged start.
func looksLikeJournal(data []byte) bool {
	n := min(len(data), len(magic))
	if bytes.Equal(data[:n], magic[:n]) {
		return true
	}
	return len(scan(data).records) > 0
}

// reportOf describes the damage scan found.
func reportOf(res scanResult) RecoveryReport {
	var r RecoveryReport
	var why []string
	for _, d := range res.middle {
		r.TruncatedBytes += int64(d.n)
		r.SkippedRecords++
		why = append(why, fmt.Sprintf("damaged span at offset %d: %d bytes dropped (%s), later records kept", d.off, d.n, d.why))
	}
	if d := res.tail; d != nil {
		r.TruncatedBytes += int64(d.n)
		r.SkippedRecords++
		why = append(why, fmt.Sprintf("torn tail at offset %d: %d bytes truncated (%s)", d.off, d.n, d.why))
	}
	r.Reason = strings.Join(why, "; ")
	return r
}

// apply replays one record read at Open. Records that no longer describe an
// intent (extra headers, duplicates, outcomes and jobs of unknown keys,
// outcomes of completed ones) only count as dead bytes. The intents past
// retention are dropped after the replay (Open's maybeCompactLocked), except
// that a begin record for the id or key of one is the intent begun again
// after the first was dropped. Spend records rebuild the spend ledger.
func (j *File) apply(r record, size int64, now time.Time) {
	switch r.Op {
	case opHeader:
		if j.hdr == 0 {
			j.hdr = size
			j.live += size
		}
	case opBegin:
		in := normalize(*r.Intent)
		held := []*entry{j.byID[in.ID], j.byKey[in.Key]}
		for _, old := range held {
			if old != nil && !j.expired(old, now) {
				return // a duplicate, or a Begin that was refused
			}
		}
		for _, old := range held {
			if old != nil {
				j.drop(old)
			}
		}
		e := &entry{in: in, order: j.order, size: size}
		j.order++
		j.byID[in.ID], j.byKey[in.Key] = e, e
		j.live += size
		if in.Outcome != nil {
			e.at = atOf(r)
			if e.finished() {
				j.queueLocked(e)
			}
		}
	case opComplete:
		e := j.byKey[r.Key]
		if e == nil || e.in.Outcome != nil {
			return
		}
		o := cloneOutcome(*r.Outcome)
		o.CompletedAt = o.CompletedAt.Round(0).UTC()
		e.in.Outcome, e.at = &o, atOf(r)
		e.size += size
		j.live += size
		if e.finished() {
			j.queueLocked(e)
		}
	case opJob:
		e := j.byKey[r.Key]
		if e == nil {
			return
		}
		was := e.finished()
		jb := normalizeJob(*r.Job)
		e.in.Job = &jb
		e.size += size
		j.live += size
		if !was && e.finished() {
			e.at = atOf(r)
			j.queueLocked(e)
		}
	case opReserve, opSettle, opSpent:
		j.applySpend(r, size)
	}
}

// atOf returns when the journal recorded r: its At, or for records written
// without one, its outcome's completion time.
func atOf(r record) time.Time {
	if !r.At.IsZero() {
		return r.At
	}
	if r.Intent != nil && r.Intent.Outcome != nil {
		return r.Intent.Outcome.CompletedAt
	}
	if r.Outcome != nil {
		return r.Outcome.CompletedAt
	}
	return time.Time{}
}

// Recovery reports what Open dropped to repair the file.
func (j *File) Recovery() RecoveryReport { return j.report }

// Begin records in durably (its record, with in.Job if it has one, is
// written and fsynced before Begin returns), or returns the intent already
// recorded under in.ID unchanged, pending or completed: compare its bytes
// with yours. A key already recorded under another id is an error wrapping
// ErrKeyInUse. If ctx ends while Begin waits for the disk it returns
// ctx.Err(), and the intent may or may not have been recorded.
func (j *File) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	if err := ctx.Err(); err != nil {
		return safegen.Intent{}, err
	}
	if err := in.Validate(); err != nil {
		return safegen.Intent{}, err
	}
	n := normalize(in)
	frame, err := encodeRecord(nil, &record{Op: opBegin, Intent: &n})
	if err != nil {
		return safegen.Intent{}, err
	}
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return safegen.Intent{}, err
	}
	if n.Job != nil && j.version < FormatVersion {
		if err := j.upgradeLocked(); err != nil {
			j.mu.Unlock()
			return safegen.Intent{}, err
		}
	}
	if e := j.byID[in.ID]; e != nil {
		got, seq := cloneIntent(e.in), e.seq
		j.mu.Unlock()
		// Another caller may still be making it durable.
		if err := j.waitDurable(ctx, seq); err != nil {
			return safegen.Intent{}, err
		}
		return got, nil
	}
	if e := j.byKey[in.Key]; e != nil {
		j.mu.Unlock()
		return safegen.Intent{}, fmt.Errorf("%w: key %q is held by intent %q", ErrKeyInUse, in.Key, e.in.ID)
	}
	seq := j.appendLocked(frame)
	e := &entry{in: n, order: j.order, seq: seq, size: int64(len(frame))}
	j.order++
	j.byID[n.ID], j.byKey[n.Key] = e, e
	j.live += e.size
	j.mu.Unlock()
	if err := j.waitDurable(ctx, seq); err != nil {
		return safegen.Intent{}, err
	}
	return cloneIntent(n), nil
}

// Complete records the outcome of the intent with this key. It does not wait
// for the disk: the record is written with the next group commit, within the
// flush interval, or at Close; losing it in a crash only costs a replay.
// Completing an unknown key is an error wrapping ErrNotFound; completing a
// completed one does nothing. A zero out.CompletedAt is set to now.
func (j *File) Complete(ctx context.Context, key string, out safegen.Outcome) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := j.cfg.clock()
	o := cloneOutcome(out)
	if o.CompletedAt.IsZero() {
		o.CompletedAt = now
	}
	o.CompletedAt = o.CompletedAt.Round(0).UTC()
	frame, err := encodeRecord(nil, &record{Op: opComplete, Key: key, Outcome: &o, At: now.Round(0).UTC()})
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usableLocked(); err != nil {
		return err
	}
	e := j.byKey[key]
	if e == nil {
		return fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	if e.in.Outcome != nil {
		return nil
	}
	j.appendLocked(frame)
	e.in.Outcome, e.at = &o, now
	e.size += int64(len(frame))
	j.live += int64(len(frame))
	if e.finished() {
		j.queueLocked(e)
	}
	j.armFlushLocked()
	return nil
}

// Advance records job as the progress of the whole job of the intent with
// this key, replacing the one recorded before. Like Complete it does not wait
// for the disk (the record goes with the next group commit, within the flush
// interval, or at Close): losing a step in a crash only costs redoing it. In
// a version 1 file, the first Advance first rewrites the file in the current
// format (see FormatVersion). An unknown key is an error wrapping
// ErrNotFound. An intent whose job is not Done is kept whatever its age;
// once it is Done and the intent has an outcome, the retention period starts.
func (j *File) Advance(ctx context.Context, key string, job safegen.Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := j.cfg.clock()
	jb := normalizeJob(job)
	frame, err := encodeRecord(nil, &record{Op: opJob, Key: key, Job: &jb, At: now.Round(0).UTC()})
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usableLocked(); err != nil {
		return err
	}
	if j.byKey[key] != nil && j.version < FormatVersion {
		if err := j.upgradeLocked(); err != nil {
			return err
		}
	}
	e := j.byKey[key]
	if e == nil {
		return fmt.Errorf("%w: key %q", ErrNotFound, key)
	}
	was := e.finished()
	j.appendLocked(frame)
	e.in.Job = &jb
	e.size += int64(len(frame))
	j.live += int64(len(frame))
	if !was && e.finished() {
		e.at = now
		j.queueLocked(e)
	}
	j.armFlushLocked()
	return nil
}

// armFlushLocked makes sure a batched record reaches the disk within the
// flush interval even if no Begin comes to carry it.
func (j *File) armFlushLocked() {
	if j.timerArmed {
		return
	}
	j.timerArmed = true
	j.timerInFlight.Add(1)
	if j.timer == nil {
		j.timer = time.AfterFunc(j.cfg.flushInterval, j.timerFlush)
	} else {
		j.timer.Reset(j.cfg.flushInterval)
	}
}

// queueLocked puts a finished intent in line for expiry.
func (j *File) queueLocked(e *entry) {
	if !e.queued {
		e.queued = true
		j.expiry = append(j.expiry, e)
	}
}

// Pending lists the intents without an outcome, oldest first (by CreatedAt,
// then by order of Begin).
func (j *File) Pending(ctx context.Context) ([]safegen.Intent, error) {
	return j.list(ctx, safegen.Intent.Pending)
}

// Unfinished lists the intents whose Job is not Done, with or without an
// outcome, oldest first (by CreatedAt, then by order of Begin).
func (j *File) Unfinished(ctx context.Context) ([]safegen.Intent, error) {
	return j.list(ctx, unfinished)
}

// list returns copies of the intents keep selects, oldest first.
func (j *File) list(ctx context.Context, keep func(safegen.Intent) bool) ([]safegen.Intent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return nil, err
	}
	var ps []ordered
	for _, e := range j.byID {
		if keep(e.in) {
			ps = append(ps, ordered{e.in, e.order}) // Body and Job are never changed in place
		}
	}
	j.mu.Unlock()
	return sortedCopies(ps), nil
}

// Close writes and syncs the Completes and Advances still in memory, closes
// the file and releases the lock. Every method called after Close returns ErrClosed.
func (j *File) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.closed = true
	if j.timerArmed && j.timer.Stop() {
		j.timerArmed = false
		j.timerInFlight.Done()
	}
	j.mu.Unlock()
	j.timerInFlight.Wait()

	j.mu.Lock()
	defer j.mu.Unlock()
	j.waitLeaderLocked()
	err := j.err
	if err == nil {
		j.flushing = true
		err = j.writeLocked()
		if err == nil && j.size > j.off {
			// Leave no zeros behind: a closed journal ends at its last
			// record, as every release before this one wrote it. No sync:
			// should a crash undo the truncation, Open takes the zeros
			// back as the preallocation they were.
			err = j.f.Truncate(j.off)
		}
		j.endLeadLocked()
	}
	if cerr := j.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("journal: close %s: %w", j.path, cerr)
	}
	if cerr := j.lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("journal: unlock %s: %w", j.path, cerr)
	}
	if j.err == nil {
		j.err = ErrClosed
	}
	return err
}

func (j *File) usableLocked() error {
	if j.closed {
		return ErrClosed
	}
	return j.err
}

// expired reports whether e was finished longer than the retention period
// ago.
func (j *File) expired(e *entry, now time.Time) bool {
	return e.finished() && !now.Before(e.at.Add(j.cfg.retention))
}

// drop forgets e, and its key's spend entry if settled (its charge stays
// in the total).
func (j *File) drop(e *entry) {
	if j.byID[e.in.ID] == e {
		delete(j.byID, e.in.ID)
		delete(j.byKey, e.in.Key)
		j.live -= e.size
		j.spend.Forget(e.in.Key)
	}
}
