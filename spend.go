package safegen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// ErrSpendLimit means a billable call did not fit in the Client's spend limit
// (WithSpendLimit), so it was not sent. The error is a *SpendLimitError.
var ErrSpendLimit = errors.New("safegen: spend limit reached")

// SpendReport is where a spend limit stands, in credits.
type SpendReport struct {
	// Limit is the ceiling (WithSpendLimit); 0 without one.
	Limit float64
	// Spent is what answered calls were charged (a refund gives credits
	// back).
	Spent float64
	// Reserved is held for calls in flight and for calls whose outcome is
	// unknown (sent, answer lost): counted against the limit until a retry
	// or Resume learns what the server did.
	Reserved float64
}

// Left is what the limit still allows: Limit - Spent - Reserved, never
// below zero.
func (r SpendReport) Left() float64 { return math.Max(0, r.Limit-r.Spent-r.Reserved) }

// SpendLimitError is a billable call refused before anything was sent,
// because its price did not fit in the spend limit.
type SpendLimitError struct {
	// Limit, Spent and Reserved are the report when the call was refused.
	Limit, Spent, Reserved float64
	// Requested is the call's price: WithCost, or the estimate.
	Requested float64
	// Method, Path and IdempotencyKey name the call.
	Method, Path, IdempotencyKey string
}

// Error returns one line with the figures.
func (e *SpendLimitError) Error() string {
	return fmt.Sprintf("safegen: %s %s: spend limit: %g credits requested, %g spent and %g reserved of %g (key=%s); nothing sent",
		e.Method, e.Path, e.Requested, e.Spent, e.Reserved, e.Limit, e.IdempotencyKey)
}

// Is matches ErrSpendLimit.
func (e *SpendLimitError) Is(target error) bool { return target == ErrSpendLimit }

// SpendJournal is a KeyJournal that also keeps the spend of every Client
// that shares it, so a process restarted after a crash starts from what was
// spent and reserved, not from zero, and (with a shared store such as
// pgjournal) a fleet of processes stays under one limit. The journals of this
// module implement it. With a KeyJournal that does not, the Client keeps its
// spend in memory.
//
// Reservations and charges are keyed by idempotency key, so a key is never
// counted twice: reserving a key that is already reserved or charged changes
// nothing, and settling it again replaces its charge.
type SpendJournal interface {
	KeyJournal
	// Reserve holds credits for the call with this key, atomically with the
	// check that Spent + Reserved + credits stays within limit across
	// every Client sharing the journal; it returns a *SpendLimitError
	// (matching ErrSpendLimit) when it does not. A key already reserved or
	// charged is accepted as it is. A negative or infinite limit means no
	// limit (a journal replaying its own records uses it); NaN or infinite
	// credits and a NaN limit are an error.
	Reserve(ctx context.Context, key string, credits, limit float64) (SpendReport, error)
	// Settle replaces the key's reservation (if any) by a charge of
	// charged credits: the answer's cost, 0 for a call that was refused
	// or refunded. Settling again replaces the charge.
	Settle(ctx context.Context, key string, charged float64) (SpendReport, error)
	// Spend reports the totals (Limit is left 0: the Client fills it in).
	Spend(ctx context.Context) (SpendReport, error)
}

// SpendLedger is an in-memory spend book keyed by idempotency key: the
// Client's own when its journal is not a SpendJournal, and a building block
// for SpendJournal implementations (journal.Memory and journal.File keep
// one). It is safe for concurrent use. The zero value is empty and ready.
type SpendLedger struct {
	mu       sync.Mutex
	entries  map[string]*spendEntry
	spent    float64 // charges of the entries, plus those forgotten
	reserved float64
}

type spendEntry struct {
	reserved float64
	charged  float64
	settled  bool
}

// Reserve holds credits under key if they fit within limit (see
// SpendJournal.Reserve). A negative limit means no limit.
func (l *SpendLedger) Reserve(key string, credits, limit float64) (SpendReport, error) {
	if math.IsNaN(credits) || math.IsInf(credits, 0) || math.IsNaN(limit) {
		return l.Report(), fmt.Errorf("safegen: spend ledger: reserve %v credits within %v: not a number", credits, limit)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries == nil {
		l.entries = make(map[string]*spendEntry)
	}
	if _, ok := l.entries[key]; ok {
		return l.reportLocked(), nil
	}
	credits = math.Max(credits, 0)
	if limit >= 0 && l.spent+l.reserved+credits > limit+1e-9 {
		return l.reportLocked(), &SpendLimitError{Limit: limit, Spent: l.spent, Reserved: l.reserved, Requested: credits, IdempotencyKey: key}
	}
	l.entries[key] = &spendEntry{reserved: credits}
	l.reserved += credits
	return l.reportLocked(), nil
}

// Settle turns key's reservation into a charge (see SpendJournal.Settle).
// A key never reserved is charged all the same: the server billed it.
func (l *SpendLedger) Settle(key string, charged float64) SpendReport {
	if math.IsNaN(charged) || math.IsInf(charged, 0) {
		charged = 0 // never poison the totals; callers validate their input
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries == nil {
		l.entries = make(map[string]*spendEntry)
	}
	charged = math.Max(charged, 0)
	e := l.entries[key]
	if e == nil {
		e = &spendEntry{}
		l.entries[key] = e
	}
	l.reserved -= e.reserved
	l.spent += charged - e.charged
	e.reserved, e.charged, e.settled = 0, charged, true
	if l.reserved < 1e-9 {
		l.reserved = math.Max(0, l.reserved)
	}
	return l.reportLocked()
}

// Forget drops a settled key's entry while keeping its charge in Spent: a
// journal calls it when it forgets the intent (retention), after which the
// key may be reserved anew. A reserved key is not forgotten.
func (l *SpendLedger) Forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.entries[key]; e != nil && e.settled {
		delete(l.entries, key)
	}
}

// AddSpent adds credits spent outside any entry, for a journal restoring a
// total it kept (for example across compaction).
func (l *SpendLedger) AddSpent(credits float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.spent += credits
}

// SpendEntry is one key's line in a SpendLedger.
type SpendEntry struct {
	Key      string  `json:"key"`
	Reserved float64 `json:"reserved,omitempty"`
	Charged  float64 `json:"charged,omitempty"`
	Settled  bool    `json:"settled,omitempty"`
}

// Entries lists the ledger's keys, for a journal that persists them.
func (l *SpendLedger) Entries() []SpendEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]SpendEntry, 0, len(l.entries))
	for k, e := range l.entries {
		out = append(out, SpendEntry{Key: k, Reserved: e.reserved, Charged: e.charged, Settled: e.settled})
	}
	return out
}

// Entry returns key's line in the ledger, if it holds one: for a journal
// that must know whether a Reserve or a Settle changes anything before it
// records it.
func (l *SpendLedger) Entry(key string) (SpendEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[key]
	if !ok {
		return SpendEntry{}, false
	}
	return SpendEntry{Key: key, Reserved: e.reserved, Charged: e.charged, Settled: e.settled}, true
}

// Report returns the totals (Limit 0).
func (l *SpendLedger) Report() SpendReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reportLocked()
}

func (l *SpendLedger) reportLocked() SpendReport {
	return SpendReport{Spent: l.spent, Reserved: math.Max(0, l.reserved)}
}
