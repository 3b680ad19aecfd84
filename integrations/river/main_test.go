package saferiver_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/integrations/river/internal/fleet"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// dsnEnv names the variable holding the test database's connection string;
// .ci/postgres.sh starts a server and .ci/run exports it.
const dsnEnv = "SAFEGEN_TEST_PG_DSN"

func TestMain(m *testing.M) {
	if fleet.IsWorker() {
		os.Exit(fleet.WorkerMain())
	}
	skipExamplesWithoutDatabase()
	os.Exit(m.Run())
}

// skipExamplesWithoutDatabase leaves the Examples out of the run when there
// is no test database, as dsn skips the tests: an Example cannot skip itself.
// In CI (CI=true) nothing is skipped, so a missing database fails the run.
func skipExamplesWithoutDatabase() {
	if os.Getenv(dsnEnv) != "" || os.Getenv("CI") == "true" {
		return
	}
	flag.Parse()
	skip := "^Example"
	if cur := flag.Lookup("test.skip").Value.String(); cur != "" {
		skip = cur + "|" + skip
	}
	if err := flag.Set("test.skip", skip); err != nil {
		fmt.Fprintln(os.Stderr, "saferiver:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "saferiver: %s is not set: Examples skipped (see .ci/postgres.sh)\n", dsnEnv)
}

// dsn returns the test database, skips the test without one, and fails it
// without one in CI (CI=true), where a skip would hide the whole package.
func dsn(t testing.TB) string {
	t.Helper()
	d := os.Getenv(dsnEnv)
	if d == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set in CI: .ci/run must start PostgreSQL (.ci/postgres.sh)", dsnEnv)
		}
		t.Skipf("%s is not set: no PostgreSQL to test against (see .ci/postgres.sh)", dsnEnv)
	}
	return d
}

var schemaSeq atomic.Int64

// newDatabase gives the test a schema of its own (River's tables, its
// leader election and the journal's table included), migrated, and a pool
// whose connections use it; both go when the test ends.
func newDatabase(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	schema := fmt.Sprintf("saferiver_%d_%d", time.Now().UnixNano(), schemaSeq.Add(1))
	pool, err := fleet.OpenSchema(ctx, dsn(t), schema, 20)
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		require.NoError(t, fleet.DropSchema(context.Background(), dsn(t), schema))
	})
	return pool
}

func newJournal(t testing.TB, pool *pgxpool.Pool, owner string, lease time.Duration) *pgjournal.Journal {
	t.Helper()
	j, err := pgjournal.New(context.Background(), pool, pgjournal.WithNamespace("api-key-1"),
		pgjournal.WithOwner(owner), pgjournal.WithLease(lease))
	require.NoError(t, err)
	t.Cleanup(func() { _ = j.Close() })
	return j
}

func newClient(t testing.TB, srv *safegentest.Server, j safegen.KeyJournal) *safegen.Client {
	t.Helper()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
		safegen.WithBackoff(5*time.Millisecond, 2, 50*time.Millisecond), safegen.WithMaxRetries(5),
		safegen.WithPollInterval(10*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// startRiver starts a River client working queue with workers, stopped
// when the test ends.
func startRiver(t testing.TB, pool *pgxpool.Pool, queue string, workers *river.Workers) *river.Client[pgx.Tx] {
	t.Helper()
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: 4}},
		Workers:           workers,
		FetchPollInterval: 50 * time.Millisecond,
		FetchCooldown:     10 * time.Millisecond,
		TestOnly:          true,
		Logger:            quietLogger(),
	})
	require.NoError(t, err)
	require.NoError(t, rc.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rc.Stop(ctx)
	})
	return rc
}

// jobState reads a job's River state and its recorded output.
func jobState(t testing.TB, pool *pgxpool.Pool, id int64) (state string, output string) {
	t.Helper()
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT state::text, coalesce(metadata->>'output', '') FROM river_job WHERE id = $1`, id).Scan(&state, &output))
	return state, output
}

func waitState(t testing.TB, pool *pgxpool.Pool, id int64, want ...string) string {
	t.Helper()
	var got string
	require.Eventually(t, func() bool {
		got, _ = jobState(t, pool, id)
		for _, w := range want {
			if got == w {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "job %d never reached %s", id, strings.Join(want, " or "))
	return got
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
