package pgjournal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	safegen "github.com/safegen/safegen-go"
)

// Lease is what Acquire found: whether this worker may drive an intent now
// and, when it may not, who does and for how long.
type Lease struct {
	// Held reports that this worker holds the intent's lease now, or that
	// the intent needs none: it is not recorded yet (Begin will lease it),
	// or it is finished (its outcome and job are recorded; a re-run is
	// answered from the journal).
	Held bool
	// Owner is the owner id of the live lease of another worker when Held
	// is false.
	Owner string
	// Left is what that lease has left, on the database clock; another
	// worker may take the intent over after it unless its owner renews it.
	Left time.Duration
}

// Acquire leases the intent with this id to this worker when it is pending
// or its job unfinished, and nobody else holds a live lease on it. It is the
// check a job queue's worker makes before it drives an intent that a crash,
// a rescue or a retry may hand to several workers: when another live worker
// (a Client.Resume, or an earlier run of the same job) holds the lease,
// Acquire returns Held false with the time that lease has left, and the
// caller should come back then instead of driving the intent beside it.
// Release gives the lease back.
func (j *Journal) Acquire(ctx context.Context, intentID string) (Lease, error) {
	if j.closed() {
		return Lease{}, safegen.ErrJournalClosed
	}
	j.claimMu.RLock()
	defer j.claimMu.RUnlock()
	ns := j.cfg.namespace
	for range 3 {
		tag, err := j.pool.Exec(ctx, `UPDATE safegen_intents SET owner = $3, lease_until = now() + $4 * interval '1 microsecond'
			WHERE namespace = $1 AND intent_id = $2 AND (done_at IS NULL OR job_unfinished)
			  AND (owner = $3 OR lease_until IS NULL OR lease_until <= now())`,
			ns, intentID, j.cfg.owner, j.leaseMicros())
		if err != nil {
			return Lease{}, fmt.Errorf("pgjournal: acquire %q: %w", intentID, err)
		}
		if tag.RowsAffected() == 1 {
			return Lease{Held: true}, nil
		}
		var (
			open   bool
			owner  *string
			leftUS *int64 // microseconds
		)
		err = j.pool.QueryRow(ctx, `SELECT done_at IS NULL OR job_unfinished, owner,
				CASE WHEN lease_until > now() THEN (extract(epoch FROM lease_until - now()) * 1000000)::bigint END
			FROM safegen_intents WHERE namespace = $1 AND intent_id = $2`, ns, intentID).Scan(&open, &owner, &leftUS)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return Lease{Held: true}, nil
		case err != nil:
			return Lease{}, fmt.Errorf("pgjournal: acquire %q: %w", intentID, err)
		case !open:
			return Lease{Held: true}, nil
		case owner != nil && leftUS != nil && *owner != j.cfg.owner:
			return Lease{Owner: *owner, Left: time.Duration(*leftUS) * time.Microsecond}, nil
		}
		// The lease ran out between the two statements: try again.
	}
	return Lease{}, fmt.Errorf("pgjournal: acquire %q: its lease keeps changing hands", intentID)
}

// Release gives up this worker's lease on the intent with this id, if it
// holds one, so that another worker may take the intent at once instead of
// one lease later: a job queue's worker calls it when it stops driving an
// intent it did not finish (the job failed and will be retried, perhaps
// elsewhere). Releasing an intent this worker does not hold, or an unknown
// one, does nothing.
func (j *Journal) Release(ctx context.Context, intentID string) error {
	if j.closed() {
		return safegen.ErrJournalClosed
	}
	j.claimMu.RLock()
	defer j.claimMu.RUnlock()
	_, err := j.pool.Exec(ctx, `UPDATE safegen_intents SET owner = NULL, lease_until = NULL
		WHERE namespace = $1 AND intent_id = $2 AND owner = $3`, j.cfg.namespace, intentID, j.cfg.owner)
	if err != nil {
		return fmt.Errorf("pgjournal: release %q: %w", intentID, err)
	}
	return nil
}
