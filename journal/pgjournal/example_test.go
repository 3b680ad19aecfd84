package pgjournal_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// Two workers of a fleet share one database. The first worker's call is
// committed (and billed) by the server, but the answer is lost and the
// worker dies. The second runs the same job under the same intent id: the
// journal hands it the same key, and the server replays the answer instead
// of billing again. Workers also call c.Resume(ctx) between jobs, which
// re-sends the intents of workers that died once their leases run out.
//
// It runs against the PostgreSQL in SAFEGEN_TEST_PG_DSN (.ci/postgres.sh
// starts one); without it, go test skips this example as it skips the
// package's tests, unless CI=true (see TestMain).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// In production: pgxpool.New(ctx, os.Getenv("DATABASE_URL")).
	pool, err := pgxpool.New(ctx, os.Getenv("SAFEGEN_TEST_PG_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // after the journals' Close: the pool is yours

	// The API, faked; the first create's answer is dropped after commit.
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"})

	// Use one namespace per application or API key. This one is fresh, so
	// the example starts from an empty journal every time it runs.
	ns := fmt.Sprintf("example-%d", time.Now().UnixNano())
	worker := func(name string) (*safegen.Client, *pgjournal.Journal) {
		j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace(ns), pgjournal.WithOwner(name),
			pgjournal.WithLease(30*time.Second))
		if err != nil {
			log.Fatal(err)
		}
		c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
			safegen.WithMaxRetries(0))
		if err != nil {
			log.Fatal(err)
		}
		return c, j
	}
	params := &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox in the snow"}

	a, ja := worker("worker-a")
	_, err = a.Generations.Create(ctx, params, safegen.WithIntentID("order-17"))
	fmt.Println("worker a lost the answer:", err != nil)
	a.Close()
	ja.Close() // worker a dies

	b, jb := worker("worker-b")
	defer jb.Close()
	defer b.Close()
	gen, err := b.Generations.Create(ctx, params, safegen.WithIntentID("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("worker b:", gen.Status, "replayed:", gen.Meta.Replayed)
	again, err := b.Generations.Create(ctx, params, safegen.WithIntentID("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("once more: same generation:", again.ID == gen.ID, "from the journal:", again.Meta.FromJournal)
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// worker a lost the answer: true
	// worker b: queued replayed: true
	// once more: same generation: true from the journal: true
	// charges: 1
}
