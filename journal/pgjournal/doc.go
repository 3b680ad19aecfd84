// Package pgjournal is a safegen.KeyJournal in PostgreSQL, for a fleet of
// workers that submit billable calls: every worker reaches the same intents,
// so a worker that dies is finished by another, and each logical call is
// still billed at most once and never lost.
//
// New creates or migrates its schema itself (a versioned migration under
// pg_advisory_xact_lock, safe when many workers start at once). Intents are
// scoped by a namespace (WithNamespace: one per API key or application).
//
// Begin commits before it returns and takes a lease for this worker (owner
// id from WithOwner, lease end = database now() + WithLease). The journal
// renews its leases every lease/3 in the background until Close. Pending,
// and so Client.Resume, claims only the intents this worker owns or whose
// lease has run out, with SELECT ... FOR UPDATE SKIP LOCKED and an UPDATE of
// the owner in one statement: two live workers never re-drive the same
// intent, and a dead worker's intents are taken over one lease after its
// last renewal. Complete releases the lease. Lease times are on the
// database clock only.
//
// What a lease does not do: a worker paused for longer than its lease (a GC
// pause, SIGSTOP, a VM migration) may wake up and send an intent that
// another worker has taken over meanwhile. Both send the same idempotency
// key and the same bytes, so the server replays rather than bills twice:
// the lease prevents duplicate work; the idempotency key prevents duplicate
// billing.
//
// Completed intents are deleted one retention (WithRetention, default 25h:
// a 24h server key window plus an hour) after they completed, by a
// background pruner at most once per WithPruneInterval, or by Prune.
//
// Close stops the renewer and the pruner; it does not close the pool, which
// the caller owns.
package pgjournal
