package safegentest

import (
	"net/http"
	"sort"
	"strconv"
	"time"
)

// Ledger is a snapshot of every charge the server made, in order, and of
// every refund.
type Ledger struct {
	Charges []Charge
	// Refunds are the credits given back, one per generation canceled
	// while queued. A refund does not remove its charge: Total and Credits
	// still count it; Refunded and NetCredits see the refund.
	Refunds []Refund
}

// Refund is the cost of one generation given back to its account.
type Refund struct {
	APIKey       string
	GenerationID string
	Credits      int64
	At           time.Time // server clock
}

// Refunded returns the total credits refunded to apiKey.
func (l Ledger) Refunded(apiKey string) int64 {
	var n int64
	for _, r := range l.Refunds {
		if r.APIKey == apiKey {
			n += r.Credits
		}
	}
	return n
}

// NetCredits returns what apiKey paid in the end: the credits charged minus
// the credits refunded.
func (l Ledger) NetCredits(apiKey string) int64 {
	return l.Credits(apiKey) - l.Refunded(apiKey)
}

// Charge is one billed execution of a billable POST.
type Charge struct {
	APIKey         string
	IdempotencyKey string // "" when the request carried none
	GenerationID   string
	Credits        int64
	BodySHA256     string // hex SHA-256 of the request body
	At             time.Time
}

// Total returns the number of charges.
func (l Ledger) Total() int { return len(l.Charges) }

// ByAPIKey counts the charges per API key.
func (l Ledger) ByAPIKey() map[string]int {
	m := make(map[string]int)
	for _, c := range l.Charges {
		m[c.APIKey]++
	}
	return m
}

// ByIdempotencyKey counts the charges per idempotency key; charges made
// without a key are counted under "".
func (l Ledger) ByIdempotencyKey() map[string]int {
	m := make(map[string]int)
	for _, c := range l.Charges {
		m[c.IdempotencyKey]++
	}
	return m
}

// Duplicates returns, sorted, the idempotency keys that were charged more
// than once under one API key (keys are scoped per API key, so the same
// string used by two API keys is not a duplicate). Key-less charges are
// never duplicates.
func (l Ledger) Duplicates() []string {
	type slot struct{ apiKey, key string }
	n := make(map[slot]int)
	dup := make(map[string]bool)
	for _, c := range l.Charges {
		s := slot{c.APIKey, c.IdempotencyKey}
		n[s]++
		if c.IdempotencyKey != "" && n[s] > 1 {
			dup[c.IdempotencyKey] = true
		}
	}
	d := make([]string, 0, len(dup))
	for k := range dup {
		d = append(d, k)
	}
	sort.Strings(d)
	return d
}

// Credits returns the total credits charged to apiKey.
func (l Ledger) Credits(apiKey string) int64 {
	var n int64
	for _, c := range l.Charges {
		if c.APIKey == apiKey {
			n += c.Credits
		}
	}
	return n
}

// RecordedRequest is one request as the server saw it.
type RecordedRequest struct {
	Method, Path   string
	Header         http.Header
	Body           []byte // at most the configured maximum body size plus one byte
	IdempotencyKey string
	APIKey         string
	// Status is the status written, or 0 when the connection was reset or
	// dropped without a response.
	Status   int
	Fault    FaultKind
	Replayed bool
	At       time.Time // server clock
	// ResponseBytes is how many body bytes the server wrote (for a cut
	// download, those sent before the cut).
	ResponseBytes int64
}

// Cause names what made the request fail, as reports count it: the status
// of an injected error answer ("503"), "409 in progress" for a conflict on
// an undisturbed request, "reset", "dropped after commit" or "cut mid-body";
// "" when nothing failed (or the fault, such as latency, fails nothing).
func (r RecordedRequest) Cause() string {
	switch r.Fault {
	case FaultNone, FaultLatency:
		if r.Status == http.StatusConflict {
			return "409 in progress"
		}
	case FaultStatus, FaultRateLimit:
		return strconv.Itoa(r.Status)
	case FaultReset:
		return "reset"
	case FaultDropAfterCommit:
		return "dropped after commit"
	case FaultCut:
		return "cut mid-body"
	}
	return ""
}
