package journal

import (
	"errors"

	safegen "github.com/safegen/safegen-go"
)

// Sentinel errors returned (wrapped) by the journals of this package. Match
// them with errors.Is.
var (
	// ErrKeyInUse means Begin was given an idempotency key that the journal
	// already holds under another intent id.
	// It is safegen.ErrKeyInUse, and also matches
	// safegen.ErrIdempotencyKeyReuse.
	ErrKeyInUse = safegen.ErrKeyInUse
	// ErrNotFound means Complete or Advance was given a key the journal
	// does not hold. It is safegen.ErrIntentNotFound.
	ErrNotFound = safegen.ErrIntentNotFound
	// ErrClosed means the journal was used after Close. It is
	// safegen.ErrJournalClosed.
	ErrClosed = safegen.ErrJournalClosed
	// ErrLocked means another File (in this process or another one) holds
	// the journal open.
	ErrLocked = errors.New("journal: locked by another opener")
	// ErrCorrupt means the journal file holds damaged records and Open was
	// asked, with WithStrict, not to repair it.
	ErrCorrupt = errors.New("journal: corrupt file")
	// ErrTooLarge means an intent or outcome does not fit in one record of
	// at most MaxRecordSize bytes.
	ErrTooLarge = errors.New("journal: record too large")
	// ErrNotJournal means Open was given a file that is not a journal: its
	// first bytes are not a journal record. The file is left untouched.
	ErrNotJournal = errors.New("journal: not a journal file")
	// ErrUnsupportedVersion means Open was given a journal written in a
	// newer file format (FormatVersion) than this release reads, by a newer
	// release of the SDK. The file is left untouched: open it with that
	// release.
	ErrUnsupportedVersion = errors.New("journal: unsupported file format version")
)
