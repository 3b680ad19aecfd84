package journal

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Compact rewrites the journal with only its live records, in the current
// format (FormatVersion): a header, then the pending intents, the unfinished
// jobs and the finished intents still within retention, each as a single
// record holding its intent, outcome and latest job, then the spend: a
// reserve record for each key still reserved, a settle record for each
// settled key whose intent is kept, and the charges of the other keys
// folded into one spent record, so the totals survive. The new file is written
// beside the old one, synced, and renamed over it. A File also compacts
// itself when the file exceeds the compaction threshold and at least half of
// it is dead.
func (j *File) Compact() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rewriteLocked(false)
}

// upgradeLocked rewrites a version 1 file in the current format before the
// first record of a newer version goes into it, so that a file never holds
// records newer than its header says. The caller holds mu, which is
// released while the file is rewritten: look intents up again after it.
func (j *File) upgradeLocked() error { return j.rewriteLocked(true) }

// rewriteLocked takes the leader role, writes what is queued and compacts
// (when onlyOld, only a file in an older format). The caller holds mu.
func (j *File) rewriteLocked(onlyOld bool) error {
	j.waitLeaderLocked()
	if err := j.usableLocked(); err != nil {
		return err
	}
	if onlyOld && j.version >= FormatVersion {
		return nil // upgraded by another caller meanwhile
	}
	j.flushing = true
	defer j.endLeadLocked()
	if err := j.writeLocked(); err != nil {
		return err
	}
	return j.compactLocked()
}

// waitLeaderLocked waits, with mu held on entry and on return, until no
// caller holds the leader role.
func (j *File) waitLeaderLocked() {
	for j.flushing {
		ch := j.flushed
		j.mu.Unlock()
		<-ch
		j.mu.Lock()
	}
}

// maybeCompactLocked drops the intents past retention and compacts when the
// file is big and mostly dead. The caller holds mu and the leader role.
func (j *File) maybeCompactLocked() {
	j.expireLocked()
	at := j.cfg.compactAt
	if at == 0 || j.total < at || j.total < j.compactRetry || j.live*2 > j.total {
		return
	}
	if err := j.compactLocked(); err != nil && j.err == nil {
		// The old file is intact; try again once it has doubled.
		j.compactRetry = 2 * j.total
	}
}

// expireLocked drops the finished intents past retention. An intent in
// line that is no longer finished (its job was advanced again) leaves the
// line; it rejoins it when it is finished again.
func (j *File) expireLocked() {
	now := j.cfg.clock()
	for len(j.expiry) > 0 {
		e := j.expiry[0]
		if j.byID[e.in.ID] == e && e.finished() {
			if !j.expired(e, now) {
				break
			}
			j.drop(e)
		}
		e.queued = false
		j.expiry[0] = nil
		j.expiry = j.expiry[1:]
	}
}

// compactLocked rewrites the file from the intents in memory. The caller
// holds mu and the leader role; mu is released while the new file is
// encoded and written, and records appended meanwhile stay in buf, to be
// appended to the new file. Records already waiting in buf when the
// snapshot is taken are in it, and are dropped: replayed after it, a settle
// of a key the snapshot folded into the spent record would count twice.
func (j *File) compactLocked() error {
	j.expireLocked()
	es := make([]*entry, 0, len(j.byID))
	for _, e := range j.byID {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.order, b.order) })
	recs := make([]record, len(es))
	old := make([]int64, len(es))
	for i, e := range es {
		in := e.in // Body, Outcome and Job are never changed in place
		recs[i] = record{Op: opBegin, Intent: &in}
		if in.Outcome != nil {
			recs[i].At = e.at.Round(0).UTC()
		}
		old[i] = e.size
		j.live -= e.size
		e.size = 0 // records appended meanwhile count from here
	}
	spendRecs := j.spendRecordsLocked()
	oldSpend := j.spendLive
	j.live -= oldSpend
	j.spendLive = 0
	covered, coveredSeq := j.buf, j.appended
	j.buf = nil
	j.mu.Unlock()
	data, err := encodeRecord(nil, &record{Op: opHeader, Version: FormatVersion})
	hdr := int64(len(data))
	var sizes []int64
	if err == nil {
		data, sizes, err = encodeAll(data, append(recs, spendRecs...))
	}
	renamed := false
	var nf *os.File
	if err == nil {
		renamed, nf, err = j.replaceFile(data)
	}
	j.mu.Lock()
	if !renamed {
		for i, e := range es {
			e.size += old[i]
			j.live += old[i]
		}
		j.spendLive += oldSpend
		j.live += oldSpend
		j.buf = append(covered, j.buf...) // the old file still needs them
		return fmt.Errorf("journal: compact %s: %w", j.path, err)
	}
	for i, e := range es {
		e.size += sizes[i]
		if j.byID[e.in.ID] == e {
			j.live += sizes[i]
		}
	}
	for i, r := range spendRecs {
		j.countSpendLocked(r.Key, sizes[len(es)+i])
	}
	j.live += hdr - j.hdr
	j.hdr, j.version = hdr, FormatVersion
	if err != nil {
		// The old file descriptor points to an unlinked file: stop.
		j.err = fmt.Errorf("journal: compact %s: %w", j.path, err)
		return j.err
	}
	j.durable = max(j.durable, coveredSeq) // the new file holds them
	j.f.Close()
	j.f = nf
	j.off, j.size = int64(len(data)), int64(len(data))
	j.total = int64(len(data)) + int64(len(j.buf))
	j.compactRetry = 0
	return nil
}

// encodeAll appends the framed records to data and returns each one's size.
func encodeAll(data []byte, recs []record) ([]byte, []int64, error) {
	sizes := make([]int64, len(recs))
	for i := range recs {
		n := len(data)
		var err error
		if data, err = encodeRecord(data, &recs[i]); err != nil {
			return nil, nil, err
		}
		sizes[i] = int64(len(data) - n)
	}
	return data, sizes, nil
}

// replaceFile atomically replaces the journal with data and returns the new
// file opened for writing. renamed reports whether the rename happened, after
// which the old descriptor no longer names the journal.
func (j *File) replaceFile(data []byte) (renamed bool, nf *os.File, err error) {
	tmp := j.path + ".compact"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, nil, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = j.cfg.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		os.Remove(tmp)
		return false, nil, err
	}
	if err := syncDir(filepath.Dir(j.path)); err != nil {
		return true, nil, err
	}
	nf, err = os.OpenFile(j.path, os.O_RDWR, 0)
	return true, nf, err
}
