package safegenotel

import (
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// instruments are the Observer's metrics (see the package doc).
type instruments struct {
	calls           metric.Int64Counter
	callDuration    metric.Float64Histogram
	attempts        metric.Int64Counter
	retryWait       metric.Float64Histogram
	requestDuration metric.Float64Histogram
	budget          metric.Int64Gauge
	journalSteps    metric.Int64Counter
	pending         metric.Int64UpDownCounter
	spent           metric.Float64Gauge
	reserved        metric.Float64Gauge
	limit           metric.Float64Gauge
}

// durationBuckets are the semantic conventions' HTTP duration buckets,
// stretched to cover a long retried call.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120}

// waitBuckets cover the backoff (0.5 s doubling to 8 s) and Retry-After
// (up to the 60 s bound).
var waitBuckets = []float64{0, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 30, 60}

func (m *instruments) init(meter metric.Meter) error {
	var errs [11]error
	m.calls, errs[0] = meter.Int64Counter("safegen.client.calls", metric.WithUnit("{call}"),
		metric.WithDescription("Logical calls made, by operation and outcome."))
	m.callDuration, errs[1] = meter.Float64Histogram("safegen.client.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of logical calls, retries and waits included."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	m.attempts, errs[2] = meter.Int64Counter("safegen.client.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Requests sent, by operation, cause (what the attempt met) and whether a retry followed."))
	m.retryWait, errs[3] = meter.Float64Histogram("safegen.client.retry.wait", metric.WithUnit("s"),
		metric.WithDescription("Waits decided before a retry: backoff, or the server's Retry-After when longer."),
		metric.WithExplicitBucketBoundaries(waitBuckets...))
	m.requestDuration, errs[4] = meter.Float64Histogram("http.client.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP client requests."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	m.budget, errs[5] = meter.Int64Gauge("safegen.client.retry_budget.tokens", metric.WithUnit("{token}"),
		metric.WithDescription("Tokens left in the client's retry budget."))
	m.journalSteps, errs[6] = meter.Int64Counter("safegen.client.journal.steps", metric.WithUnit("{step}"),
		metric.WithDescription("Journal records asked for, by step and success."))
	m.pending, errs[7] = meter.Int64UpDownCounter("safegen.client.journal.pending", metric.WithUnit("{intent}"),
		metric.WithDescription("Journaled intents begun and not yet completed."))
	m.spent, errs[8] = meter.Float64Gauge("safegen.client.credits.spent", metric.WithUnit("{credit}"),
		metric.WithDescription("Credits the client has spent."))
	m.reserved, errs[9] = meter.Float64Gauge("safegen.client.credits.reserved", metric.WithUnit("{credit}"),
		metric.WithDescription("Credits reserved by calls in flight."))
	m.limit, errs[10] = meter.Float64Gauge("safegen.client.credits.limit", metric.WithUnit("{credit}"),
		metric.WithDescription("The client's spend limit (0: none)."))
	return errors.Join(errs[:]...)
}

// setKey names one metric attribute set.
type setKey struct {
	kind    setKind
	a, b, c string
	n       int
	status  int
	flag    bool
}

type setKind uint8

const (
	kindBase         setKind = iota // the Observer's own attributes only
	kindCall                        // a: operation, b: outcome, c: error.type
	kindCallDuration                // a: operation, b: outcome
	kindAttempt                     // a: operation, b: cause, flag: retry
	kindRetryWait                   // a: operation, b: cause
	kindRequest                     // a: method, b: server.address, n: server.port, status, c: error.type
	kindJournal                     // a: step, flag: ok
)

// maxSets bounds the attribute sets; past it, requests are no longer told
// apart by server (the one value that comes from outside: a download's host).
const maxSets = 1000

// measure is one attribute set, as the options that record with it.
type measure struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// set returns the options recording with k's attribute set, made the first
// time (so a measurement allocates nothing). Every value in a key comes
// from a fixed set (see labels.go), so there are few.
func (o *Observer) set(k setKey) measure {
	o.mu.RLock()
	s, ok := o.sets[k]
	n := len(o.sets)
	o.mu.RUnlock()
	if ok {
		return s
	}
	if n >= maxSets && k.kind == kindRequest && k.b != "" {
		// Downloads from very many hosts: stop telling them apart.
		k.b, k.n = "", 0
		return o.set(k)
	}
	attrs := append([]attribute.KeyValue(nil), o.base...)
	switch k.kind {
	case kindCall:
		attrs = append(attrs, AttrOperation.String(k.a), AttrOutcome.String(k.b))
		if k.c != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(k.c))
		}
	case kindCallDuration:
		attrs = append(attrs, AttrOperation.String(k.a), AttrOutcome.String(k.b))
	case kindAttempt:
		attrs = append(attrs, AttrOperation.String(k.a), AttrCause.String(k.b), AttrRetry.Bool(k.flag))
	case kindRetryWait:
		attrs = append(attrs, AttrOperation.String(k.a), AttrCause.String(k.b))
	case kindRequest:
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(k.a))
		if k.b != "" {
			attrs = append(attrs, semconv.ServerAddress(k.b), semconv.ServerPort(k.n))
		}
		if k.status != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(k.status))
		}
		if k.c != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(k.c))
		}
	case kindJournal:
		attrs = append(attrs, AttrJournalStep.String(k.a), AttrJournalOK.Bool(k.flag))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(attrs...))
	s = measure{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
	o.mu.Lock()
	o.sets[k] = s
	o.mu.Unlock()
	return s
}
