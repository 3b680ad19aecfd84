// Package journal holds the KeyJournal implementations of safegen: the
// durable record of every billable call's intent, written before the call's
// first byte is sent, so that its idempotency key survives a crash of the
// caller's process and the call is billed at most once and never lost.
//
// File is the embedded default: an append-only file of checksummed records.
// Begin returns only once its record is fsynced, and concurrent Begins share
// one fsync (group commit), so a busy process pays about one disk flush per
// batch rather than per call. Complete is batched, because losing an outcome
// only costs a harmless replay under the same key. The file keeps completed
// intents for a retention period (a server key window plus a margin),
// compacts itself, repairs a torn or damaged file at Open (Recovery says what
// it dropped), and is locked against a second opener (ErrLocked).
//
// Memory keeps the same promises within one process run only, for tests and
// for programs that want intent-id deduplication without a file.
//
// Package journaltest holds the conformance suite every KeyJournal
// implementation must pass.
package journal
