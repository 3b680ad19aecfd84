// Command basic makes one generation through faults and waits for it.
//
// It runs against the SDK's in-process fake API, so it needs no network:
//
//	go run ./examples/basic
//
// Point it at a real API by setting SAFEGEN_BASE_URL and SAFEGEN_API_KEY.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

func main() {
	url, key := os.Getenv("SAFEGEN_BASE_URL"), os.Getenv("SAFEGEN_API_KEY")
	if url == "" {
		srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
		defer srv.Close()
		// The response to the first create is lost after the server billed
		// it, and the second attempt meets a 502 from a proxy.
		srv.InjectFaults(
			safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"},
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 502, HTML: true, Method: "POST", Path: "/v1/generations"},
		)
		url, key = srv.URL, srv.APIKey
		defer func() { fmt.Println("charges in the fake server's ledger:", srv.Ledger().Total()) }()
	}

	c, err := safegen.NewClient(key, safegen.WithBaseURL(url), safegen.WithPollInterval(50*time.Millisecond, time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{
		Model: "veo-3-1-fast", Prompt: "a red fox running through snow", DurationS: 4,
	})
	var apiErr *safegen.APIError
	switch {
	case errors.Is(err, safegen.ErrRateLimited) && errors.As(err, &apiErr):
		log.Fatalf("rate limited: come back in %v", apiErr.RetryAfter)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("created %s (key %s, %d attempts, replayed %t)\n", gen.ID, gen.Meta.IdempotencyKey, gen.Meta.Attempts, gen.Meta.Replayed)

	done, err := c.Generations.Wait(ctx, gen.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s, cost %g credits\n", done.ID, done.Status, done.Cost)
}
