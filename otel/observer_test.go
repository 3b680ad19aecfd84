package safegenotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	safegenotel "github.com/safegen/safegen-go/otel"
	"github.com/safegen/safegen-go/safegentest"
)

// harness is a Client observed into an in-memory span recorder and a
// manual metric reader, against a fake server.
type harness struct {
	srv    *safegentest.Server
	c      *safegen.Client
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
}

func newHarness(t *testing.T, srvOpts []safegentest.Option, opts ...safegen.Option) *harness {
	t.Helper()
	h := &harness{srv: safegentest.NewServer(t, srvOpts...), spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	obs, err := safegenotel.New(safegenotel.WithTracerProvider(tp), safegenotel.WithMeterProvider(mp),
		safegenotel.WithPropagator(propagation.TraceContext{}))
	require.NoError(t, err)
	all := append([]safegen.Option{safegen.WithBaseURL(h.srv.URL), safegen.WithObserver(obs),
		safegen.WithBackoff(time.Millisecond, 2, 4*time.Millisecond)}, opts...)
	h.c, err = safegen.NewClient(h.srv.APIKey, all...)
	require.NoError(t, err)
	t.Cleanup(func() { h.c.Close() })
	return h
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func children(spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartTime().Before(out[j].StartTime()) })
	return out
}

const promptMarker = "prompt-marker-5e1f"

// TestSpansMatchTheServer is the done-when test: creates through
// drops after commit, resets, 5xx and 429s (queued, then at random), a
// whole job, and a few other calls. For every logical call the attempt
// spans are the requests the server received under its key, in order,
// each carrying its own traceparent; resend_count runs 0..n-1; the call
// span's outcome is the call's.
func TestSpansMatchTheServer(t *testing.T) {
	h := newHarness(t, []safegentest.Option{
		safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(0, 20*time.Millisecond), safegentest.WithOutputSize(50_000),
		safegentest.WithFaultRates(safegentest.FaultRates{Status500: 0.1, Status502HTML: 0.05, Status503: 0.1, RateLimit429: 0.1,
			Reset: 0.1, DropAfterCommit: 0.1}, 42),
	}, safegen.WithMaxRetries(3), safegen.WithJournal(journal.NewMemory()), safegen.WithPollInterval(5*time.Millisecond, 10*time.Millisecond))
	h.srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Path: "/v1/generations"},
		safegentest.Fault{Kind: safegentest.FaultReset, Path: "/v1/generations"},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: http.StatusServiceUnavailable, Path: "/v1/generations"},
		safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "0", Path: "/v1/generations"},
	)
	ctx := context.Background()
	p := &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a fox " + promptMarker}
	results := map[string]error{} // by key
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "key-otel-" + strconv.Itoa(i)
			_, err := h.c.Generations.Create(ctx, p, safegen.WithIdempotencyKey(key))
			mu.Lock()
			results[key] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	_, err := h.c.Generations.Run(ctx, p, filepath.Join(t.TempDir(), "out.mp4"), safegen.WithIntentID("order-17"))
	require.NoError(t, err)
	_, _ = h.c.Generations.Estimate(ctx, p)
	_, _ = h.c.Account(ctx)
	_ = h.c.Do(ctx, http.MethodGet, "/v1/account?probe=1", nil, nil)

	spans := h.spans.Ended()
	require.Equal(t, len(h.spans.Started()), len(spans), "every span ended")
	byKey := map[string][]safegentest.RecordedRequest{}
	for _, r := range h.srv.Requests() {
		if r.IdempotencyKey != "" {
			byKey[r.IdempotencyKey] = append(byKey[r.IdempotencyKey], r)
		}
	}
	creates := 0
	for _, s := range spans {
		if s.Name() != "safegen.generations.create" {
			continue
		}
		creates++
		kv, ok := attr(s, safegenotel.AttrIdempotencyKey)
		require.True(t, ok, "a create span names its key")
		key := kv.AsString()
		sent := byKey[key]
		attempts := children(spans, s)
		require.Len(t, attempts, len(sent), "key %s: one attempt span per request the server received", key)
		n, _ := attr(s, safegenotel.AttrAttempts)
		assert.Equal(t, int64(len(sent)), n.AsInt64(), key)
		for i, a := range attempts {
			assert.Equal(t, trace.SpanKindClient, a.SpanKind())
			assert.Equal(t, "POST /v1/generations", a.Name())
			rc, _ := attr(a, "http.request.resend_count")
			assert.Equal(t, int64(i), rc.AsInt64(), "%s attempt %d", key, i+1)
			m, _ := attr(a, "http.request.method")
			assert.Equal(t, "POST", m.AsString())
			u, _ := attr(a, "url.full")
			assert.Equal(t, h.srv.URL+"/v1/generations", u.AsString())
			addr, _ := attr(a, "server.address")
			assert.Equal(t, "127.0.0.1", addr.AsString())
			tp := sent[i].Header.Get("Traceparent")
			assert.Equal(t, fmt.Sprintf("00-%s-%s-01", a.SpanContext().TraceID(), a.SpanContext().SpanID()), tp,
				"%s attempt %d carries its own span's context", key, i+1)
			status, hasStatus := attr(a, "http.response.status_code")
			if sent[i].Status != 0 && sent[i].Fault != safegentest.FaultDropAfterCommit {
				assert.Equal(t, int64(sent[i].Status), status.AsInt64(), "%s attempt %d", key, i+1)
			} else {
				assert.False(t, hasStatus, "%s attempt %d got no answer", key, i+1)
				et, _ := attr(a, "error.type")
				assert.Equal(t, "transport", et.AsString())
			}
		}
		if err, ok := results[key]; ok {
			outcome, _ := attr(s, safegenotel.AttrOutcome)
			if err == nil {
				assert.Equal(t, "ok", outcome.AsString(), key)
				assert.Equal(t, codes.Unset, s.Status().Code)
			} else {
				assert.Equal(t, "error", outcome.AsString(), key)
				assert.Equal(t, codes.Error, s.Status().Code)
			}
		}
	}
	assert.Equal(t, 25, creates, "24 creates and the job's")
	faults := map[safegentest.FaultKind]int{}
	for _, r := range h.srv.Requests() {
		faults[r.Fault]++
	}
	for _, f := range []safegentest.FaultKind{safegentest.FaultDropAfterCommit, safegentest.FaultReset, safegentest.FaultStatus, safegentest.FaultRateLimit} {
		assert.Positive(t, faults[f], "the run met %s", f)
	}

	// The job: one run span holding its create, its wait (with the polls)
	// and its download, with the journal's steps as events.
	var run sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == "safegen.generations.run" {
			run = s
		}
	}
	require.NotNil(t, run)
	var names []string
	for _, c := range children(spans, run) {
		names = append(names, c.Name())
	}
	assert.Equal(t, []string{"safegen.generations.create", "safegen.generations.wait", "safegen.generations.download"}, names)
	var events []string
	for _, e := range run.Events() {
		events = append(events, e.Name)
	}
	assert.Equal(t, []string{"safegen.journal.advance", "safegen.journal.advance", "safegen.journal.advance"}, events)

	assertNoSecret(t, h, spans, p)
	assertBoundedLabels(t, h)
}

// assertNoSecret: no API key, webhook secret or request body in any span
// attribute, event, status or metric attribute.
func assertNoSecret(t *testing.T, h *harness, spans []sdktrace.ReadOnlySpan, p *safegen.GenerationCreateParams) {
	t.Helper()
	body, _ := json.Marshal(p)
	var all []string
	for _, s := range spans {
		all = append(all, s.Name(), s.Status().Description)
		for _, kv := range s.Attributes() {
			all = append(all, string(kv.Key)+"="+kv.Value.String())
		}
		for _, e := range s.Events() {
			all = append(all, e.Name)
			for _, kv := range e.Attributes {
				all = append(all, string(kv.Key)+"="+kv.Value.String())
			}
		}
	}
	for _, set := range metricSets(t, h) {
		for _, kv := range set.set.ToSlice() {
			all = append(all, string(kv.Key)+"="+kv.Value.String())
		}
	}
	dump := strings.Join(all, "\n")
	assert.NotContains(t, dump, h.srv.APIKey)
	assert.NotContains(t, dump, h.srv.WebhookSecret)
	assert.NotContains(t, dump, promptMarker)
	assert.NotContains(t, dump, string(body))
	assert.NotContains(t, dump, "probe=1", "no query in any URL")
}

type metricSet struct {
	metric string
	set    attribute.Set
}

// metricSets returns every data point's attribute set.
func metricSets(t *testing.T, h *harness) []metricSet {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, h.reader.Collect(context.Background(), &rm))
	var out []metricSet
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, metricSet{m.Name, dp.Attributes})
				}
			case metricdata.Sum[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, metricSet{m.Name, dp.Attributes})
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, metricSet{m.Name, dp.Attributes})
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, metricSet{m.Name, dp.Attributes})
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, metricSet{m.Name, dp.Attributes})
				}
			default:
				t.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return out
}

// assertBoundedLabels: metric attributes come from fixed keys and values
// (no key, id or URL), and each metric has few series.
func assertBoundedLabels(t *testing.T, h *harness) {
	t.Helper()
	allowed := map[attribute.Key]bool{"safegen.operation": true, "safegen.outcome": true, "error.type": true,
		"safegen.attempt.cause": true, "safegen.retry": true, "http.request.method": true, "server.address": true,
		"server.port": true, "http.response.status_code": true, "safegen.journal.step": true, "safegen.journal.ok": true}
	series := map[string]int{}
	for _, ms := range metricSets(t, h) {
		series[ms.metric]++
		for _, kv := range ms.set.ToSlice() {
			assert.True(t, allowed[kv.Key], "metric %s has attribute %s", ms.metric, kv.Key)
			v := kv.Value.String()
			assert.NotContains(t, v, "key-otel-", "no idempotency key as a label")
			assert.NotContains(t, v, "gen_", "no generation id as a label")
			assert.NotContains(t, v, "order-17", "no intent id as a label")
			assert.NotContains(t, v, "/", "no path or URL as a label")
		}
	}
	for m, n := range series {
		assert.LessOrEqual(t, n, 40, "metric %s has %d series", m, n)
	}
	for _, m := range []string{"safegen.client.calls", "safegen.client.attempts", "safegen.client.retry.wait",
		"safegen.client.call.duration", "http.client.request.duration", "safegen.client.retry_budget.tokens",
		"safegen.client.journal.steps", "safegen.client.journal.pending"} {
		assert.Positive(t, series[m], "metric %s recorded", m)
	}
}

func TestMetricsCountCallsAndAttempts(t *testing.T) {
	h := newHarness(t, nil, safegen.WithMaxRetries(1))
	h.srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "0"})
	ctx := context.Background()
	p := &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a fox"}
	_, err := h.c.Generations.Create(ctx, p)
	require.NoError(t, err)
	h.srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500}, safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500})
	_, err = h.c.Generations.Create(ctx, p)
	require.ErrorIs(t, err, safegen.ErrServer)

	var rm metricdata.ResourceMetrics
	require.NoError(t, h.reader.Collect(ctx, &rm))
	sums := map[string]int64{}
	var waits uint64
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				op, _ := dp.Attributes.Value("safegen.operation")
				oc, _ := dp.Attributes.Value("safegen.outcome")
				et, _ := dp.Attributes.Value("error.type")
				cause, _ := dp.Attributes.Value("safegen.attempt.cause")
				retry, _ := dp.Attributes.Value("safegen.retry")
				sums[fmt.Sprintf("%s %s %s %s %s %v", m.Name, op.String(), oc.String(), et.String(), cause.String(), retry.String())] += dp.Value
			}
		case metricdata.Histogram[float64]:
			if m.Name == "safegen.client.retry.wait" {
				for _, dp := range d.DataPoints {
					waits += dp.Count
				}
			}
		}
	}
	assert.Equal(t, map[string]int64{
		"safegen.client.calls generations.create ok   ":          1,
		"safegen.client.calls generations.create error 500  ":    1,
		"safegen.client.attempts generations.create   429 true":  1,
		"safegen.client.attempts generations.create   ok false":  1,
		"safegen.client.attempts generations.create   500 true":  1,
		"safegen.client.attempts generations.create   500 false": 1,
	}, sums)
	assert.Equal(t, uint64(2), waits, "two retries waited")
}

// TestSpendAndBudgetGauges: the spend event (wired by the spend guard)
// and the retry budget land in gauges.
func TestSpendAndBudgetGauges(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := safegenotel.New(safegenotel.WithMeterProvider(mp), safegenotel.WithAttributes(attribute.String("client", "a")))
	require.NoError(t, err)
	ctx := context.Background()
	obs.SpendChange(ctx, safegen.SpendEvent{Limit: 500, Spent: 36, Reserved: 12})
	obs.BudgetChange(ctx, safegen.BudgetEvent{Tokens: 495, Max: 500, Change: -5})
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]float64{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Gauge[float64]:
			got[m.Name] = d.DataPoints[0].Value
			v, _ := d.DataPoints[0].Attributes.Value("client")
			assert.Equal(t, "a", v.AsString())
		case metricdata.Gauge[int64]:
			got[m.Name] = float64(d.DataPoints[0].Value)
		}
	}
	assert.Equal(t, map[string]float64{"safegen.client.credits.spent": 36, "safegen.client.credits.reserved": 12,
		"safegen.client.credits.limit": 500, "safegen.client.retry_budget.tokens": 495}, got)
}

// TestUnknownLabelsBounded: whatever a server answers, a metric label
// stays in its set.
func TestUnknownLabelsBounded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := safegenotel.New(safegenotel.WithMeterProvider(mp))
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 50 {
		obs.AttemptEnd(ctx, safegen.AttemptInfo{Operation: "made-up-" + strconv.Itoa(i), Cause: "409 code_" + strconv.Itoa(i), StatusCode: 409})
		obs.CallEnd(ctx, safegen.CallResult{CallInfo: safegen.CallInfo{Operation: safegen.OpDo}, Err: errors.New("x"), ErrorType: "weird-" + strconv.Itoa(i)})
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			require.Len(t, d.DataPoints, 1, m.Name)
			for _, kv := range d.DataPoints[0].Attributes.ToSlice() {
				assert.NotContains(t, kv.Value.String(), "made-up")
				assert.NotContains(t, kv.Value.String(), "code_")
				assert.NotContains(t, kv.Value.String(), "weird")
			}
		}
	}
}
