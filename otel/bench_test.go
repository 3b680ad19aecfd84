package safegenotel_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/safegen/safegen-go"
	safegenotel "github.com/safegen/safegen-go/otel"
)

var genBody = []byte(`{"id":"gen_1","request_id":"req_1","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`)

var benchParams = &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox running through snow", DurationS: 4}

// discard is a span exporter that drops what it is given.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// observers are the configurations each benchmark compares: none, the
// OpenTelemetry Observer on no-op providers (what an application that has
// not set up OpenTelemetry pays), and on the SDK (every span sampled and
// batched to an exporter that drops them, metrics aggregated).
func observers(b *testing.B) []struct {
	name string
	opts []safegen.Option
} {
	noopObs, err := safegenotel.New(safegenotel.WithTracerProvider(tracenoop.NewTracerProvider()),
		safegenotel.WithMeterProvider(noop.NewMeterProvider()), safegenotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	sdkObs, err := safegenotel.New(safegenotel.WithTracerProvider(tp), safegenotel.WithMeterProvider(mp),
		safegenotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		opts []safegen.Option
	}{
		{"observer=none", nil},
		{"observer=otel-noop", []safegen.Option{safegen.WithObserver(noopObs)}},
		{"observer=otel-sdk", []safegen.Option{safegen.WithObserver(sdkObs)}},
	}
}

func benchCreates(b *testing.B, opts ...safegen.Option) {
	c, err := safegen.NewClient("sk_bench", opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := c.Generations.Create(ctx, benchParams); err != nil {
			b.Fatal(err)
		}
	}
	if cpu := cpuTime() - cpu0; cpu > 0 {
		// The process's CPU time (the test server's included) per create:
		// steadier than ns/op on a shared machine.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkCreate is one Generations.Create against a local server, as the
// root module's BenchmarkCreate, with each observer.
func BenchmarkCreate(b *testing.B) {
	srv := benchServer(b)
	for _, o := range observers(b) {
		b.Run(o.name, func(b *testing.B) {
			benchCreates(b, append([]safegen.Option{safegen.WithBaseURL(srv.URL)}, o.opts...)...)
		})
	}
}

// benchServer answers every create with genBody, as cheaply as a server
// can, until the benchmark ends.
func benchServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/json"}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(genBody)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// memTransport answers every request from memory, so BenchmarkCreateCPU
// shows the client's own work, where an observer's cost is the most
// visible.
type memTransport struct{}

func (memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusAccepted, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(genBody)), ContentLength: int64(len(genBody)), Request: r}, nil
}

// BenchmarkCreateCPU is BenchmarkCreate over an in-memory transport.
func BenchmarkCreateCPU(b *testing.B) {
	for _, o := range observers(b) {
		b.Run(o.name, func(b *testing.B) {
			benchCreates(b, append([]safegen.Option{safegen.WithBaseURL("http://127.0.0.1:1"),
				safegen.WithHTTPClient(&http.Client{Transport: memTransport{}})}, o.opts...)...)
		})
	}
}

// BenchmarkCreatePaired measures the observers' cost on a shared, noisy
// machine: each iteration makes one create with each configuration, in a
// rotating order, and times each apart, so load that comes and goes weighs
// on every configuration alike. It reports each configuration's mean time
// per create and, as "noop-overhead-%" and "sdk-overhead-%", the difference
// to no observer; against a local server, and over an in-memory transport
// (where the client's own work is all there is, so the share is largest).
func BenchmarkCreatePaired(b *testing.B) {
	srv := benchServer(b)
	b.Run("transport=local-server", func(b *testing.B) { pairedCreates(b, safegen.WithBaseURL(srv.URL)) })
	b.Run("transport=memory", func(b *testing.B) {
		pairedCreates(b, safegen.WithBaseURL("http://127.0.0.1:1"), safegen.WithHTTPClient(&http.Client{Transport: memTransport{}}))
	})
}

func pairedCreates(b *testing.B, base ...safegen.Option) {
	obs := observers(b)
	clients := make([]*safegen.Client, len(obs))
	for i, o := range obs {
		c, err := safegen.NewClient("sk_bench", append(base[:len(base):len(base)], o.opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	ctx := context.Background()
	total := make([]time.Duration, len(clients))
	n := 0
	for b.Loop() {
		for k := range clients {
			i := (n + k) % len(clients)
			start := time.Now()
			if _, err := clients[i].Generations.Create(ctx, benchParams); err != nil {
				b.Fatal(err)
			}
			total[i] += time.Since(start)
		}
		n++
	}
	for i, o := range obs {
		b.ReportMetric(float64(total[i].Nanoseconds())/float64(n), strings.TrimPrefix(o.name, "observer=")+"-ns/op")
	}
	b.ReportMetric(100*(float64(total[1])/float64(total[0])-1), "noop-overhead-%")
	b.ReportMetric(100*(float64(total[2])/float64(total[0])-1), "sdk-overhead-%")
}
