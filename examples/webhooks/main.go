// Command webhooks receives signed generation events with safegen's
// WebhookHandler. It starts the fake Generation API in-process, creates a
// generation with a webhook_url, fails the first delivery on purpose, and
// shows that the retried delivery is processed once and a repeat is ignored.
//
//	go run ./examples/webhooks
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

func main() {
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The fake API: generations finish in milliseconds, deliveries are
	// retried after 10 ms, 20 ms, ...
	api := safegentest.Start(
		safegentest.WithGenerationTiming(5*time.Millisecond, 5*time.Millisecond),
		safegentest.WithWebhookRetry(10*time.Millisecond, 6),
		safegentest.WithRateLimit(0, 0))
	defer api.Close()
	secret := api.WebhookSecret // in production: from your secret store, never from code

	// The receiver. fn fails the first time, as a busy database would.
	var (
		mu       sync.Mutex
		attempts int
		done     = make(chan *safegen.Event, 1)
	)
	handler := safegen.WebhookHandler([]string{secret}, func(ctx context.Context, e *safegen.Event) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			fmt.Println("receiver: first delivery of", e.Type, "fails on purpose")
			return errors.New("database busy")
		}
		fmt.Println("receiver: processed", e.Type, "for", e.Data.ID, "->", e.Data.Status)
		done <- e
		return nil
	})
	mux := http.NewServeMux()
	mux.Handle("/webhooks/safegen", handler)
	hook := httptest.NewServer(mux)
	defer hook.Close()

	c, err := safegen.NewClient(api.APIKey, safegen.WithBaseURL(api.URL))
	if err != nil {
		return err
	}
	defer c.Close()
	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{
		Model: "img-2", Prompt: "a lighthouse at dusk", WebhookURL: hook.URL + "/webhooks/safegen",
	})
	if err != nil {
		return err
	}
	fmt.Println("created", gen.ID, "status", gen.Status)

	var e *safegen.Event
	select {
	case e = <-done:
	case <-ctx.Done():
		return fmt.Errorf("no event processed: %w", ctx.Err())
	}

	// Wait until the sender has the 204: until then the event is still
	// claimed, and a repeat would be told 409 (busy, come back later).
	for !delivered(api) {
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("no 204 recorded: %w", ctx.Err())
		}
	}

	// The sender may deliver the same event again (a lost answer, a second
	// worker): the handler answers 204 without calling fn.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL+"/webhooks/safegen", bytes.NewReader(e.Raw))
	if err != nil {
		return err
	}
	req.Header = safegen.SignPayload(secret, e.Raw, time.Now())
	resp, err := hook.Client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Println("repeat delivery answered", resp.StatusCode)

	for _, d := range api.WebhookDeliveries() {
		fmt.Printf("server: delivery %d of %s answered %d\n", d.Attempt, d.EventID, d.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Println("fn calls:", attempts, "(one failure, one success)")
	return nil
}

// delivered reports whether the fake API has recorded a 2xx delivery.
func delivered(api *safegentest.Server) bool {
	for _, d := range api.WebhookDeliveries() {
		if d.Status >= 200 && d.Status < 300 {
			return true
		}
	}
	return false
}
