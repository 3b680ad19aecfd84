// Command example traces and measures a few safegen calls with
// OpenTelemetry and prints the spans and metrics to stdout.
//
// It runs against the SDK's in-process fake API, with faults, so it needs
// no network:
//
//	cd otel && go run ./example
//
// Point it at a real API by setting SAFEGEN_BASE_URL and SAFEGEN_API_KEY.
// In a service, replace the stdout exporters with OTLP ones; the Observer
// does not change.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/safegen/safegen-go"
	safegenotel "github.com/safegen/safegen-go/otel"
	"github.com/safegen/safegen-go/safegentest"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// OpenTelemetry: spans and metrics to stdout, W3C trace context.
	spanExp, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spanExp))
	metricExp, err := stdoutmetric.New(stdoutmetric.WithPrettyPrint())
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metricExp)))
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	defer func() {
		// Shutting down flushes what is buffered to stdout.
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	}()

	url, key := os.Getenv("SAFEGEN_BASE_URL"), os.Getenv("SAFEGEN_API_KEY")
	if url == "" {
		srv := safegentest.Start(safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(0, 50*time.Millisecond))
		defer srv.Close()
		// The first create's answer is lost after the server billed it,
		// and the second attempt meets a 503.
		srv.InjectFaults(
			safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"},
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Method: "POST", Path: "/v1/generations"},
		)
		url, key = srv.URL, srv.APIKey
	}

	// The Observer uses the global providers set above.
	obs, err := safegenotel.New()
	if err != nil {
		return err
	}
	c, err := safegen.NewClient(key, safegen.WithBaseURL(url), safegen.WithObserver(obs),
		safegen.WithBackoff(50*time.Millisecond, 2, time.Second), safegen.WithPollInterval(50*time.Millisecond, time.Second))
	if err != nil {
		return err
	}
	defer c.Close()

	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox running through snow"})
	if err != nil {
		return err
	}
	done, err := c.Generations.Wait(ctx, gen.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "created %s in %d attempts (replayed %t), now %s; spans and metrics follow on stdout\n",
		gen.ID, gen.Meta.Attempts, gen.Meta.Replayed, done.Status)
	return nil
}
