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
)

// A worker of a fleet: every worker runs the same code against one database.
// It needs a PostgreSQL server, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close() // after j.Close: the pool is yours

	j, err := pgjournal.New(ctx, pool,
		pgjournal.WithNamespace("video-app"), // one per API key or application
		pgjournal.WithLease(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer j.Close()

	c, err := safegen.NewClient(os.Getenv("SAFEGEN_API_KEY"), safegen.WithJournal(j),
		safegen.WithBaseURL("https://api.example.com"))
	if err != nil {
		log.Fatal(err)
	}

	// Finish what dead workers left in flight (after their leases ran out),
	// then do this worker's own jobs, each under a stable intent id.
	if report, err := c.Resume(ctx); err == nil {
		fmt.Println("resumed:", len(report.Completed))
	}
	gen, err := c.Generations.Create(ctx,
		&safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox in the snow"},
		safegen.WithIntentID("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(gen.ID)
}
