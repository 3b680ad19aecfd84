package pgjournal

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLock is the pg_advisory_xact_lock key that serializes schema
// migrations among workers starting at once ("safegen" in ASCII).
const migrationLock int64 = 0x73616665676e

// migrations are applied in order, each once, inside one transaction that
// holds migrationLock. Never edit a released step: append a new one.
var migrations = []string{
	// 1: the intents table.
	`CREATE TABLE safegen_intents (
		namespace    text        NOT NULL,
		intent_id    text        NOT NULL,
		key          text        NOT NULL,
		seq          bigint      GENERATED ALWAYS AS IDENTITY,
		method       text        NOT NULL,
		path         text        NOT NULL,
		body         bytea       NOT NULL,
		created_at   timestamptz NOT NULL,
		owner        text,
		lease_until  timestamptz,
		done_at      timestamptz,
		status       integer,
		out_body     bytea,
		request_id   text,
		expired      boolean     NOT NULL DEFAULT false,
		completed_at timestamptz,
		PRIMARY KEY (namespace, intent_id),
		CONSTRAINT safegen_intents_key UNIQUE (namespace, key)
	);
	CREATE INDEX safegen_intents_pending ON safegen_intents (namespace, created_at, seq) WHERE done_at IS NULL;
	CREATE INDEX safegen_intents_owner ON safegen_intents (namespace, owner) WHERE done_at IS NULL;
	CREATE INDEX safegen_intents_done ON safegen_intents (namespace, done_at) WHERE done_at IS NOT NULL;`,
	// 2: the job of a whole paid job (Generations.Run) an intent starts,
	// as the JSON of safegen.Job; job_unfinished is job IS NOT NULL AND NOT
	// Job.Done(), computed by the client, and keeps the row leased and
	// unpruned whatever done_at says; job_done_at is when (database clock)
	// the job went from unfinished to done: the retention runs from the
	// later of it and done_at. Adding columns with constant defaults
	// rewrites no row.
	`ALTER TABLE safegen_intents
		ADD COLUMN job            jsonb,
		ADD COLUMN job_unfinished boolean NOT NULL DEFAULT false,
		ADD COLUMN job_done_at    timestamptz;
	CREATE INDEX safegen_intents_unfinished ON safegen_intents (namespace, created_at, seq) WHERE job_unfinished;
	CREATE INDEX safegen_intents_job_owner ON safegen_intents (namespace, owner) WHERE job_unfinished;`,
	// 3: the spend (safegen.SpendJournal). safegen_spend holds one row per
	// idempotency key reserved or charged; safegen_spend_totals one row per
	// namespace with the running totals, whose row lock serializes every
	// change to the namespace's spend: spent is every charge (pruned rows'
	// included), reserved the reservations of unsettled keys, pruned the
	// charges of the rows Prune deleted. So spent = sum(charged) + pruned
	// and reserved = sum(reserved) over the namespace's rows. Credits are
	// numeric: sums are exact.
	`CREATE TABLE safegen_spend (
		namespace  text        NOT NULL,
		key        text        NOT NULL,
		reserved   numeric     NOT NULL DEFAULT 0,
		charged    numeric     NOT NULL DEFAULT 0,
		settled    boolean     NOT NULL DEFAULT false,
		updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (namespace, key)
	);
	CREATE INDEX safegen_spend_settled ON safegen_spend (namespace, updated_at) WHERE settled;
	CREATE TABLE safegen_spend_totals (
		namespace  text        PRIMARY KEY,
		spent      numeric     NOT NULL DEFAULT 0,
		reserved   numeric     NOT NULL DEFAULT 0,
		pruned     numeric     NOT NULL DEFAULT 0,
		updated_at timestamptz NOT NULL DEFAULT now()
	);`,
}

// SchemaVersion is the schema version this package creates and expects.
var SchemaVersion = len(migrations)

// migrate brings the schema to SchemaVersion. Workers starting together
// queue on the advisory lock; the first applies the steps, the others find
// them applied. A database at a newer version than this package knows is an
// error, so an old worker never writes to a table it does not understand.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS safegen_schema_migrations (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM safegen_schema_migrations`).Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("pgjournal: database schema version %d is newer than this package's %d", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("pgjournal: migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO safegen_schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return err
			}
		}
		return nil
	})
}
