package saferiver_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	safegen "github.com/safegen/safegen-go"
	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/integrations/river/internal/fleet"
	"github.com/safegen/safegen-go/journal/pgjournal"
	"github.com/safegen/safegen-go/safegentest"
)

// Example: a worker process of the fleet, and the application enqueueing a
// generation in its own transaction, beside its own order row. River runs
// the job on the saferiver.Worker; an order whose transaction rolls back
// takes its job with it, and nothing is ever sent for it.
func Example() {
	ctx := context.Background()
	srv := safegentest.Start(safegentest.WithOutputSize(1024)) // the API, faked
	defer srv.Close()
	pool, done := exampleDatabase(ctx) // River's tables, the journal's, the orders
	defer done()
	dir, _ := os.MkdirTemp("", "saferiver-example-")
	defer os.RemoveAll(dir)

	// The worker side: one journal namespace per API key, a Client over it,
	// the Worker, and River with a timeout above the longest job and a
	// rescue after that.
	j, err := pgjournal.New(ctx, pool, pgjournal.WithNamespace("video-app"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer j.Close()
	c, _ := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j), safegen.WithSharedQuota())
	defer c.Close()
	w, _ := saferiver.NewWorker(c, j, saferiver.WithOutputDir(dir), saferiver.WithTimeout(10*time.Minute))
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}},
		Workers:              workers,
		JobTimeout:           10 * time.Minute,
		RescueStuckJobsAfter: 15 * time.Minute,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	completed, stop := rc.Subscribe(river.EventKindJobCompleted)
	defer stop()
	if err := rc.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = rc.Stop(ctx) }()

	// The application side: the order and its job commit together...
	tx, _ := pool.Begin(ctx)
	_, _ = tx.Exec(ctx, `INSERT INTO orders (id, prompt) VALUES (17, 'a red fox in snow')`)
	_, err = rc.InsertTx(ctx, tx, saferiver.GenerationArgs{
		GenerationCreateParams: safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox in snow", DurationS: 4},
		Output:                 "order-17.mp4",
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = tx.Commit(ctx)
	// ...or roll back together.
	tx, _ = pool.Begin(ctx)
	_, _ = tx.Exec(ctx, `INSERT INTO orders (id, prompt) VALUES (18, 'a blue whale')`)
	_, _ = rc.InsertTx(ctx, tx, saferiver.GenerationArgs{
		GenerationCreateParams: safegen.GenerationCreateParams{Model: "img-2", Prompt: "a blue whale"},
	}, nil)
	_ = tx.Rollback(ctx)

	ev := <-completed
	st, _ := os.Stat(filepath.Join(dir, "order-17.mp4"))
	fmt.Printf("job %s: %s, %d bytes on disk\n", ev.Job.State, "order-17.mp4", st.Size())
	fmt.Println("charges:", srv.Ledger().Total())
	sent := 0
	for _, r := range srv.Requests() {
		if r.Method == "POST" && bytes.Contains(r.Body, []byte("a blue whale")) {
			sent++
		}
	}
	fmt.Println("creates sent for the rolled-back order:", sent)
	// Output:
	// job completed: order-17.mp4, 1024 bytes on disk
	// charges: 1
	// creates sent for the rolled-back order: 0
}

// exampleDatabase gives the Example a schema of its own in the test database
// (see .ci/postgres.sh), with River's tables, the journal's and an orders
// table; done drops it.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, func()) {
	dsn := os.Getenv(dsnEnv)
	schema := fmt.Sprintf("saferiver_example_%d", time.Now().UnixNano())
	pool, err := fleet.OpenSchema(ctx, dsn, schema, 20)
	if err != nil {
		panic(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE orders (id integer PRIMARY KEY, prompt text NOT NULL)`); err != nil {
		panic(err)
	}
	return pool, func() {
		pool.Close()
		_ = fleet.DropSchema(context.Background(), dsn, schema)
	}
}
