// Package saferiver runs paid generations as River jobs
// (github.com/riverqueue/river) on PostgreSQL, so that any number of runs
// of a job, by any worker, bill once and finish once.
//
// River decides who runs a job and when: transactional enqueue, workers on
// many machines, retries with backoff, rescue of the jobs of dead workers.
// safegen makes each run safe to repeat: the Worker runs the whole job
// (safegen.GenerationsService.Run: create, wait, download) under the intent id
// IntentID(job.ID), over a pgjournal.Journal in the same database, so a
// retried or rescued job finds the same idempotency key and its recorded
// steps: it never creates again a generation whose create was accepted, it
// waits for it and resumes the download.
//
// Enqueue stays the application's own: InsertTx in its own transaction,
// beside its own rows. A job whose transaction rolls back never exists, so
// it is never sent.
//
// # Errors
//
// Work maps the job's outcome onto River's (see MapError): a refusal that no
// retry can change (a key reused with another body, a spent quota or
// spend limit, insufficient credits, an invalid request, a generation that
// ended failed) cancels the job with river.JobCancel; a long Retry-After
// snoozes it with river.JobSnooze for that wait, which does not count as
// an attempt; any other failure is returned, and River retries the job
// later under the same intent id, with the same key.
//
// # Resume and River's rescue
//
// A worker that dies mid-job leaves its intent unfinished in the journal,
// leased to it, and its River job running. Two things can re-drive it: River's
// rescuer, which makes the job retryable once it has run longer than
// RescueStuckJobsAfter (so another worker runs it again), and
// safegen.Client.Resume in any process on the same journal namespace, which
// claims unfinished intents whose lease ran out. The pgjournal lease makes
// sure exactly one of them drives the intent at a time:
//
//   - Before it runs a job, the Worker calls pgjournal.Journal.Acquire. If
//     another live worker holds the intent (a Resume, or the run that River
//     rescued but which is still alive), the Worker snoozes the job for what
//     that lease has left and does not touch the intent.
//   - While the Worker drives the intent its journal renews the lease, so a
//     Resume elsewhere does not list it.
//   - When a run ends without finishing the job (an error River retries,
//     a snooze, a timeout), the Worker releases the lease, so the retry may
//     take it at once, on any worker.
//   - A dead worker's lease runs out one lease (pgjournal.WithLease) after
//     its last renewal; from then on whichever comes first, River's retry or
//     a Resume, takes the lease, and the other waits or finds the job done.
//
// Either way the server bills once: every run sends the same key with the
// same bytes (a replay, not a charge), and a job whose create was accepted is
// never created again. Configure River with RescueStuckJobsAfter above the
// job timeout (River requires it) and well above the journal's lease.
//
// # Where outputs go
//
// A job writes its output to GenerationArgs.Output, relative to the Worker's
// output directory (WithOutputDir), or to "<dir>/river-job-<id>" when empty.
// The journal ties a job to its path, so every worker that may run the job
// must resolve it to the same file (the same directory on a shared volume)
// for a resumed download to reuse the bytes already fetched.
//
// This package lives in its own module (integrations/river), so River and
// its PostgreSQL driver never reach an importer of the root module.
package saferiver
