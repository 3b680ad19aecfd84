package safegen

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Observer sees what a Client does, for traces and metrics: every logical
// call from start to end, every attempt (every request put on the wire) of
// it, the journal's steps, and the Client's retry budget and spend. Give one
// to NewClient with WithObserver; the module
// github.com/safegen/safegen-go/otel implements it on OpenTelemetry. A
// Client without one pays a nil check per hook and nothing else.
//
// For one call the methods run in this order, on the goroutine making the
// call: CallStart, then AttemptStart and AttemptEnd for each attempt, then
// CallEnd. Calls nest: Generations.Run is a call whose create, polls and
// download are calls inside it, and Generations.Wait holds its polls.
// CallStart returns the context the call runs under (its attempts and inner
// calls start from it) and AttemptStart the context of one request, so a
// tracing Observer parents its spans through them; CallEnd and AttemptEnd
// get those contexts back. AttemptStart may add headers to the request (trace
// context) through AttemptRequest.Header.
//
// Every attempt started is ended exactly once, and every call started is
// ended. An attempt that fails before its request exists (a download's
// request that cannot be built) is ended without a start, with the call's
// context: an Observer should end only what it started. The events carry no API key, webhook secret or request body (the
// idempotency key and intent id are in them: they name the call, and are no
// secret). Methods must be quick, must not block, must be safe for
// concurrent use, and must not keep the events' Err past the call.
//
// Embed NopObserver in an implementation: methods added to Observer later
// then compile as no-ops instead of breaking it.
type Observer interface {
	// CallStart is called as a logical call begins. The context it returns
	// (ctx itself, or one derived from it) is the one the call runs under.
	CallStart(ctx context.Context, call CallInfo) context.Context
	// CallEnd is called once the call's result is known, with the context
	// CallStart returned.
	CallEnd(ctx context.Context, res CallResult)
	// AttemptStart is called before each request of a call is sent. The
	// context it returns is the request's.
	AttemptStart(ctx context.Context, req AttemptRequest) context.Context
	// AttemptEnd is called when the attempt's answer (or failure) is known
	// and the client has decided what follows, with the context
	// AttemptStart returned. It sees what the WithAttemptHook function sees.
	AttemptEnd(ctx context.Context, info AttemptInfo)
	// JournalStep is called after the Client asked its journal to record
	// something (see JournalEvent).
	JournalStep(ctx context.Context, ev JournalEvent)
	// BudgetChange is called when the Client's retry budget (WithRetryBudget)
	// gains or loses tokens.
	BudgetChange(ctx context.Context, ev BudgetEvent)
	// SpendChange is called when the Client's spend (credits spent or
	// reserved under its spend limit) changes.
	SpendChange(ctx context.Context, ev SpendEvent)
}

// NopObserver is an Observer that does nothing. Embed it in an Observer so
// the methods it does not need, and methods added later, are no-ops.
type NopObserver struct{}

// CallStart returns ctx.
func (NopObserver) CallStart(ctx context.Context, _ CallInfo) context.Context { return ctx }

// CallEnd does nothing.
func (NopObserver) CallEnd(context.Context, CallResult) {}

// AttemptStart returns ctx.
func (NopObserver) AttemptStart(ctx context.Context, _ AttemptRequest) context.Context { return ctx }

// AttemptEnd does nothing.
func (NopObserver) AttemptEnd(context.Context, AttemptInfo) {}

// JournalStep does nothing.
func (NopObserver) JournalStep(context.Context, JournalEvent) {}

// BudgetChange does nothing.
func (NopObserver) BudgetChange(context.Context, BudgetEvent) {}

// SpendChange does nothing.
func (NopObserver) SpendChange(context.Context, SpendEvent) {}

var _ Observer = NopObserver{}

// The operations a CallInfo names: a fixed set, fit for a metric label.
const (
	OpCreate   = "generations.create"
	OpGet      = "generations.get"
	OpCancel   = "generations.cancel"
	OpEstimate = "generations.estimate"
	OpWait     = "generations.wait"
	OpDownload = "generations.download"
	OpRun      = "generations.run"
	OpAccount  = "account.get"
	OpResume   = "resume"
	OpDo       = "do"
)

// CallInfo describes a logical call as it starts.
type CallInfo struct {
	// Operation is one of the Op constants: OpCreate, OpGet, …, OpDo for
	// Client.Do. A call Resume re-sends is named after what it is (OpCreate
	// for a create, OpRun for a whole job, OpDo otherwise).
	Operation string
	// Method and Path are the request line, the path without its query
	// ("POST", "/v1/generations"). For a download, Path is the output URL
	// without its query (which holds the signature). Both are empty for a
	// call made of other calls (OpWait, OpRun, OpResume).
	Method, Path string
	// IntentID is the call's WithIntentID, if any.
	IntentID string
	// IdempotencyKey is the key the caller gave (WithIdempotencyKey); the
	// key the call used is in CallResult.
	IdempotencyKey string
}

// CallResult describes a logical call once it has ended.
type CallResult struct {
	CallInfo
	// StatusCode is the final HTTP status, 0 without one.
	StatusCode int
	// RequestID is the server's request id for the final answer.
	RequestID string
	// Attempts is how many requests the call put on the wire, every
	// re-send counted (0 when the journal answered). A call made of other
	// calls (OpWait, OpRun, OpResume) reports no attempts or status of its
	// own: its inner calls do.
	Attempts int
	// Replayed reports that the server (or the journal) answered from its
	// idempotency store; FromJournal that the journal did, sending nothing.
	Replayed, FromJournal bool
	// Duration is how long the call took.
	Duration time.Duration
	// Err is the error the call returned, nil on success.
	Err error
	// ErrorType classifies Err in a few fixed words, "" on success: the
	// final HTTP status ("429", "503") for an answer the call failed with,
	// else one of "transport", "timeout", "canceled",
	// "retry_budget_exhausted", "retry_after_too_long", "invalid_request",
	// "idempotency_key_reuse", "intent_expired", "malformed_response",
	// "response_too_large", "generation_failed", "output_corrupt", "other".
	ErrorType string
}

// AttemptRequest describes one request about to be sent.
type AttemptRequest struct {
	// Operation is the call's (see CallInfo).
	Operation string
	// Method is the HTTP method.
	Method string
	// ServerAddress and ServerPort are the host and port it goes to.
	ServerAddress string
	ServerPort    int
	// IdempotencyKey is the call's key ("" for safe calls).
	IdempotencyKey string
	// Attempt counts from 1 within the call.
	Attempt int
	// Header adds headers to this request, such as trace context. It is
	// the zero HeaderCarrier (which drops what is set) when the request is
	// already on its way: a re-send net/http makes on its own.
	Header HeaderCarrier

	url *url.URL
}

// URL returns the request's URL without its query or fragment (a
// download's query is its signature). It is built on each call: ask only
// when it is needed.
func (r AttemptRequest) URL() string {
	if r.url == nil {
		return ""
	}
	return redact(r.url)
}

// HeaderCarrier adds headers to one attempt's request. It holds only the
// headers set through it (never the request's own, so never a credential),
// and refuses the headers the client owns: credentials, the idempotency
// key, the attempt number, Host, Content-Length, Content-Type and
// Transfer-Encoding. It implements OpenTelemetry's
// propagation.TextMapCarrier, so a propagator can inject into it directly.
type HeaderCarrier struct{ h *http.Header }

// Set sets a header, unless the client owns it.
func (c HeaderCarrier) Set(key, value string) {
	k := http.CanonicalHeaderKey(key)
	if c.h == nil || ownedHeader(k) {
		return
	}
	if *c.h == nil {
		*c.h = make(http.Header, 2)
	}
	(*c.h)[k] = []string{value}
}

// Get returns the value set for a header.
func (c HeaderCarrier) Get(key string) string {
	if c.h == nil {
		return ""
	}
	if v := (*c.h)[http.CanonicalHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Keys returns the names of the headers set.
func (c HeaderCarrier) Keys() []string {
	if c.h == nil {
		return nil
	}
	keys := make([]string, 0, len(*c.h))
	for k := range *c.h {
		keys = append(keys, k)
	}
	return keys
}

// ownedHeader reports a header only the client sets (canonical name).
func ownedHeader(k string) bool {
	switch k {
	case "Authorization", "X-Api-Key", "Proxy-Authorization", "Cookie",
		"Idempotency-Key", AttemptHeader, "Host", "Content-Length", "Content-Type", "Transfer-Encoding":
		return true
	}
	return false
}

// Journal steps a JournalEvent names.
const (
	JournalBegin    = "begin"
	JournalComplete = "complete"
	JournalExpire   = "expire"
	JournalAdvance  = "advance"
)

// JournalEvent is one thing the Client asked its journal to record.
type JournalEvent struct {
	// Step is JournalBegin (an intent recorded before its first byte is
	// sent, or found already recorded under its intent id), JournalComplete
	// (its definitive outcome recorded), JournalExpire (Resume gave it up,
	// unsent, past the key window) or JournalAdvance (a whole job's step
	// recorded).
	Step string
	// IntentID and IdempotencyKey name the intent.
	IntentID, IdempotencyKey string
	// New reports, for JournalBegin, that the intent was recorded by this
	// call rather than found.
	New bool
	// Job is the step JournalAdvance recorded.
	Job JobStep
	// Err is the journal's error; the call goes on (or, for JournalBegin,
	// fails before sending anything).
	Err error
}

// BudgetEvent is the Client's retry budget after a change.
type BudgetEvent struct {
	// Tokens is what the bucket holds now, Max its size.
	Tokens, Max int
	// Change is the tokens taken (negative) or given back (positive).
	Change int
}

// SpendEvent is the Client's spend after a change, as Client.Spend reports
// it.
type SpendEvent struct {
	// Limit is the spend limit (WithSpendLimit), 0 for none.
	Limit float64
	// Spent is the credits charged so far; Reserved the credits held by
	// calls in flight.
	Spent, Reserved float64
}
