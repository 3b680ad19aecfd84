package safegen_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

// A create that survives a dropped response: the server commits and bills,
// the connection dies before the answer, and the retry with the same key is
// a replay, not a second charge.
func Example() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"})

	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL),
		safegen.WithBackoff(time.Millisecond, 2, 10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Bound every call: retries and waits then end with the context.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{
		Model: "veo-3-1-fast", Prompt: "a red fox running through snow", DurationS: 4,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", gen.Status)
	fmt.Println("attempts:", gen.Meta.Attempts, "replayed:", gen.Meta.Replayed)
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// status: queued
	// attempts: 2 replayed: true
	// charges: 1
}

// A Retry-After longer than the configured bound comes back at once as a
// typed 429 carrying the wait, so a worker can reschedule instead of blocking.
func ExampleAPIError_retryAfter() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0), safegentest.WithDialect(safegentest.DialectRimp))
	defer srv.Close()
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultRateLimit, Code: "anomaly_paused", RetryAfter: "1800"})

	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithDialect(safegen.DialectRimp))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The answer comes at once: the 10 s bound is never reached.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a lighthouse"})
	var apiErr *safegen.APIError
	if errors.Is(err, safegen.ErrRateLimited) && errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Code, "retry after", apiErr.RetryAfter, "attempts", apiErr.Attempts)
	}
	fmt.Println("past the bound:", errors.Is(err, safegen.ErrRetryAfterTooLong))
	// Output:
	// 429 anomaly_paused retry after 30m0s attempts 1
	// past the bound: true
}

// Reusing one key for two different requests is a bug in the caller; the
// server refuses and the client says so with a sentinel.
func ExampleWithIdempotencyKey() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a cat"},
		safegen.WithIdempotencyKey("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	again, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a cat"},
		safegen.WithIdempotencyKey("order-17"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same generation:", first.ID == again.ID, "replayed:", again.Meta.Replayed)

	_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a dog"},
		safegen.WithIdempotencyKey("order-17"))
	fmt.Println("reuse:", errors.Is(err, safegen.ErrIdempotencyKeyReuse))
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// same generation: true replayed: true
	// reuse: true
	// charges: 1
}

// Client.Do reaches any endpoint through the same pipeline: a POST gets a
// key and safe retries, a GET never carries a key.
func ExampleClient_Do() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var est struct {
		Credits int `json:"credits"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Do(ctx, http.MethodPost, "/v1/generations/estimate",
		map[string]any{"model": "veo-3-1-fast", "prompt": "waves", "duration_s": 4}, &est)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("credits:", est.Credits)
	// Output:
	// credits: 12
}

// Download streams a succeeded generation's output to a file. Here the
// first transfer is cut after 300 000 bytes: the second attempt asks only
// for the rest, and the file appears at its path once its size and SHA-256
// match the generation's.
func ExampleGenerationsService_Download() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(0, 0),
		safegentest.WithOutputSize(1<<20))
	defer srv.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox running through snow"})
	if err != nil {
		log.Fatal(err)
	}
	gen, err = c.Generations.Wait(ctx, gen.ID)
	if err != nil {
		log.Fatal(err)
	}
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 300_000, Path: "/v1/outputs/" + gen.ID})

	dir, err := os.MkdirTemp("", "safegen-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	res, err := c.Generations.Download(ctx, gen, filepath.Join(dir, "fox.mp4"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("size:", res.Size, "verified:", res.SHA256 == gen.Output.SHA256)
	fmt.Println("attempts:", res.Attempts, "fetched:", res.Fetched)
	// Output:
	// size: 1048576 verified: true
	// attempts: 2 fetched: 1048576
}

// Cancel stops a generation. Canceled while still queued, it is refunded;
// once it has finished there is nothing to cancel, and the error says so.
func ExampleGenerationsService_Cancel() {
	clk := safegentest.NewManualClock(time.Now())
	srv := safegentest.Start(safegentest.WithClock(clk), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(time.Minute, time.Minute))
	defer srv.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	params := &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "waves at night", DurationS: 4}

	queued, err := c.Generations.Create(ctx, params)
	if err != nil {
		log.Fatal(err)
	}
	canceled, err := c.Generations.Cancel(ctx, queued.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", canceled.Status, "cost:", canceled.Cost)
	fmt.Println("refunded credits:", srv.Ledger().Refunded(srv.APIKey))

	finished, err := c.Generations.Create(ctx, params)
	if err != nil {
		log.Fatal(err)
	}
	clk.Advance(3 * time.Minute)
	_, err = c.Generations.Cancel(ctx, finished.ID)
	fmt.Println("already finished:", errors.Is(err, safegen.ErrGenerationTerminal))
	// Output:
	// status: canceled cost: 0
	// refunded credits: 12
	// already finished: true
}
