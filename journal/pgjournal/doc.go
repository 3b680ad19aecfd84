// Package pgjournal is a safegen.KeyJournal in PostgreSQL, for a fleet of
// workers that submit billable calls: every worker reaches the same intents,
// so a worker that dies is finished by another, and each logical call is
// still billed at most once and never lost. It is also a safegen.JobJournal:
// the steps of whole jobs (Generations.Run) are recorded with their intents,
// so a job whose worker died is carried on by another from its last step.
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
// Jobs are leased the same way. An intent stays leased, and renewed, while
// it is pending or its job is unfinished: Complete keeps the lease of an
// intent whose job is unfinished, and Advance releases it once the job is
// Done and the outcome recorded. Unfinished, like Pending, claims only the
// unfinished jobs this worker owns or whose lease has run out (FOR UPDATE
// SKIP LOCKED and the owner update in one statement), so two live workers
// never drive the same job at once. Advance takes the lease when nobody live
// holds it and leaves another live worker's alone; it commits before it
// returns (it is not batched).
//
// What a lease does not do: a worker paused for longer than its lease (a GC
// pause, SIGSTOP, a VM migration) may wake up and send an intent that
// another worker has taken over meanwhile. Both send the same idempotency
// key and the same bytes, so the server replays rather than bills twice:
// the lease prevents duplicate work; the idempotency key prevents duplicate
// billing.
//
// Finished intents (outcome recorded, job done or none) are deleted one
// retention (WithRetention, default 25h: a 24h server key window plus an
// hour) after they finished, by a background pruner at most once per
// WithPruneInterval, or by Prune. An unfinished job is never deleted,
// however old its outcome.
//
// It is a safegen.SpendJournal as well: every worker of a namespace shares
// one spend, so a fleet of Clients with WithSpendLimit stays under one
// limit. The spend is a row per idempotency key (reserved, charged) and a
// row per namespace holding the running totals. Reserve, Settle and Prune
// first lock the namespace's totals row (SELECT ... FOR UPDATE, in a READ
// COMMITTED transaction), then read and write in statements that start
// after the lock is held: the check that Spent + Reserved + credits fits in
// the limit and the insert of the reservation are one atomic step across
// every worker and process, because no other change to the namespace's
// spend can commit in between. Reserve commits before it returns (a
// reservation is durable like a Begin), and so does Settle. Credits are
// numeric in the database: totals are exact sums. Reserves of one
// namespace commit one after another (about a millisecond each, commit
// included): plenty for billable calls, and namespaces do not wait for each
// other. Prune deletes the rows of keys settled more than the retention ago
// whose intents are gone; the totals row keeps their charges (its pruned
// column), so Spend reports the same totals before and after.
//
// The schema is versioned (SchemaVersion): version 2 adds the job columns to
// version 1's table without rewriting its rows; version 3 adds the spend
// tables. A worker of an older release refuses a database at a newer
// version when it starts (New); one already running during the migration
// keeps working but knows nothing of jobs (version 1) or of the spend
// (versions 1 and 2): its Complete releases the lease of an unfinished job,
// its Prune may delete an unfinished job whose outcome is past the
// retention, and its Client, if it has a spend limit, keeps its spend in
// memory, apart from the fleet's. Finish a rolling upgrade well within the
// retention, and before relying on a fleet-wide limit.
//
// Close stops the renewer and the pruner; it does not close the pool, which
// the caller owns.
package pgjournal
