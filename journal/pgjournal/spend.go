package pgjournal

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	safegen "github.com/safegen/safegen-go"
)

// The spend of a namespace lives in safegen_spend (one row per key) and
// safegen_spend_totals (one row per namespace: spent, reserved, pruned). Every
// change takes the namespace's totals row lock (SELECT ... FOR UPDATE) first,
// in its own statement, so that the statements after it (READ COMMITTED: each
// with a new snapshot) see every change committed before, and no other
// change until it commits: the check of a Reserve and its insert are one
// atomic step across every worker of the namespace. The lock order is always
// totals row, then key rows, so two transactions never deadlock.

var _ safegen.SpendJournal = (*Journal)(nil)

// readCommitted is the isolation the spend's argument rests on, whatever
// the database's default.
var readCommitted = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// Reserve holds credits for the call with this key if the namespace's Spent
// + Reserved + credits stays within limit, and returns the totals once the
// transaction has committed; otherwise it returns a *safegen.SpendLimitError
// (matching safegen.ErrSpendLimit) and holds nothing. The check and the
// insert happen under the namespace's totals row lock, so concurrent workers
// of one namespace never reserve past the limit together. A key already
// reserved or charged is accepted as it is. A negative limit means no limit;
// negative credits count as 0. If ctx ends or the connection fails while the
// transaction commits, Reserve returns an error and the credits may or may
// not be held: settle the key to release them.
func (j *Journal) Reserve(ctx context.Context, key string, credits, limit float64) (safegen.SpendReport, error) {
	if j.closed() {
		return safegen.SpendReport{}, safegen.ErrJournalClosed
	}
	if err := checkSpend("reserve", key, credits); err != nil {
		return safegen.SpendReport{}, err
	}
	if math.IsNaN(limit) {
		return safegen.SpendReport{}, fmt.Errorf("pgjournal: reserve %q: limit is NaN", key)
	}
	credits = max(credits, 0)
	var lim *float64 // NULL: no limit
	if limit >= 0 && !math.IsInf(limit, 1) {
		lim = &limit
	}
	ns := j.cfg.namespace
	var rep safegen.SpendReport
	var refused *safegen.SpendLimitError
	err := pgx.BeginTxFunc(ctx, j.pool, readCommitted, func(tx pgx.Tx) error {
		refused = nil
		if err := lockTotals(ctx, tx, ns); err != nil {
			return err
		}
		var held, fits bool
		if err := tx.QueryRow(ctx, `SELECT t.spent, t.reserved,
				EXISTS (SELECT 1 FROM safegen_spend s WHERE s.namespace = $1 AND s.key = $2),
				$4::numeric IS NULL OR t.spent + t.reserved + $3::numeric <= $4::numeric
			FROM safegen_spend_totals t WHERE t.namespace = $1`,
			ns, key, credits, lim).Scan(&rep.Spent, &rep.Reserved, &held, &fits); err != nil {
			return err
		}
		if held {
			return nil
		}
		if !fits {
			refused = &safegen.SpendLimitError{Limit: limit, Spent: rep.Spent, Reserved: rep.Reserved, Requested: credits, IdempotencyKey: key}
			return nil
		}
		return tx.QueryRow(ctx, `WITH ins AS (
				INSERT INTO safegen_spend (namespace, key, reserved) VALUES ($1, $2, $3::numeric))
			UPDATE safegen_spend_totals SET reserved = reserved + $3::numeric, updated_at = now()
			WHERE namespace = $1 RETURNING spent, reserved`,
			ns, key, credits).Scan(&rep.Spent, &rep.Reserved)
	})
	if err != nil {
		return safegen.SpendReport{}, fmt.Errorf("pgjournal: reserve %q: %w", key, err)
	}
	if refused != nil {
		return rep, refused
	}
	return rep, nil
}

// Settle replaces the key's reservation, if any, by a charge of charged
// credits (negative counts as 0), and returns the totals once the
// transaction has committed. Settling again replaces the charge; settling a
// key never reserved charges it.
func (j *Journal) Settle(ctx context.Context, key string, charged float64) (safegen.SpendReport, error) {
	if j.closed() {
		return safegen.SpendReport{}, safegen.ErrJournalClosed
	}
	if err := checkSpend("settle", key, charged); err != nil {
		return safegen.SpendReport{}, err
	}
	charged = max(charged, 0)
	ns := j.cfg.namespace
	var rep safegen.SpendReport
	err := pgx.BeginTxFunc(ctx, j.pool, readCommitted, func(tx pgx.Tx) error {
		if err := lockTotals(ctx, tx, ns); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `WITH old AS (
				SELECT reserved, charged FROM safegen_spend WHERE namespace = $1 AND key = $2),
			up AS (
				INSERT INTO safegen_spend (namespace, key, reserved, charged, settled) VALUES ($1, $2, 0, $3::numeric, true)
				ON CONFLICT (namespace, key) DO UPDATE
				SET reserved = 0, charged = EXCLUDED.charged, settled = true, updated_at = now())
			UPDATE safegen_spend_totals SET
				spent = spent + $3::numeric - coalesce((SELECT charged FROM old), 0),
				reserved = reserved - coalesce((SELECT reserved FROM old), 0),
				updated_at = now()
			WHERE namespace = $1 RETURNING spent, reserved`,
			ns, key, charged).Scan(&rep.Spent, &rep.Reserved)
	})
	if err != nil {
		return safegen.SpendReport{}, fmt.Errorf("pgjournal: settle %q: %w", key, err)
	}
	return rep, nil
}

// Spend returns the namespace's totals, Limit 0: what was charged (the
// charges of pruned keys included) and what is reserved, across every
// worker of the namespace.
func (j *Journal) Spend(ctx context.Context) (safegen.SpendReport, error) {
	if j.closed() {
		return safegen.SpendReport{}, safegen.ErrJournalClosed
	}
	var rep safegen.SpendReport
	err := j.pool.QueryRow(ctx, `SELECT spent, reserved FROM safegen_spend_totals WHERE namespace = $1`,
		j.cfg.namespace).Scan(&rep.Spent, &rep.Reserved)
	if errors.Is(err, pgx.ErrNoRows) {
		return safegen.SpendReport{}, nil
	}
	if err != nil {
		return safegen.SpendReport{}, fmt.Errorf("pgjournal: spend: %w", err)
	}
	return rep, nil
}

// pruneSpend deletes the rows of keys settled more than the retention ago
// whose intents are gone, and folds their charges into the totals row's
// pruned column: the totals do not change.
func (j *Journal) pruneSpend(ctx context.Context) error {
	ns := j.cfg.namespace
	return pgx.BeginTxFunc(ctx, j.pool, readCommitted, func(tx pgx.Tx) error {
		if err := lockTotals(ctx, tx, ns); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `WITH del AS (
				DELETE FROM safegen_spend s
				WHERE s.namespace = $1 AND s.settled AND s.updated_at < now() - $2 * interval '1 microsecond'
				  AND NOT EXISTS (SELECT 1 FROM safegen_intents i WHERE i.namespace = s.namespace AND i.key = s.key)
				RETURNING s.charged)
			UPDATE safegen_spend_totals SET pruned = pruned + (SELECT sum(charged) FROM del), updated_at = now()
			WHERE namespace = $1 AND EXISTS (SELECT 1 FROM del)`,
			ns, j.cfg.retention.Microseconds())
		return err
	})
}

// lockTotals takes the row lock of the namespace's totals row, creating the
// row first if the namespace has none yet.
func lockTotals(ctx context.Context, tx pgx.Tx, ns string) error {
	for range 2 {
		tag, err := tx.Exec(ctx, `SELECT 1 FROM safegen_spend_totals WHERE namespace = $1 FOR UPDATE`, ns)
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		// A concurrent creator makes this wait for it, then do nothing.
		if _, err := tx.Exec(ctx, `INSERT INTO safegen_spend_totals (namespace) VALUES ($1) ON CONFLICT DO NOTHING`, ns); err != nil {
			return err
		}
	}
	return fmt.Errorf("the totals row of namespace %q vanished", ns)
}

// checkSpend refuses an empty key and credits that are not a finite number:
// a NaN would poison every total after it.
func checkSpend(op, key string, credits float64) error {
	if key == "" {
		return fmt.Errorf("pgjournal: %s: empty idempotency key", op)
	}
	if math.IsNaN(credits) || math.IsInf(credits, 0) {
		return fmt.Errorf("pgjournal: %s %q: %v is not a number of credits", op, key, credits)
	}
	return nil
}
