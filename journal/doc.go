// Package journal holds the KeyJournal implementations of safegen: the
// durable record of every billable call's intent, written before the call's
// first byte is sent, so that its idempotency key survives a crash of the
// caller's process and the call is billed at most once and never lost. File
// and Memory also implement safegen.JobJournal: they record the steps of
// whole jobs (Generations.Run: create, wait, download), so a resumed job
// carries on from its last recorded step. Both implement
// safegen.SpendJournal too: they keep the spend of the Clients that use
// them (WithSpendLimit), reservations and charges keyed by idempotency key.
//
// File is the embedded default: a file of checksummed records, each written
// after the last. Begin returns only once its record is fsynced, and
// concurrent Begins share one fsync (group commit), so a busy process pays
// about one disk flush per batch rather than per call. While open, the file
// is extended with zeros up to 256 KiB ahead of its records, so that a
// commit overwrites blocks the file already has and its fsync has no new
// size to record (a Begin is about a quarter faster for it); Close
// truncates the zeros, and Open takes zeros after the last record (left by
// a crash) for that free space, not for damage. Complete and Advance are batched, because
// losing an outcome only costs a harmless replay under the same key, and
// losing a job step only costs redoing it. The file keeps finished intents
// (outcome recorded, job done or none) for a retention period (a server key
// window plus a margin) and unfinished jobs for as long as they are
// unfinished, compacts itself, repairs a torn or damaged file at Open
// (Recovery says what it dropped), and is locked against a second opener
// (ErrLocked).
//
// File's spend survives a crash. Reserve checks the limit and records the
// reservation atomically (under the File's lock; the file lock keeps other
// processes out) and returns once the record is fsynced, sharing the group
// commit of Begin: a reservation lost in a crash could let the restarted
// process spend past its limit. Settle is batched like Complete when losing
// it is conservative (a charge at most what the key held: the restarted
// process counts the reservation instead), and durable when it charges
// more. Records reach the disk in the order the ledger saw them, so a
// reservation that reused released credits is never on disk without the
// Settle that released them. Open replays the records into the totals;
// compaction writes them back (a reserve record per reserved key, a settle
// record per settled key whose intent is kept) and folds the charges of
// the keys whose intents the retention dropped into one spent record, so
// Spent is kept for as long as the file lives while the records and the
// ledger in memory stay bounded.
//
// # File format versions
//
// Journal files are versioned (FormatVersion). A new file starts with a
// header record naming its version, 2. A file without a header is version 1,
// as written by releases before jobs: it opens and behaves as it did, and is
// rewritten as version 2 by its first compaction or before its first job
// or spend record goes into it. A file whose header names a version newer than
// FormatVersion is refused with ErrUnsupportedVersion and left untouched.
// A release that only reads version 1 sees the header and the job records of
// a version 2 file as damaged records: it repairs them away (keeping every
// intent and outcome, losing the job steps and the spend) or, with
// WithStrict, refuses the file.
//
// Memory keeps the same promises within one process run only, for tests and
// for programs that want intent-id deduplication without a file.
//
// Package journaltest holds the conformance suite every KeyJournal (and
// JobJournal) implementation must pass.
package journal
