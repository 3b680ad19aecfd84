package journal

import "errors"

// Sentinel errors returned (wrapped) by the journals of this package. Match
// them with errors.Is.
var (
	// ErrKeyInUse means Begin was given an idempotency key that the journal
	// already holds under another intent id.
	ErrKeyInUse = errors.New("journal: idempotency key already recorded under another intent id")
	// ErrNotFound means Complete was given a key the journal does not hold.
	ErrNotFound = errors.New("journal: no intent with this key")
	// ErrClosed means the journal was used after Close.
	ErrClosed = errors.New("journal: closed")
	// ErrLocked means another File (in this process or another one) holds
	// the journal open.
	ErrLocked = errors.New("journal: locked by another opener")
	// ErrCorrupt means the journal file holds damaged records and Open was
	// asked, with WithStrict, not to repair it.
	ErrCorrupt = errors.New("journal: corrupt file")
	// ErrTooLarge means an intent or outcome does not fit in one record of
	// at most MaxRecordSize bytes.
	ErrTooLarge = errors.New("journal: record too large")
)
