package safegen_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// After a crash (here: the answer to a create is lost after the server billed
// it, and the call gives up), Resume re-sends the pending intent with its
// original key and bytes: the server replays it, and bills nothing more.
func ExampleClient_Resume() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	j := journal.NewMemory() // journal.Open(path) in production: it survives the process
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
		safegen.WithMaxRetries(0))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit})
	_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a lighthouse"},
		safegen.WithIntentID("order-17"))
	fmt.Println("create failed:", err != nil, "charges:", srv.Ledger().Total())

	report, err := c.Resume(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range report.Completed {
		var gen safegen.Generation
		if err := r.Decode(&gen); err != nil {
			log.Fatal(err)
		}
		fmt.Println("resumed:", r.Intent.ID, "replayed:", r.Meta.Replayed, "status:", gen.Status)
	}
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// create failed: true charges: 1
	// resumed: order-17 replayed: true status: queued
	// charges: 1
}
