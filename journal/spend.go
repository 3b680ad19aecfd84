package journal

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	safegen "github.com/safegen/safegen-go"
)

// The spend of File and Memory (safegen.SpendJournal) is a
// safegen.SpendLedger, changed only under the journal's own lock so that a
// File's records go to disk in the order the ledger saw them.

var (
	_ safegen.SpendJournal = (*File)(nil)
	_ safegen.SpendJournal = (*Memory)(nil)
)

// checkSpend refuses an empty key and credits that are not a finite number:
// a NaN would poison every total after it.
func checkSpend(op, key string, credits float64) error {
	if key == "" {
		return fmt.Errorf("journal: %s: empty idempotency key", op)
	}
	if math.IsNaN(credits) || math.IsInf(credits, 0) {
		return fmt.Errorf("journal: %s %q: %v is not a number of credits", op, key, credits)
	}
	return nil
}

// fits reports whether credits fit within limit beside the totals in rep,
// as SpendLedger.Reserve decides it.
func fits(rep safegen.SpendReport, credits, limit float64) bool {
	return limit < 0 || rep.Spent+rep.Reserved+credits <= limit+1e-9
}

// checkReserve also refuses a NaN limit, which would be no limit at all.
func checkReserve(key string, credits, limit float64) error {
	if err := checkSpend("reserve", key, credits); err != nil {
		return err
	}
	if math.IsNaN(limit) {
		return fmt.Errorf("journal: reserve %q: limit is NaN", key)
	}
	return nil
}

// Reserve holds credits for the call with this key if Spent + Reserved +
// credits stays within limit, and returns the totals; otherwise it returns a
// *safegen.SpendLimitError (matching safegen.ErrSpendLimit) and holds
// nothing. A key already reserved or charged is accepted as it is. A
// negative limit means no limit; negative credits count as 0.
func (m *Memory) Reserve(ctx context.Context, key string, credits, limit float64) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	if err := checkReserve(key, credits, limit); err != nil {
		return safegen.SpendReport{}, err
	}
	return m.spend.Reserve(key, credits, limit)
}

// Settle replaces the key's reservation, if any, by a charge of charged
// credits (negative counts as 0), and returns the totals. Settling again
// replaces the charge; settling a key never reserved charges it.
func (m *Memory) Settle(ctx context.Context, key string, charged float64) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	if err := checkSpend("settle", key, charged); err != nil {
		return safegen.SpendReport{}, err
	}
	return m.spend.Settle(key, charged), nil
}

// Spend returns the totals, Limit 0.
func (m *Memory) Spend(ctx context.Context) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	return m.spend.Report(), nil
}

// Reserve holds credits for the call with this key if Spent + Reserved +
// credits stays within limit, and returns the totals once the reservation is
// on disk (written and fsynced, sharing the group commit of Begin):
// a reservation lost in a crash could let the restarted process spend past
// its limit. Otherwise it returns a *safegen.SpendLimitError (matching
// safegen.ErrSpendLimit) and records nothing. The check and the record are
// atomic within the process, and the file's lock keeps other processes out.
// A key already reserved or charged is accepted as it is. A negative limit
// means no limit; negative credits count as 0. If ctx ends while Reserve
// waits for the disk it returns ctx.Err() and the credits stay reserved (on
// disk or not): settle the key to release them. In a version 1 file, the
// first Reserve first rewrites the file in the current format.
func (j *File) Reserve(ctx context.Context, key string, credits, limit float64) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	if err := checkReserve(key, credits, limit); err != nil {
		return safegen.SpendReport{}, err
	}
	credits = max(credits, 0)
	frame, err := encodeRecord(nil, &record{Op: opReserve, Key: key, Credits: credits})
	if err != nil {
		return safegen.SpendReport{}, err
	}
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return safegen.SpendReport{}, err
	}
	// A version 1 file is upgraded before the record goes into it, and
	// not for a Reserve that is refused.
	if _, held := j.spend.Entry(key); !held && j.version < FormatVersion && fits(j.spend.Report(), credits, limit) {
		if err := j.upgradeLocked(); err != nil {
			j.mu.Unlock()
			return safegen.SpendReport{}, err
		}
	}
	if _, held := j.spend.Entry(key); held {
		// Accepted as it is, once whoever recorded it made it durable.
		seq := j.appended
		j.mu.Unlock()
		if err := j.waitDurable(ctx, seq); err != nil {
			return safegen.SpendReport{}, err
		}
		return j.spend.Report(), nil
	}
	rep, err := j.spend.Reserve(key, credits, limit)
	if err != nil {
		j.mu.Unlock()
		return rep, err
	}
	if j.version < FormatVersion {
		// fits and the ledger disagreed by a rounding. The upgrade's
		// compaction writes the reservation from the ledger; on failure
		// the credits stay held in memory, which is conservative.
		if err := j.upgradeLocked(); err != nil {
			j.mu.Unlock()
			return safegen.SpendReport{}, err
		}
	}
	seq := j.appendLocked(frame)
	j.countSpendLocked(key, int64(len(frame)))
	j.mu.Unlock()
	if err := j.waitDurable(ctx, seq); err != nil {
		return safegen.SpendReport{}, err
	}
	return rep, nil
}

// Settle replaces the key's reservation, if any, by a charge of charged
// credits (negative counts as 0), and returns the totals. Settling again
// replaces the charge; settling a key never reserved charges it. Like
// Complete it does not wait for the disk when losing the record in a crash
// is conservative (the charge is at most what the key held: the restarted
// process would count the reservation or the earlier charge instead);
// a charge above that is made durable before Settle returns. In a version 1
// file, the first Settle first rewrites the file in the current format.
func (j *File) Settle(ctx context.Context, key string, charged float64) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	if err := checkSpend("settle", key, charged); err != nil {
		return safegen.SpendReport{}, err
	}
	charged = max(charged, 0)
	frame, err := encodeRecord(nil, &record{Op: opSettle, Key: key, Credits: charged})
	if err != nil {
		return safegen.SpendReport{}, err
	}
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return safegen.SpendReport{}, err
	}
	if e, held := j.spend.Entry(key); held && e.Settled && e.Charged == charged {
		j.mu.Unlock()
		return j.spend.Report(), nil
	}
	if j.version < FormatVersion {
		if err := j.upgradeLocked(); err != nil {
			j.mu.Unlock()
			return safegen.SpendReport{}, err
		}
	}
	prev, _ := j.spend.Entry(key)
	rep := j.spend.Settle(key, charged)
	seq := j.appendLocked(frame)
	j.countSpendLocked(key, int64(len(frame)))
	if charged <= prev.Reserved+prev.Charged {
		j.armFlushLocked()
		j.mu.Unlock()
		return rep, nil
	}
	j.mu.Unlock()
	if err := j.waitDurable(ctx, seq); err != nil {
		return safegen.SpendReport{}, err
	}
	return rep, nil
}

// Spend returns the totals, Limit 0: what was charged (charges of intents
// dropped by retention included) and what is reserved.
func (j *File) Spend(ctx context.Context) (safegen.SpendReport, error) {
	if err := ctx.Err(); err != nil {
		return safegen.SpendReport{}, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usableLocked(); err != nil {
		return safegen.SpendReport{}, err
	}
	return j.spend.Report(), nil
}

// applySpend replays one spend record read at Open.
func (j *File) applySpend(r record, size int64) {
	switch r.Op {
	case opReserve:
		_, _ = j.spend.Reserve(r.Key, r.Credits, -1) // no limit: it was checked when written
	case opSettle:
		j.spend.Settle(r.Key, r.Credits)
	case opSpent:
		j.spend.AddSpent(r.Credits)
	}
	j.countSpendLocked(r.Key, size)
}

// countSpendLocked counts a spend record of key among the live bytes: in
// its intent's size, so that it goes dead with the intent, or else (a key
// the journal holds no intent for, or the spent record) on its own until
// the next compaction.
func (j *File) countSpendLocked(key string, size int64) {
	if e := j.byKey[key]; key != "" && e != nil {
		e.size += size
	} else {
		j.spendLive += size
	}
	j.live += size
}

// spendRecordsLocked returns the records that carry the spend into a
// compacted file: a reserve for each key still reserved, a settle for each
// settled key whose intent the journal holds, and one spent record (first)
// for the charges of the others, which the ledger then forgets. The caller
// holds mu.
func (j *File) spendRecordsLocked() []record {
	var recs []record
	kept := 0.0
	for _, se := range j.spend.Entries() {
		switch {
		case !se.Settled:
			recs = append(recs, record{Op: opReserve, Key: se.Key, Credits: se.Reserved})
		case j.byKey[se.Key] != nil:
			recs = append(recs, record{Op: opSettle, Key: se.Key, Credits: se.Charged})
			kept += se.Charged
		default:
			j.spend.Forget(se.Key)
		}
	}
	slices.SortFunc(recs, func(a, b record) int { return strings.Compare(a.Key, b.Key) })
	if folded := j.spend.Report().Spent - kept; folded > 1e-9 {
		recs = append([]record{{Op: opSpent, Credits: folded}}, recs...)
	}
	return recs
}
