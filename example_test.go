package safegen_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
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
