package safegen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// This file is where the pipeline tells the Client's Observer what happens.
// Every hook starts with a nil check, so a Client without an Observer pays
// nothing more.

// callObs is one logical call being observed; the zero callObs (no
// Observer) ignores every method.
type callObs struct {
	o     Observer
	ctx   context.Context // the one CallStart returned
	start time.Time
	info  CallInfo
	// composed: a call made of other calls (wait, run, resume), which
	// reports no attempts or status of its own.
	composed bool
}

// call sends r as one observed call: the Observer sees it begin and end,
// and decode (if not nil) turns the answer into the caller's result under
// the call's context, its failure counting as the call's.
func (c *Client) call(ctx context.Context, r request, opts []Option, decode func(context.Context, *response) error) (*response, error) {
	ctx, ob := c.startCall(ctx, r.op, r.method, r.path, opts)
	resp, err := c.send(ctx, r, opts)
	if err == nil && decode != nil {
		err = decode(ctx, resp)
	}
	ob.end(resp, err)
	return resp, err
}

// startCall tells the Observer a call begins and returns the context the
// call runs under. The intent id and the caller's key come from opts.
func (c *Client) startCall(ctx context.Context, op, method, path string, opts []Option) (context.Context, callObs) {
	if c.s.observer == nil || ctx == nil {
		return ctx, callObs{}
	}
	info := CallInfo{Operation: op, Method: method, Path: withoutQuery(path)}
	if len(opts) > 0 {
		if s, err := c.callSettings(opts); err == nil {
			info.IntentID, info.IdempotencyKey = s.intentID, s.idempotencyKey
		}
	}
	return c.observeCall(ctx, info)
}

// observeCall tells the Observer a call described by info begins.
func (c *Client) observeCall(ctx context.Context, info CallInfo) (context.Context, callObs) {
	o := c.s.observer
	if o == nil || ctx == nil {
		return ctx, callObs{}
	}
	ob := callObs{o: o, start: time.Now(), info: info, composed: info.Method == ""}
	ob.ctx = o.CallStart(ctx, info)
	if ob.ctx == nil {
		ob.ctx = ctx
	}
	return ob.ctx, ob
}

// end reports a call: resp is what its (first) send returned (nil when it
// failed before sending), err what the call returns. A call made of other
// calls takes only the key from resp.
func (ob *callObs) end(resp *response, err error) {
	if ob.o == nil {
		return
	}
	var m ResponseMeta
	switch {
	case resp == nil:
	case ob.composed:
		m.IdempotencyKey = resp.meta.IdempotencyKey
	default:
		m = resp.meta
	}
	ob.finish(m, err)
}

// finish reports the call's end from its meta and error.
func (ob *callObs) finish(m ResponseMeta, err error) {
	if ob.o == nil {
		return
	}
	r := CallResult{CallInfo: ob.info, StatusCode: m.StatusCode, RequestID: m.RequestID, Attempts: m.Attempts,
		Replayed: m.Replayed, FromJournal: m.FromJournal, Duration: time.Since(ob.start), Err: err}
	if m.IdempotencyKey != "" {
		r.IdempotencyKey = m.IdempotencyKey
	}
	if err != nil {
		r.ErrorType = errorType(err)
		if !ob.composed {
			fromError(&r, err)
		}
	}
	ob.o.CallEnd(ob.ctx, r)
}

// fromError fills in what the error knows and the meta did not.
func fromError(r *CallResult, err error) {
	var apiErr *APIError
	var re *RetryError
	switch {
	case errors.As(err, &apiErr):
		r.StatusCode = apiErr.StatusCode
		r.Attempts = max(r.Attempts, apiErr.Attempts)
		if r.RequestID == "" {
			r.RequestID = apiErr.RequestID
		}
		if r.IdempotencyKey == "" {
			r.IdempotencyKey = apiErr.IdempotencyKey
		}
	case errors.As(err, &re):
		r.Attempts = max(r.Attempts, re.Attempts)
		if r.IdempotencyKey == "" {
			r.IdempotencyKey = re.IdempotencyKey
		}
	}
}

// attemptStart tells the Observer an attempt to u begins. h is the
// attempt's header map, nil while it shares the call's (the first
// attempt), or when the request is already on its way (a re-send net/http
// makes). It returns the attempt's context (the Observer's, or ctx) and
// its header map, a copy of the call's if the Observer added headers to
// the first attempt.
func (st *callState) attemptStart(ctx context.Context, h, shared http.Header, u *url.URL) (context.Context, http.Header) {
	o := st.c.s.observer
	if o == nil {
		return ctx, h
	}
	if st.actx != nil {
		// The last attempt was never reported: a redirect that net/http
		// followed. It ends here.
		st.attemptEnd(&AttemptInfo{Operation: st.op, Method: st.method, Path: st.path, IdempotencyKey: st.key,
			Attempt: st.attempts - 1, StatusCode: st.hop, Cause: "redirect", Reason: "redirect followed"})
	}
	req := AttemptRequest{Operation: st.op, Method: st.method, IdempotencyKey: st.key, Attempt: st.attempts, url: u}
	if h != nil || shared != nil {
		clear(st.added)
		req.Header = HeaderCarrier{&st.added}
	}
	if u != nil {
		req.ServerAddress, req.ServerPort = u.Hostname(), port(u)
	}
	actx := o.AttemptStart(ctx, req)
	if actx == nil {
		actx = ctx
	}
	st.actx = actx
	if len(st.added) > 0 {
		if h == nil {
			h = shared.Clone()
		}
		for k, v := range st.added {
			h[k] = v
		}
	}
	return actx, h
}

// attemptEnd tells the Observer how the open attempt ended.
func (st *callState) attemptEnd(info *AttemptInfo) {
	o := st.c.s.observer
	if o == nil {
		return
	}
	ctx := st.actx
	if ctx == nil {
		// Ended before it was sent (a download the Client's clock found
		// expired): reported under the call.
		ctx = st.ctx
	}
	st.actx = nil
	o.AttemptEnd(ctx, *info)
}

// port is u's port, or the scheme's.
func port(u *url.URL) int {
	if p := u.Port(); p != "" {
		n, _ := strconv.Atoi(p)
		return n
	}
	if u.Scheme == "http" {
		return 80
	}
	return 443
}

// journaled tells the Observer about a journal step.
func (c *Client) journaled(ctx context.Context, ev JournalEvent) {
	if c.s.observer != nil {
		c.s.observer.JournalStep(ctx, ev)
	}
}

// budgetChanged tells the Observer the retry budget moved by change tokens
// to tokens.
func (c *Client) budgetChanged(ctx context.Context, tokens, change int) {
	if c.s.observer != nil && change != 0 && c.budget.max > 0 {
		c.s.observer.BudgetChange(ctx, BudgetEvent{Tokens: tokens, Max: c.budget.max, Change: change})
	}
}

// withoutQuery is path without its query.
func withoutQuery(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[:i]
	}
	return path
}

// opFor names the operation of a journaled intent Resume re-sends.
func opFor(in Intent) string {
	switch {
	case in.Job != nil:
		return OpRun
	case in.Method == http.MethodPost && withoutQuery(in.Path) == "/v1/generations":
		return OpCreate
	}
	return OpDo
}

// errorType classifies an error the Client returned in a few fixed words
// (CallResult.ErrorType).
func errorType(err error) string {
	if err == nil {
		return ""
	}
	var apiErr *APIError
	var re *RetryError
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.Is(err, ErrRetryBudgetExhausted):
		return "retry_budget_exhausted"
	case errors.Is(err, ErrRetryAfterTooLong):
		return "retry_after_too_long"
	case errors.Is(err, ErrGenerationFailed):
		return "generation_failed"
	case errors.Is(err, ErrSpendLimit):
		return "spend_limit"
	case errors.Is(err, ErrOutputCorrupt):
		return "output_corrupt"
	case errors.As(err, &apiErr):
		return strconv.Itoa(apiErr.StatusCode)
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrIdleTimeout), isTimeout(err):
		return "timeout"
	case errors.Is(err, ErrIdempotencyKeyReuse):
		return "idempotency_key_reuse"
	case errors.Is(err, ErrIntentExpired):
		return "intent_expired"
	case errors.Is(err, ErrMalformedResponse):
		return "malformed_response"
	case errors.Is(err, ErrResponseTooLarge):
		return "response_too_large"
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrInvalidIdempotencyKey):
		return "invalid_request"
	case errors.As(err, &re), errors.As(err, &ue), errors.As(err, &ne):
		return "transport"
	}
	return "other"
}
