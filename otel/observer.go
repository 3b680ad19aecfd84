// Package safegenotel reports what a safegen.Client does to OpenTelemetry.
//
//	obs, err := safegenotel.New() // the global TracerProvider, MeterProvider and propagator
//	if err != nil {
//		return err
//	}
//	c, err := safegen.NewClient(apiKey, safegen.WithBaseURL(url), safegen.WithObserver(obs))
//
// Traces: one span per logical call, named after its operation
// ("safegen.generations.create", "safegen.generations.run", …), holding the
// intent id, the idempotency key, the attempts, whether the answer was a
// replay, and the outcome; calls made of calls nest (a run holds its create,
// its wait with the polls, and its download). Under each call, one HTTP
// client span per attempt, after the OpenTelemetry HTTP semantic
// conventions: http.request.method, server.address, server.port, url.full
// (without the query, which holds a download's signature),
// http.response.status_code, error.type and http.request.resend_count (0 on
// the first attempt), plus the cause and the client's decision (retry,
// wait, the Retry-After the server asked for). The attempt's trace context
// is injected into its request (traceparent, with the default W3C
// propagator), so the server's spans join the trace. Journal steps are
// events on the call's span.
//
// Metrics (attributes in brackets, every one from a small fixed set):
//
//	safegen.client.calls               counter    {safegen.operation, safegen.outcome, error.type}
//	safegen.client.call.duration       histogram  s {safegen.operation, safegen.outcome}
//	safegen.client.attempts            counter    {safegen.operation, safegen.attempt.cause, safegen.retry}
//	safegen.client.retry.wait          histogram  s {safegen.operation, safegen.attempt.cause}
//	http.client.request.duration       histogram  s {http.request.method, server.address, server.port, http.response.status_code, error.type}
//	safegen.client.retry_budget.tokens gauge      tokens left in the Client's retry budget
//	safegen.client.journal.steps       counter    {safegen.journal.step, safegen.journal.ok}
//	safegen.client.journal.pending     updown     intents begun and not yet completed (summed over the processes sharing a journal)
//	safegen.client.credits.spent       gauge      credits spent (and .reserved, .limit) as Client.Spend reports them
//
// No API key, webhook secret or request body is ever in an attribute, and
// no key, id or URL is a metric attribute. The gauges describe one Client:
// give each Client its own Observer, told apart with WithAttributes.
package safegenotel

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/safegen/safegen-go"
)

// ScopeName is the instrumentation scope of the spans and metrics.
const ScopeName = "github.com/safegen/safegen-go/otel"

// Observer is a safegen.Observer that records spans and metrics. It is safe
// for concurrent use. Make one with New.
type Observer struct {
	safegen.NopObserver

	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	m      instruments
	base   []attribute.KeyValue

	mu   sync.RWMutex
	sets map[setKey]measure // metric attribute sets, made once each
}

var _ safegen.Observer = (*Observer)(nil)

// Option configures an Observer.
type Option func(*config)

type config struct {
	tp    trace.TracerProvider
	mp    metric.MeterProvider
	prop  propagation.TextMapPropagator
	attrs []attribute.KeyValue
}

// WithTracerProvider sets where spans go (default: otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go (default: otel.GetMeterProvider()).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithPropagator sets how trace context is injected into each attempt's
// request (default: otel.GetTextMapPropagator()).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

// WithAttributes adds attributes to every metric this Observer records,
// such as a name for its Client. Keep them few and fixed: they multiply
// the metric series.
func WithAttributes(kv ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, kv...) }
}

// New returns an Observer. It fails only if the MeterProvider refuses an
// instrument.
func New(opts ...Option) (*Observer, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = otel.GetTextMapPropagator()
	}
	o := &Observer{
		tracer: c.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(safegen.Version), trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   c.prop,
		base:   c.attrs,
		sets:   make(map[setKey]measure),
	}
	meter := c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(safegen.Version), metric.WithSchemaURL(semconv.SchemaURL))
	if err := o.m.init(meter); err != nil {
		return nil, err
	}
	return o, nil
}

// Attribute keys of the spans and metrics, beyond the semantic
// conventions'.
const (
	AttrOperation      = attribute.Key("safegen.operation")
	AttrOutcome        = attribute.Key("safegen.outcome")
	AttrIntentID       = attribute.Key("safegen.intent_id")
	AttrIdempotencyKey = attribute.Key("safegen.idempotency_key")
	AttrAttempts       = attribute.Key("safegen.attempts")
	AttrReplayed       = attribute.Key("safegen.replayed")
	AttrFromJournal    = attribute.Key("safegen.from_journal")
	AttrRequestID      = attribute.Key("safegen.request_id")
	AttrErrorCode      = attribute.Key("safegen.error.code")
	AttrCause          = attribute.Key("safegen.attempt.cause")
	AttrReason         = attribute.Key("safegen.attempt.reason")
	AttrRetry          = attribute.Key("safegen.retry")
	AttrRetryWait      = attribute.Key("safegen.retry.wait")
	AttrRetryAfter     = attribute.Key("safegen.retry_after")
	AttrJournalStep    = attribute.Key("safegen.journal.step")
	AttrJournalOK      = attribute.Key("safegen.journal.ok")
	AttrJournalNew     = attribute.Key("safegen.journal.new")
	AttrJobStep        = attribute.Key("safegen.job.step")
)

// CallStart starts the call's span.
func (o *Observer) CallStart(ctx context.Context, c safegen.CallInfo) context.Context {
	ctx, span := o.tracer.Start(ctx, callSpanName(c.Operation), internalSpan...)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 5)
		attrs = append(attrs, AttrOperation.String(c.Operation))
		if c.Method != "" {
			attrs = append(attrs, semconv.HTTPRequestMethodKey.String(c.Method))
		}
		if c.IntentID != "" {
			attrs = append(attrs, AttrIntentID.String(c.IntentID))
		}
		if c.IdempotencyKey != "" {
			attrs = append(attrs, AttrIdempotencyKey.String(c.IdempotencyKey))
		}
		span.SetAttributes(attrs...)
	}
	return ctx
}

// CallEnd ends the call's span and counts the call.
func (o *Observer) CallEnd(ctx context.Context, r safegen.CallResult) {
	op, outcome, errType := operation(r.Operation), outcomeOf(r.Err), errorType(r.ErrorType)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 9)
		attrs = append(attrs, AttrOutcome.String(outcome), AttrAttempts.Int(r.Attempts), AttrReplayed.Bool(r.Replayed))
		if r.FromJournal {
			attrs = append(attrs, AttrFromJournal.Bool(true))
		}
		if r.IdempotencyKey != "" {
			attrs = append(attrs, AttrIdempotencyKey.String(r.IdempotencyKey))
		}
		if r.StatusCode != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(r.StatusCode))
		}
		if r.RequestID != "" {
			attrs = append(attrs, AttrRequestID.String(r.RequestID))
		}
		if r.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
			if code := apiCode(r.Err); code != "" {
				attrs = append(attrs, AttrErrorCode.String(code))
			}
			// The error's text may quote the server, which may quote the
			// request: the status says only what kind of error it was.
			span.SetStatus(codes.Error, errType)
		}
		span.SetAttributes(attrs...)
	}
	span.End()
	if o.m.calls.Enabled(ctx) {
		o.m.calls.Add(ctx, 1, o.set(setKey{kind: kindCall, a: op, b: outcome, c: errType}).add...)
	}
	if o.m.callDuration.Enabled(ctx) {
		o.m.callDuration.Record(ctx, r.Duration.Seconds(), o.set(setKey{kind: kindCallDuration, a: op, b: outcome}).record...)
	}
}

// The span start options, made once.
var (
	internalSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	clientSpan   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
)

// attemptKey finds an attempt's state in its context.
type attemptKey struct{}

// attemptCtx is the context of one attempt: its span, and what its
// metrics need at the end.
type attemptCtx struct {
	context.Context
	span    trace.Span
	start   time.Time
	method  string
	address string
	port    int
}

// Value answers attemptKey with the attempt itself.
func (a *attemptCtx) Value(key any) any {
	if _, ok := key.(attemptKey); ok {
		return a
	}
	return a.Context.Value(key)
}

// AttemptStart starts the attempt's HTTP client span and injects its
// trace context into the request.
func (o *Observer) AttemptStart(ctx context.Context, r safegen.AttemptRequest) context.Context {
	ctx, span := o.tracer.Start(ctx, attemptSpanName(r.Operation, r.Method), clientSpan...)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 7)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRequestResendCount(r.Attempt-1))
		if u := r.URL(); u != "" {
			attrs = append(attrs, semconv.URLFull(u), semconv.ServerAddress(r.ServerAddress), semconv.ServerPort(r.ServerPort))
		}
		if t := urlTemplate(r.Operation); t != "" {
			attrs = append(attrs, semconv.URLTemplate(t))
		}
		if r.IdempotencyKey != "" {
			attrs = append(attrs, AttrIdempotencyKey.String(r.IdempotencyKey))
		}
		span.SetAttributes(attrs...)
	}
	o.prop.Inject(ctx, r.Header)
	return &attemptCtx{Context: ctx, span: span, start: time.Now(), method: r.Method, address: r.ServerAddress, port: r.ServerPort}
}

// AttemptEnd ends the attempt's span and counts the attempt.
func (o *Observer) AttemptEnd(ctx context.Context, info safegen.AttemptInfo) {
	op, cause := operation(info.Operation), attemptCause(info.Cause)
	errType := ""
	if info.Cause != "ok" && info.Cause != "redirect" {
		errType = cause
		if info.StatusCode >= 400 {
			errType = strconv.Itoa(info.StatusCode)
		}
	}
	a, _ := ctx.Value(attemptKey{}).(*attemptCtx)
	if a != nil {
		o.endAttemptSpan(a.span, info, errType)
		if o.m.requestDuration.Enabled(ctx) {
			o.m.requestDuration.Record(ctx, time.Since(a.start).Seconds(), o.set(setKey{
				kind: kindRequest, a: httpMethod(a.method), b: a.address, c: errType, n: a.port, status: statusCode(info.StatusCode)}).record...)
		}
	}
	if o.m.attempts.Enabled(ctx) {
		o.m.attempts.Add(ctx, 1, o.set(setKey{kind: kindAttempt, a: op, b: cause, flag: info.Retry}).add...)
	}
	if info.Retry && o.m.retryWait.Enabled(ctx) {
		o.m.retryWait.Record(ctx, info.Wait.Seconds(), o.set(setKey{kind: kindRetryWait, a: op, b: cause}).record...)
	}
}

func (o *Observer) endAttemptSpan(span trace.Span, info safegen.AttemptInfo, errType string) {
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 9)
		attrs = append(attrs, AttrCause.String(info.Cause), AttrRetry.Bool(info.Retry))
		if info.StatusCode != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(info.StatusCode))
		}
		if info.Reason != "" {
			attrs = append(attrs, AttrReason.String(info.Reason))
		}
		if info.Retry {
			attrs = append(attrs, AttrRetryWait.Float64(info.Wait.Seconds()))
		}
		if info.RetryAfter > 0 {
			attrs = append(attrs, AttrRetryAfter.Float64(info.RetryAfter.Seconds()))
		}
		if info.Replayed {
			attrs = append(attrs, AttrReplayed.Bool(true))
		}
		if info.Code != "" {
			attrs = append(attrs, AttrErrorCode.String(info.Code))
		}
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
			span.SetStatus(codes.Error, errType)
		}
		span.SetAttributes(attrs...)
	}
	span.End()
}

// JournalStep adds an event to the call's span and counts the step.
func (o *Observer) JournalStep(ctx context.Context, ev safegen.JournalEvent) {
	step := journalStep(ev.Step)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{AttrJournalOK.Bool(ev.Err == nil)}
		if ev.Step == safegen.JournalBegin {
			attrs = append(attrs, AttrJournalNew.Bool(ev.New))
		}
		if ev.Job != "" {
			attrs = append(attrs, AttrJobStep.String(string(ev.Job)))
		}
		span.AddEvent("safegen.journal."+step, trace.WithAttributes(attrs...))
	}
	o.m.journalSteps.Add(ctx, 1, o.set(setKey{kind: kindJournal, a: step, flag: ev.Err == nil}).add...)
	switch {
	case ev.Err != nil:
	case ev.Step == safegen.JournalBegin && ev.New:
		o.m.pending.Add(ctx, 1, o.set(setKey{kind: kindBase}).add...)
	case ev.Step == safegen.JournalComplete, ev.Step == safegen.JournalExpire:
		o.m.pending.Add(ctx, -1, o.set(setKey{kind: kindBase}).add...)
	}
}

// BudgetChange records the retry budget's tokens.
func (o *Observer) BudgetChange(ctx context.Context, ev safegen.BudgetEvent) {
	o.m.budget.Record(ctx, int64(ev.Tokens), o.set(setKey{kind: kindBase}).record...)
}

// SpendChange records the Client's spend.
func (o *Observer) SpendChange(ctx context.Context, ev safegen.SpendEvent) {
	opts := o.set(setKey{kind: kindBase}).record
	o.m.spent.Record(ctx, ev.Spent, opts...)
	o.m.reserved.Record(ctx, ev.Reserved, opts...)
	o.m.limit.Record(ctx, ev.Limit, opts...)
}
