package pgjournal_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/safegen/safegen-go/journal/pgjournal"
)

// dsnEnv names the variable holding the test database's connection string;
// .ci/postgres.sh starts a server and .ci/run exports it.
const dsnEnv = "SAFEGEN_TEST_PG_DSN"

func TestMain(m *testing.M) {
	if os.Getenv(fleetChildEnv) != "" {
		os.Exit(fleetChild())
	}
	if os.Getenv(spendChildEnv) != "" {
		os.Exit(spendChild())
	}
	skipExamplesWithoutDatabase()
	goleak.VerifyTestMain(m)
}

// skipExamplesWithoutDatabase leaves the package's Examples out of the run
// when there is no test database, as dsn skips the tests: an Example cannot
// skip itself, and its "// Output:" would fail. It adds them to -test.skip
// (the go test -skip flag), and says so on stderr (shown with -v). In CI
// (CI=true) nothing is skipped, so a missing database fails the run.
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
		fmt.Fprintln(os.Stderr, "pgjournal:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "pgjournal: %s is not set: Examples skipped (see .ci/postgres.sh)\n", dsnEnv)
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

// newPool connects to the test database and closes the pool when t ends.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn(t))
	require.NoError(t, err)
	cfg.MaxConns = 80
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, pool.Ping(context.Background()))
	return pool
}

var nsSeq atomic.Int64

// freshNamespace returns a namespace no other test (or earlier run) uses.
func freshNamespace(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s-%d-%d", name, time.Now().UnixNano(), nsSeq.Add(1))
}

// open returns a Journal on pool in a fresh namespace unless opts name one,
// closed when t ends.
func open(t testing.TB, pool *pgxpool.Pool, opts ...pgjournal.Option) *pgjournal.Journal {
	t.Helper()
	opts = append([]pgjournal.Option{pgjournal.WithNamespace(freshNamespace(t))}, opts...)
	j, err := pgjournal.New(context.Background(), pool, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, j.Close()) })
	return j
}
