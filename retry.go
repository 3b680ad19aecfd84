package safegen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/go-retryablehttp"
)

// AttemptInfo describes one attempt and what the client decided after it.
type AttemptInfo struct {
	// Operation names the call (see CallInfo).
	Operation      string
	Method, Path   string
	IdempotencyKey string
	// Attempt counts from 1.
	Attempt int
	// StatusCode is 0 when the attempt got no response.
	StatusCode int
	// RetryAfter is the wait the answer asked for (Retry-After and its
	// kin), 0 when it asked for none.
	RetryAfter time.Duration
	// Replayed reports that the answer came from the server's idempotency
	// store.
	Replayed bool
	// Code is the error code of a non-2xx answer.
	Code string
	// Err is the transport error, if any.
	Err error
	// Retry reports whether another attempt follows, after Wait.
	Retry bool
	Wait  time.Duration
	// Cause names what happened: "ok", "429", "503", "409 request_in_progress",
	// "transport", "timeout", …
	Cause string
	// Reason says why the client retried or stopped.
	Reason string
}

// errStop tells retryablehttp that CheckRetry stopped the call on purpose;
// the reason is in the call state.
var errStop = errors.New("safegen: retry stopped")

// errWaitPastDeadline is why a call stops when its next wait would outlive
// the context: it matches context.DeadlineExceeded.
var errWaitPastDeadline = fmt.Errorf("safegen: the next wait would pass the context deadline: %w", context.DeadlineExceeded)

// callState is one logical call's retry state, shared by the closures of its
// retryablehttp.Client. Attempts run one after another, so it needs no lock.
type callState struct {
	rc       retryablehttp.Client
	c        *Client
	s        *settings
	ctx      context.Context
	method   string
	path     string
	key      string
	op       string // the operation, for the attempt hook and the Observer
	attempts int
	// actx is the context the Observer gave the attempt in progress; nil
	// when there is no Observer or no attempt open.
	actx  context.Context
	url   *url.URL    // the attempt's URL
	hop   int         // the status of a redirect net/http followed
	added http.Header // the headers the Observer added to the attempt

	bo    *backoff.ExponentialBackOff // made on the first retry
	wait  time.Duration
	spent int // budget tokens spent by this call

	// decision memo: retryablehttp calls CheckRetry twice for one attempt
	// when a response handler runs.
	decided     int
	decision    bool
	decisionErr error
	// pending is a final decision not yet reported: it stands only once the
	// response handler has read the body (see checkRetry).
	pending    AttemptInfo
	hasPending bool

	status     int
	header     http.Header
	body       []byte
	retryAfter time.Duration
	stopped    error
	lastErr    error

	// Held here so that a call allocates none of them apart: the context
	// its requests carry, its attempt's watch and body, and its answer.
	cc    callCtx
	bound attemptBound
	wctx  windowCtx
	abody attemptBody
	out   response
}

type stateKey struct{}

// callCtx is the context a call's requests carry: the caller's, which also
// hands the hooks the call's state (stateOf). It replaces a
// context.WithValue, one allocation per call.
type callCtx struct {
	context.Context
	st *callState
}

func (c *callCtx) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return c.st
	}
	return c.Context.Value(key)
}

// stateOf returns the call state carried by a request's context.
func stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(stateKey{}).(*callState)
	return st
}

// initRetryClient sets up the call's own retryablehttp.Client, embedded in
// its state (a fresh one per call: it holds a sync.Once, so it is never
// copied from a configured one). Its hooks are plain functions that find the
// call's state in the request context, so a call allocates no closures.
func (st *callState) initRetryClient() *retryablehttp.Client {
	st.rc = retryablehttp.Client{
		HTTPClient:   st.c.hc,
		Logger:       nil, // retryablehttp would log every URL to stderr
		RetryMax:     st.s.maxRetries,
		CheckRetry:   checkRetry,
		Backoff:      zeroBackoff,
		ErrorHandler: errorHandler,
		PrepareRetry: prepareRetry,
	}
	return &st.rc
}

func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	return stateOf(ctx).checkRetry(ctx, resp, err)
}

func prepareRetry(req *http.Request) error { return stateOf(req.Context()).prepareRetry(req) }

func readBody(resp *http.Response) error { return stateOf(resp.Request.Context()).readBody(resp) }

// checkRetry is the only place a retry is decided.
func (st *callState) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if err == nil && st.decided == st.attempts && st.attempts > 0 {
		// The second call: the body was read, so the decision stands.
		st.flushPending()
		return st.decision, st.decisionErr
	}
	if resp != nil {
		// A panic in the caller's attempt hook must not leak the response
		// (and with it a connection and two goroutines).
		defer func() {
			if r := recover(); r != nil {
				resp.Body.Close()
				panic(r)
			}
		}()
	}
	retry, derr := st.decide(ctx, resp, err)
	st.decided, st.decision, st.decisionErr = st.attempts, retry, derr
	return retry, derr
}

func (st *callState) decide(ctx context.Context, resp *http.Response, err error) (bool, error) {
	info := AttemptInfo{Operation: st.op, Method: st.method, Path: st.path, IdempotencyKey: st.key, Attempt: st.attempts, Err: err}
	defer func() {
		if err == nil && !info.Retry {
			// retryablehttp now runs the response handler, which reads the
			// body; if that fails, CheckRetry is called again with the
			// error and this attempt is reported as that failure instead.
			st.pending, st.hasPending = info, true
			return
		}
		st.hasPending = false
		st.report(&info)
	}()
	if cerr := ctx.Err(); cerr != nil {
		info.Cause, info.Reason = "canceled", "context done"
		st.lastErr = cerr
		return false, cerr
	}
	if err != nil {
		st.lastErr = err
		st.status = 0
		info.Cause = "transport"
		if isTimeout(err) {
			info.Cause = "timeout"
		}
		if errors.Is(err, ErrResponseTooLarge) {
			info.Reason = "response too large"
			return false, err
		}
		if ok, perr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, nil, err); !ok {
			info.Reason = "not retryable"
			if perr == nil {
				perr = err
			}
			return false, perr
		}
	} else {
		st.lastErr = nil
		st.status, st.header = resp.StatusCode, resp.Header
		st.c.pacer.observe(resp.StatusCode, resp.Header)
		info.StatusCode = resp.StatusCode
		info.Replayed = replayed(resp.Header)
		st.retryAfter = 0
		if resp.StatusCode < 400 {
			info.Cause, info.Reason = "ok", "done"
			return false, nil
		}
		st.body = readErrorBody(resp)
		_, code, _ := decodeErrorBody(resp.Header.Get("Content-Type"), st.body)
		info.Code = code
		info.Cause = strconv.Itoa(resp.StatusCode)
		if resp.StatusCode == http.StatusConflict && code != "" {
			info.Cause += " " + strings.ToLower(code)
		}
		ra, _ := retryAfter(resp.Header, resp.StatusCode, st.s.clock.Now())
		st.retryAfter, info.RetryAfter = ra, ra
		probe := APIError{StatusCode: resp.StatusCode, Code: code}
		if !probe.retryable() {
			info.Reason = "not retryable"
			return false, nil
		}
		if ra > st.s.maxRetryAfter {
			info.Reason = "Retry-After " + ra.String() + " exceeds the bound " + st.s.maxRetryAfter.String()
			st.stopped = ErrRetryAfterTooLong
			return false, errStop
		}
	}
	if st.attempts > st.s.maxRetries {
		info.Reason = "retries exhausted"
		return false, nil
	}
	wait, reason, stop := st.planRetry(ctx, info.Cause == "timeout")
	if stop != nil {
		info.Reason = reason
		st.stopped = stop
		return false, errStop
	}
	st.wait = wait
	info.Retry, info.Wait, info.Reason = true, wait, reason
	return true, nil
}

// planRetry returns the wait before another attempt, once the policy has
// found the last one worth retrying: a full-jitter backoff, or the server's
// Retry-After (st.retryAfter) when longer. It returns a sentinel instead when
// that wait would pass the context deadline (errWaitPastDeadline) or the
// Client's retry budget cannot pay for the retry (ErrRetryBudgetExhausted).
// The request pipeline (decide) and Download both wait through it, so the
// two share one backoff, one Retry-After rule and one budget.
func (st *callState) planRetry(ctx context.Context, timeout bool) (wait time.Duration, reason string, stop error) {
	wait = st.nextBackoff()
	if st.retryAfter > wait {
		wait = st.retryAfter
	}
	if deadline, ok := ctx.Deadline(); ok && st.s.clock.Now().Add(wait).After(deadline) {
		return 0, "next wait " + wait.String() + " would pass the context deadline", errWaitPastDeadline
	}
	cost := retryCost
	if timeout {
		cost = timeoutRetryCost
	}
	left, ok := st.c.budget.take(cost)
	if !ok {
		return 0, "client-side retry budget exhausted", ErrRetryBudgetExhausted
	}
	st.c.budgetChanged(ctx, left, -cost)
	st.spent += cost
	return wait, "retrying", nil
}

// flushPending reports the decision held back until the body was read.
func (st *callState) flushPending() {
	if st.hasPending {
		st.hasPending = false
		st.report(&st.pending)
	}
}

func (st *callState) report(info *AttemptInfo) {
	if st.s.attemptHook != nil {
		st.s.attemptHook(*info)
	}
	st.attemptEnd(info)
	l := st.s.logger
	if !l.Enabled(st.ctx, levelFor(*info)) {
		return
	}
	attrs := []any{"method", info.Method, "path", info.Path, "attempt", info.Attempt, "cause", info.Cause, "reason", info.Reason}
	if info.IdempotencyKey != "" {
		attrs = append(attrs, "idempotency_key", info.IdempotencyKey)
	}
	if info.StatusCode != 0 {
		attrs = append(attrs, "status", info.StatusCode)
	}
	if info.Code != "" {
		attrs = append(attrs, "code", info.Code)
	}
	if info.Err != nil {
		attrs = append(attrs, "error", info.Err.Error())
	}
	if info.Retry {
		attrs = append(attrs, "wait", info.Wait)
		l.Debug("safegen: retrying", attrs...)
		return
	}
	l.Log(st.ctx, levelFor(*info), "safegen: attempt done", attrs...)
}

// zeroBackoff is retryablehttp's Backoff: the wait CheckRetry chose runs in
// prepareRetry instead, on the Client's clock, so it can be cancelled and
// faked. It never returns backoff.Stop (-1), which would retry at once.
func zeroBackoff(_, _ time.Duration, _ int, _ *http.Response) time.Duration {
	return 0
}

// prepareRetry sleeps the wait decided for this retry; a cancelled context
// ends the call at once.
func (st *callState) prepareRetry(req *http.Request) error {
	if err := st.s.clock.Sleep(st.ctx, st.wait); err != nil {
		st.lastErr = err
		return err
	}
	return nil
}

// errorHandler keeps retryablehttp from replacing the last answer with
// "giving up after N attempts": the pipeline builds the typed error from
// the call state.
func errorHandler(resp *http.Response, err error, _ int) (*http.Response, error) {
	if resp != nil {
		resp.Body.Close()
	}
	if err == nil {
		err = errStop
	}
	return nil, err
}

// nextBackoff draws a full-jitter wait below the exponential ceiling that
// backoff/v4 computes.
func (st *callState) nextBackoff() time.Duration {
	if st.bo == nil {
		st.bo = &backoff.ExponentialBackOff{
			InitialInterval:     st.s.backoffInit,
			RandomizationFactor: 0,
			Multiplier:          st.s.backoffMult,
			MaxInterval:         st.s.backoffMax,
			MaxElapsedTime:      0, // never backoff.Stop
			Stop:                backoff.Stop,
			Clock:               backoff.SystemClock,
		}
		st.bo.Reset()
	}
	ceiling := st.bo.NextBackOff()
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// readErrorBody reads at most 64 KiB of an error body and puts the bytes
// back, so the response stays readable.
func readErrorBody(resp *http.Response) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	// Drain a little more so the connection can be reused, then close.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

func levelFor(info AttemptInfo) slogLevel {
	if !info.Retry && info.Cause != "ok" && info.Reason != "not retryable" {
		return levelWarn
	}
	return levelDebug
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// maxRetryAfterSeconds keeps a parsed wait inside time.Duration.
const maxRetryAfterSeconds = math.MaxInt64 / int64(time.Second)

// retryAfter returns the wait the server asked for: Retry-After-Ms, then
// Retry-After as delta-seconds or any HTTP date, then for a 429 without them
// RateLimit-Reset (seconds) or X-RateLimit-Reset (seconds, or a Unix time).
// Negative, NaN, garbage and overflowing values are ignored.
func retryAfter(h http.Header, status int, now time.Time) (time.Duration, bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && ms >= 0 && ms < float64(maxRetryAfterSeconds)*1000 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if d, ok := parseSeconds(v); ok {
			return d, true
		}
		if t, err := http.ParseTime(v); err == nil {
			d := t.Sub(now)
			if d < 0 {
				d = 0
			}
			return d, true
		}
	}
	if status != http.StatusTooManyRequests {
		return 0, false
	}
	if v := strings.TrimSpace(h.Get("RateLimit-Reset")); v != "" {
		if d, ok := parseSeconds(v); ok {
			return d, true
		}
	}
	if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" {
		if d, ok := parseSeconds(v); ok {
			// rimp sends a Unix time; anything past 2001-09-09 is one.
			if d >= 1e9*time.Second {
				d = time.Unix(int64(d/time.Second), 0).Sub(now)
				if d < 0 {
					d = 0
				}
			}
			return d, true
		}
	}
	return 0, false
}

// parseSeconds parses a non-negative decimal number of seconds (an integer as
// RFC 9110 says, or a decimal as some servers send).
func parseSeconds(v string) (time.Duration, bool) {
	if v == "" || v[0] == '-' || v[0] == '+' {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n > maxRetryAfterSeconds {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f >= float64(maxRetryAfterSeconds) {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// Retry budget costs, as in the AWS SDKs' standard retry mode.
const (
	retryCost        = 5
	timeoutRetryCost = 10
	noRetryRefund    = 1
)

// retryBudget is a token bucket shared by all calls of one Client: a retry
// takes tokens, a success gives some back. It caps how much an outage can
// amplify the Client's load.
type retryBudget struct {
	mu     sync.Mutex
	max    int
	tokens int
}

func newRetryBudget(max int) *retryBudget {
	return &retryBudget{max: max, tokens: max}
}

// take spends n tokens and returns the tokens left; false when the bucket
// holds fewer than n. A nil or zero-size budget always allows, and spends
// nothing (n is then reported as 0 by the caller's change).
func (b *retryBudget) take(n int) (left int, ok bool) {
	if b == nil || b.max == 0 {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < n {
		return b.tokens, false
	}
	b.tokens -= n
	return b.tokens, true
}

// refund gives n tokens back, up to the bucket's size, and returns the
// tokens it holds and how many it took back.
func (b *retryBudget) refund(n int) (tokens, added int) {
	if b == nil || b.max == 0 || n <= 0 {
		return 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	added = min(b.max, b.tokens+n) - b.tokens
	b.tokens += added
	return b.tokens, added
}

// Tokens returns the tokens left (for tests and metrics).
func (b *retryBudget) Tokens() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens
}
