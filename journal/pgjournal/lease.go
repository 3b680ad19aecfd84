package pgjournal

import (
	"context"
	"fmt"
	"time"
)

// background renews this worker's leases every lease/3 and prunes completed
// intents at most once per prune interval, until Close.
func (j *Journal) background() {
	defer close(j.done)
	every := j.cfg.lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	ctx := j.ctx
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A failed renewal is retried at the next tick; one lease spans
		// three ticks.
		rctx, rcancel := context.WithTimeout(ctx, every)
		_, _ = j.Renew(rctx)
		rcancel()
		j.mu.Lock()
		due := time.Since(j.lastPrune) >= j.cfg.pruneEvery
		if due {
			j.lastPrune = time.Now()
		}
		j.mu.Unlock()
		if due {
			pctx, pcancel := context.WithTimeout(ctx, j.cfg.pruneEvery)
			_, _ = j.Prune(pctx)
			pcancel()
		}
	}
}

// Renew extends, to one lease from now on the database clock, the lease of
// every intent this worker owns that is pending or whose job is unfinished,
// and returns how many it renewed.
// The journal calls it every lease/3 by itself; it is exported for tests and
// for callers that want to renew at a moment of their choosing.
func (j *Journal) Renew(ctx context.Context) (int64, error) {
	j.claimMu.Lock()
	defer j.claimMu.Unlock()
	tag, err := j.pool.Exec(ctx, `UPDATE safegen_intents SET lease_until = now() + $3 * interval '1 microsecond'
		WHERE namespace = $1 AND owner = $2 AND (done_at IS NULL OR job_unfinished)`,
		j.cfg.namespace, j.cfg.owner, j.leaseMicros())
	if err != nil {
		return 0, fmt.Errorf("pgjournal: renewing leases: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Prune deletes the namespace's finished intents (outcome recorded, job done
// or none) finished more than the retention ago (on the database clock:
// from the later of the outcome and the job's end) and returns how many it
// deleted. The journal runs it by itself at most once per prune interval;
// pending intents and unfinished jobs are never pruned. It then deletes the
// spend rows of keys settled more than the retention ago whose intents are
// gone, folding their charges into the namespace's totals row, so Spend
// reports the same totals before and after; reserved keys are never pruned.
func (j *Journal) Prune(ctx context.Context) (int64, error) {
	tag, err := j.pool.Exec(ctx, `DELETE FROM safegen_intents
		WHERE namespace = $1 AND done_at IS NOT NULL AND done_at < now() - $2 * interval '1 microsecond'
		  AND NOT job_unfinished AND (job_done_at IS NULL OR job_done_at < now() - $2 * interval '1 microsecond')`,
		j.cfg.namespace, j.cfg.retention.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("pgjournal: pruning: %w", err)
	}
	if err := j.pruneSpend(ctx); err != nil {
		return tag.RowsAffected(), fmt.Errorf("pgjournal: pruning the spend: %w", err)
	}
	return tag.RowsAffected(), nil
}
