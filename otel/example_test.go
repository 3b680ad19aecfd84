package safegenotel_test

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/safegen/safegen-go"
	safegenotel "github.com/safegen/safegen-go/otel"
	"github.com/safegen/safegen-go/safegentest"
)

// A create whose first answer is lost after the server billed it, and whose
// second meets a 503: one call span, three attempt spans, one charge.
func Example() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503},
	)

	spans := tracetest.NewSpanRecorder() // in a service: an OTLP exporter
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	obs, err := safegenotel.New(safegenotel.WithTracerProvider(tp), safegenotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		panic(err)
	}
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithObserver(obs),
		safegen.WithBackoff(time.Millisecond, 2, 4*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a fox"}); err != nil {
		panic(err)
	}

	for _, s := range spans.Ended() {
		fmt.Print(s.Name())
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "http.request.resend_count", "http.response.status_code", "error.type",
				"safegen.attempts", "safegen.replayed", "safegen.outcome":
				fmt.Printf(" %s=%s", kv.Key, kv.Value.String())
			}
		}
		fmt.Println()
	}
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// POST /v1/generations http.request.resend_count=0 error.type=transport
	// POST /v1/generations http.request.resend_count=1 http.response.status_code=503 error.type=503
	// POST /v1/generations http.request.resend_count=2 http.response.status_code=202 safegen.replayed=true
	// safegen.generations.create safegen.outcome=ok safegen.attempts=3 safegen.replayed=true http.response.status_code=202
	// charges: 1
}
