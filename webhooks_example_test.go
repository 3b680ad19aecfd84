package safegen_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/safegen/safegen-go"
)

// exampleSecret is a Standard Webhooks secret: "whsec_" and base64.
const exampleSecret = "whsec_c2FmZWdlbi1leGFtcGxlLXdlYmhvb2stc2VjcmV0"

var exampleBody = []byte(`{"id":"evt_123","type":"generation.succeeded","request_id":"req_9","created_at":"2025-01-02T03:04:05Z","data":{"id":"gen_42","status":"succeeded","model":"img-2","cost":3,"output":{"url":"https://cdn.example/gen_42.png"}}}`)

// Verify a delivery yourself, in any framework: pass the headers, the raw
// body and your secrets (several while rotating).
func ExampleVerifyWebhook() {
	sentAt := time.Unix(1_735_787_045, 0)
	header := safegen.SignPayload(exampleSecret, exampleBody, sentAt) // what the sender would send

	now := func() time.Time { return sentAt.Add(30 * time.Second) }
	err := safegen.VerifyWebhook(header, exampleBody, []string{exampleSecret}, safegen.WithWebhookClock(now))
	fmt.Println("valid:", err)

	tampered := bytes.Replace(exampleBody, []byte(`"cost":3`), []byte(`"cost":0`), 1)
	err = safegen.VerifyWebhook(header, tampered, []string{exampleSecret}, safegen.WithWebhookClock(now))
	fmt.Println("tampered:", errors.Is(err, safegen.ErrWebhookSignature))

	late := func() time.Time { return sentAt.Add(time.Hour) }
	err = safegen.VerifyWebhook(header, exampleBody, []string{exampleSecret}, safegen.WithWebhookClock(late))
	fmt.Println("replayed an hour later:", errors.Is(err, safegen.ErrWebhookTimestamp))
	// Output:
	// valid: <nil>
	// tampered: true
	// replayed an hour later: true
}

// ParseEvent verifies, then decodes the event and its generation.
func ExampleParseEvent() {
	sentAt := time.Unix(1_735_787_045, 0)
	header := safegen.SignPayload(exampleSecret, exampleBody, sentAt)
	e, err := safegen.ParseEvent(header, exampleBody, []string{exampleSecret},
		safegen.WithWebhookClock(func() time.Time { return sentAt }))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.ID, e.Type, e.Data.ID, e.Data.Status, e.Data.Output.URL)
	// Output:
	// evt_123 generation.succeeded gen_42 succeeded https://cdn.example/gen_42.png
}

// SignPayload makes deliveries for tests of your own receiver, in both
// signature forms.
func ExampleSignPayload() {
	h := safegen.SignPayload(exampleSecret, exampleBody, time.Unix(1_735_787_045, 0))
	fmt.Println("X-Signature:", h.Get("X-Signature"))
	fmt.Println("webhook-id:", h.Get("webhook-id"))
	fmt.Println("webhook-timestamp:", h.Get("webhook-timestamp"))
	fmt.Println("webhook-signature:", h.Get("webhook-signature"))
	// Output:
	// X-Signature: t=1735787045,v1=f90ec62fef67cb165252c7b81c331950148fc9bf2a3bd78f5338e798282acfa7
	// webhook-id: evt_123
	// webhook-timestamp: 1735787045
	// webhook-signature: v1,CZp7WRv+vHx0MReRn5xLM25265WLDoDMWR1N5hjcRh4=
}

// WebhookHandler verifies, deduplicates by event id and calls your
// function; an error answers 500 so the sender retries, and only then does
// the function run again for that event.
func ExampleWebhookHandler() {
	calls := 0
	hook := safegen.WebhookHandler([]string{exampleSecret}, func(ctx context.Context, e *safegen.Event) error {
		calls++
		if calls == 1 {
			return errors.New("database briefly unavailable")
		}
		fmt.Println("processing", e.ID, "for", e.Data.ID)
		return nil
	})
	// mux.Handle("POST /webhooks/safegen", hook) in a real server.

	deliver := func() int {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/safegen", bytes.NewReader(exampleBody))
		req.Header = safegen.SignPayload(exampleSecret, exampleBody, time.Now())
		w := httptest.NewRecorder()
		hook.ServeHTTP(w, req)
		return w.Code
	}
	fmt.Println("first delivery:", deliver())
	fmt.Println("retry:", deliver())
	fmt.Println("duplicate:", deliver())
	fmt.Println("calls:", calls)
	// Output:
	// first delivery: 500
	// processing evt_123 for gen_42
	// retry: 204
	// duplicate: 204
	// calls: 2
}
