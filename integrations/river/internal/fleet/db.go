// Package fleet runs a fleet of saferiver worker processes against the fake
// API (safegentest) on PostgreSQL, kills some of them, and counts what the
// server billed: the engine of `safegen-fleet` (and so of `safegen demo
// --fleet`) and of the module's fleet test.
package fleet

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/safegen/safegen-go/journal/pgjournal"
)

// Namespace is the journal namespace of the fleet's API key.
const Namespace = "fleet"

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

// OpenSchema creates the schema if it is missing, migrates River's tables
// and the journal's into it, and returns a pool of at most maxConns
// connections whose search_path is that schema. A run in a schema of its
// own shares nothing with others in the database, River's leader election
// included.
func OpenSchema(ctx context.Context, dsn, schema string, maxConns int32) (*pgxpool.Pool, error) {
	if !schemaName.MatchString(schema) {
		return nil, fmt.Errorf("fleet: bad schema name %q", schema)
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("fleet: connecting to PostgreSQL: %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema)
	_ = admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: creating schema %s: %w", schema, err)
	}
	pool, err := Connect(ctx, dsn, schema, maxConns)
	if err != nil {
		return nil, err
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	if err == nil {
		_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("fleet: migrating River's tables: %w", err)
	}
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(Namespace))
	if err != nil {
		pool.Close()
		return nil, err
	}
	_ = j.Close()
	return pool, nil
}

// Connect returns a pool of at most maxConns connections whose search_path
// is schema.
func Connect(ctx context.Context, dsn, schema string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("fleet: bad database URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: connecting to PostgreSQL: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("fleet: connecting to PostgreSQL: %w", err)
	}
	return pool, nil
}

// DropSchema drops the schema and everything in it.
func DropSchema(ctx context.Context, dsn, schema string) error {
	if !schemaName.MatchString(schema) {
		return fmt.Errorf("fleet: bad schema name %q", schema)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	return err
}
