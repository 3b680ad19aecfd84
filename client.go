package safegen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"

	"github.com/hashicorp/go-retryablehttp"
)

// Version is the SDK's version, sent in the default User-Agent.
const Version = "0.1.0"

var defaultUserAgent = "safegen-go/" + Version + " (" + runtime.Version() + ")"

// AttemptHeader carries the attempt number (1, 2, …) on every request, so
// server logs can tell a retry from a new call.
const AttemptHeader = "X-Safegen-Attempt"

type slogLevel = slog.Level

const (
	levelDebug = slog.LevelDebug
	levelWarn  = slog.LevelWarn
)

// Client calls a Generation API. Every billable call gets one idempotency key
// before its first attempt, reused on every retry; see the package doc for
// the promise and its limits. A Client is immutable after NewClient and safe
// for concurrent use by multiple goroutines.
type Client struct {
	// Generations is the generations endpoint group.
	Generations *GenerationsService

	apiKey  string
	s       settings
	root    string            // the base URL, as a string
	urls    map[string]string // root + path for the typed methods' paths
	watch   attemptWatch      // bounds attempts by WithAttemptTimeout (attempt_timeout.go)
	windows attemptWindows    // the same, for callers whose context cannot end
	fixed   http.Header       // headers every request carries; values shared, never mutated
	hc      *http.Client      // over the shared transport, wrapped
	base    http.RoundTripper // the transport Close releases
	budget  *retryBudget
	pacer   *pacer      // nil without WithRateLimit
	slots   inFlight    // nil without WithMaxInFlight
	spend   *spendGuard // nil without WithSpendLimit
	// waiters holds the Waits in progress and recent events, for Notify.
	waiters *waiters
}

// NewClient returns a Client for the API key. WithBaseURL is required. The
// options are validated here: a bad one returns an error, never a panic.
func NewClient(apiKey string, opts ...Option) (*Client, error) {
	if err := validateAPIKey(apiKey); err != nil {
		return nil, err
	}
	s := defaultSettings()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if s.baseURL == nil {
		return nil, errors.New("safegen: no base URL: pass WithBaseURL")
	}
	if s.baseURL.Scheme == "http" && !s.insecureHTTP && !isLoopback(s.baseURL.Hostname()) {
		return nil, fmt.Errorf("safegen: refusing to send the API key over plain http to %s; use https or WithInsecureHTTP", s.baseURL.Host)
	}
	c := &Client{apiKey: apiKey, s: s, budget: newRetryBudget(s.budgetTokens), pacer: newPacer(&s), waiters: newWaiters(), spend: newSpendGuard(&s)}
	if s.maxInFlight > 0 {
		c.slots = make(inFlight, s.maxInFlight)
	}
	var hc http.Client
	if s.httpClient != nil {
		hc = *s.httpClient
	}
	c.base = hc.Transport
	if c.base == nil {
		if s.httpClient != nil {
			c.base = http.DefaultTransport
		} else {
			c.base = http.DefaultTransport.(*http.Transport).Clone()
		}
	}
	// The wrapper hides CloseIdleConnections: retryablehttp calls it after
	// every failed call, which would empty the pool all calls share.
	hc.Transport = &transport{base: c.base}
	hc.Timeout = 0
	hc.CheckRedirect = c.checkRedirect
	c.hc = &hc
	c.root = s.baseURL.String()
	c.urls = make(map[string]string, len(fixedPaths))
	for _, p := range fixedPaths {
		c.urls[p] = c.root + p
	}
	c.fixed = http.Header{"Accept": {"application/json"}, "User-Agent": {s.userAgent}, AttemptHeader: {"1"}}
	if s.dialect.usesAPIKeyHeader() {
		c.fixed["X-Api-Key"] = []string{apiKey}
	} else {
		c.fixed["Authorization"] = []string{"Bearer " + apiKey}
	}
	c.Generations = &GenerationsService{c: c}
	return c, nil
}

// Close releases the idle connections of the Client's own transport. Calls
// in flight are not interrupted. A transport given with WithHTTPClient is
// left alone.
func (c *Client) Close() error {
	if c.s.httpClient == nil {
		if t, ok := c.base.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
	return nil
}

func validateAPIKey(k string) error {
	if k == "" {
		return errors.New("safegen: empty API key")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return errors.New("safegen: API key holds a space, control or non-ASCII character")
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkRedirect follows at most five redirects, and only on the API's own
// host: a credential never travels to another host.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("safegen: stopped after 5 redirects")
	}
	if !strings.EqualFold(req.URL.Host, c.s.baseURL.Host) || req.URL.Scheme != c.s.baseURL.Scheme {
		return http.ErrUseLastResponse
	}
	return nil
}

// ResponseMeta describes how a call went.
type ResponseMeta struct {
	// StatusCode is the final HTTP status.
	StatusCode int
	// RequestID is the server's X-Request-Id (or the body's request_id).
	RequestID string
	// IdempotencyKey is the key sent on every attempt ("" for safe calls).
	IdempotencyKey string
	// Attempts is how many attempts the call made (0 when the answer came
	// from the journal).
	Attempts int
	// Replayed reports that the server answered from its idempotency store
	// (Idempotent-Replayed: true), or the journal held the outcome.
	Replayed bool
	// FromJournal reports that the answer is the outcome the journal
	// recorded for this intent; nothing was sent.
	FromJournal bool
}

// request is one logical call as the pipeline sees it.
type request struct {
	op     string // the operation, for the Observer (CallInfo.Operation)
	method string
	path   string // path and query, from the API root
	body   []byte
	// params: a create's parameters as the caller gave them, so that the
	// spend guard prices them without decoding body again; nil for a call
	// made from bytes (Client.Do, Resume).
	params *GenerationCreateParams
	// keyed: the call is not safe, so it carries an idempotency key and
	// goes through the journal.
	keyed bool
	// resume: an intent already journaled (Resume); Begin is skipped.
	resume *Intent
	// job: the whole job (Run) this call starts, recorded with its intent.
	job *Job
	// journaled: the intent as the journal holds it after Begin (with its
	// job's progress when it was begun before); set by prepareKey.
	journaled *Intent
}

// response is the final answer of a call.
type response struct {
	status int
	header http.Header
	body   []byte
	meta   ResponseMeta
	// intent is the journaled intent of a keyed call (nil without a
	// journal).
	intent *Intent
}

// callSettings returns the settings of one call: the Client's, or a copy
// with the call's options applied.
func (c *Client) callSettings(opts []Option) (*settings, error) {
	if len(opts) == 0 {
		return &c.s, nil
	}
	s := c.s
	s.perCall = true
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// send is the one pipeline every call goes through: key, journal, attempts,
// typed errors, journal outcome.
func (c *Client) send(ctx context.Context, r request, opts []Option) (resp *response, err error) {
	if ctx == nil {
		return nil, errors.New("safegen: nil context")
	}
	s, err := c.callSettings(opts)
	if err != nil {
		return nil, err
	}
	if s.meta != nil {
		defer func() {
			if resp != nil {
				*s.meta = resp.meta
			}
		}()
	}
	// Price a billable call before taking a slot: the estimate is a call
	// of its own.
	price := 0.0
	guarded := c.spend != nil && r.keyed && !(r.resume != nil && r.resume.Outcome != nil)
	if guarded {
		if price, err = c.spend.price(ctx, c, s, r); err != nil {
			return nil, err
		}
	}
	if err := c.slots.acquire(ctx); err != nil {
		return nil, &RetryError{Method: r.method, Path: r.path, Reason: "context done while waiting for a slot (WithMaxInFlight)", Err: err}
	}
	defer c.slots.release()
	key := ""
	if r.keyed {
		key, r, err = c.prepareKey(ctx, s, r)
		if err != nil {
			return nil, err
		}
		if r.journaled != nil {
			defer func() {
				if resp != nil {
					resp.intent = r.journaled
				}
			}()
		}
		if r.resume != nil && r.resume.Outcome != nil {
			resp, err := c.fromOutcome(r, *r.resume.Outcome)
			if c.spend != nil && resp != nil {
				// Settling a recorded outcome again is harmless and
				// releases a reservation a crash left behind.
				var apiErr *APIError
				errors.As(err, &apiErr)
				c.spend.settle(ctx, s, key, resp, apiErr, 0)
			}
			return resp, err
		}
		if guarded {
			if err := c.spend.reserve(ctx, r, key, price); err != nil {
				return nil, err
			}
		}
	} else if s.intentID != "" || s.idempotencyKey != "" {
		return nil, fmt.Errorf("safegen: %s %s is a safe call: it takes no idempotency key or intent id", r.method, r.path)
	}

	st := &callState{c: c, s: s, method: r.method, path: r.path, key: key}
	st.cc = callCtx{Context: ctx, st: st}
	st.ctx = &st.cc
	req, err := retryablehttp.NewRequestWithContext(st.ctx, r.method, c.url(r.path), r.body)
	if err != nil {
		return nil, fmt.Errorf("safegen: %s %s: %w", r.method, r.path, err)
	}
	c.setHeaders(req.Request, s, r, key)
	st.op = r.op
	req.SetResponseHandler(readBody)

	hresp, derr := st.initRetryClient().Do(req)
	st.flushPending() // a no-op unless retryablehttp skipped its second CheckRetry
	if hresp != nil {
		hresp.Body.Close()
	}
	meta := ResponseMeta{StatusCode: st.status, IdempotencyKey: key, Attempts: st.attempts}
	if derr != nil && !(errors.Is(derr, errStop) && st.status != 0) {
		ferr := st.failure(derr)
		level := levelWarn
		if ctx.Err() != nil {
			level = levelDebug
		}
		s.logger.Log(ctx, level, "safegen: call failed", "method", r.method, "path", r.path,
			"attempts", st.attempts, "idempotency_key", key, "error", ferr.Error())
		st.out = response{meta: meta}
		return &st.out, ferr
	}
	meta.RequestID = st.header.Get("X-Request-Id")
	meta.Replayed = replayed(st.header)
	st.out = response{status: st.status, header: st.header, body: st.body, meta: meta}
	out := &st.out
	if st.status >= 200 && st.status < 300 {
		n := st.spent
		if st.attempts == 1 {
			n = noRetryRefund
		}
		tokens, added := c.budget.refund(n)
		c.budgetChanged(ctx, tokens, added)
	}
	apiErr := st.apiError(out)
	// Settle the spend before the journal records the outcome: a crash
	// between the two then leaves the intent pending (Resume replays and
	// settles it again, harmlessly), never a reservation held for good.
	if guarded && definitive(st.status, codeOf(apiErr)) {
		c.spend.settle(ctx, s, key, out, apiErr, price)
	}
	if r.keyed && c.s.journal != nil && definitive(st.status, codeOf(apiErr)) {
		c.complete(ctx, s, r.journaled.ID, key, out)
	}
	if apiErr != nil {
		// Retries that ran out or were cut short are worth a warning; a
		// definitive refusal is the caller's to handle.
		level := levelDebug
		if apiErr.retryable() || apiErr.stopped != nil {
			level = levelWarn
		}
		s.logger.Log(ctx, level, "safegen: call failed", "method", r.method, "path", r.path, "status", st.status,
			"code", apiErr.Code, "attempts", st.attempts, "idempotency_key", key)
		return out, apiErr
	}
	return out, nil
}

func codeOf(e *APIError) string {
	if e == nil {
		return ""
	}
	return e.Code
}

// apiError returns the typed error for a non-2xx final answer, nil for a 2xx.
func (st *callState) apiError(out *response) *APIError {
	if out.status >= 200 && out.status < 300 {
		return nil
	}
	e := newAPIError(st.method, st.path, out.status, out.header, out.body)
	st.c.redact(e)
	e.IdempotencyKey = st.key
	e.Attempts = st.attempts
	e.RetryAfter = st.retryAfter
	e.stopped = st.stopped
	if out.status >= 300 && out.status < 400 {
		e.Message = "redirect to " + clean(out.header.Get("Location"), 100) + " not followed"
	}
	return e
}

// failure builds the error of a call that has no final answer to show.
func (st *callState) failure(err error) error {
	re := &RetryError{Method: st.method, Path: st.path, IdempotencyKey: st.key, Attempts: st.attempts, Err: err}
	switch {
	case errors.Is(err, errStop):
		re.Err, re.stopped = st.lastErr, st.stopped
		re.Reason = "transport failure, not retried: " + strings.TrimPrefix(st.stopped.Error(), "safegen: ")
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && st.ctx.Err() != nil:
		re.Reason = "context done"
		if st.status >= 400 {
			re.Reason += " while waiting to retry after " + strconv.Itoa(st.status)
		}
	case errors.Is(err, ErrResponseTooLarge):
		re.Reason = "response not read"
	default:
		re.Reason = "transport failure"
	}
	if re.Err == nil {
		re.Err = err
	}
	return re
}

// redact removes the Client's API key from what a server said back in an
// error (some echo the credential they refused), so neither Error() nor a
// log line nor the kept body carries it.
func (c *Client) redact(e *APIError) {
	k := c.apiKey
	for _, f := range []*string{&e.Message, &e.Type, &e.Code, &e.RequestID} {
		if strings.Contains(*f, k) {
			*f = strings.ReplaceAll(*f, k, redacted)
		}
	}
	if bytes.Contains(e.Body, []byte(k)) {
		e.Body = bytes.ReplaceAll(e.Body, []byte(k), []byte(redacted))
	}
}

// redacted stands in for a credential a server echoed.
const redacted = "[REDACTED]"

// readBody reads the final response's body inside the retry loop, so a
// body cut mid-way is retried like any transport failure. A success body
// whose declared length is over the limit is refused before a byte of it is
// read; a known length sizes the buffer once.
func (st *callState) readBody(resp *http.Response) error {
	defer resp.Body.Close()
	limit := st.s.maxRespBytes
	if resp.StatusCode >= 300 {
		limit = maxErrorBody
	} else if resp.ContentLength > limit {
		return fmt.Errorf("%w: Content-Length %d over the limit of %d bytes", ErrResponseTooLarge, resp.ContentLength, limit)
	}
	var b []byte
	var err error
	if n := resp.ContentLength; n >= 0 && n <= limit {
		b = make([]byte, n) // the declared length, read in one buffer
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	if err != nil {
		return fmt.Errorf("reading response body: %w", err)
	}
	if int64(len(b)) > limit {
		if resp.StatusCode >= 300 {
			b = b[:limit]
		} else {
			return fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, limit)
		}
	}
	st.body = b
	return nil
}

func (c *Client) setHeaders(req *http.Request, s *settings, r request, key string) {
	h := req.Header // the empty map http.NewRequest made
	for k, v := range c.fixed {
		h[k] = v
	}
	for k, v := range s.header { // the Client's headers, then the call's
		h[k] = v
	}
	if s.userAgent != c.s.userAgent {
		h["User-Agent"] = []string{s.userAgent}
	}
	if r.body != nil {
		h["Content-Type"] = jsonContentType
	}
	if key != "" {
		if c.s.quoteKey {
			key = strconv.Quote(key)
		}
		h["Idempotency-Key"] = []string{key}
	}
	req.Header = h
}

var jsonContentType = []string{"application/json"}

// replayed reports whether the server says it answered from its idempotency
// store. Vendors spell the header Idempotent-Replayed or idempotency-replayed
// (both canonicalized by net/http to the keys below).
func replayed(h http.Header) bool {
	for _, name := range [...]string{"Idempotent-Replayed", "Idempotency-Replayed"} {
		if v := h[name]; len(v) > 0 && strings.EqualFold(strings.TrimSpace(v[0]), "true") {
			return true
		}
	}
	return false
}

// transport counts attempts, numbers them in a header, bounds each one with
// the attempt timeout and tells the Observer. It wraps the shared
// RoundTripper, and hands it a request it cannot send twice (see resend.go).
type transport struct{ base http.RoundTripper }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	if st == nil {
		return t.base.RoundTrip(req)
	}
	st.attempts++
	st.url = req.URL
	ctx, h := st.attemptStart(req.Context(), attemptHeader(req.Header, st.attempts), req.Header, req.URL)
	if err := st.c.pacer.wait(ctx); err != nil {
		return nil, err
	}
	if st.s.attemptTO <= 0 {
		return st.sent(t.base.RoundTrip(onWire(req, ctx, h)))
	}
	if ctx.Done() == nil {
		// A context that cannot end: the attempt joins a window.
		win := st.c.windows.join(st.s.attemptTO)
		wctx := &st.wctx
		if st.wctx.win != nil { // a later attempt: the first one's may still be referred to
			wctx = new(windowCtx)
		}
		*wctx = windowCtx{win: win, caller: ctx}
		resp, err := st.sent(t.base.RoundTrip(onWire(req, wctx, h)))
		if err != nil {
			return nil, timedOut(win.Err() != nil, err)
		}
		st.abody = attemptBody{ReadCloser: resp.Body, st: st, win: win}
		resp.Body = &st.abody
		return resp, nil
	}
	actx, watched := st.c.watch.bound(ctx, &st.bound, st.s.attemptTO)
	resp, err := st.sent(t.base.RoundTrip(onWire(req, actx, h)))
	if !watched {
		return resp, err
	}
	if err != nil {
		st.c.watch.end(&st.bound)
		return nil, timedOut(st.bound.expired.Load(), err)
	}
	st.abody = attemptBody{ReadCloser: resp.Body, st: st}
	resp.Body = &st.abody
	return resp, nil
}

// sent notes the status of a redirect, which net/http follows without
// asking the retry loop.
func (st *callState) sent(resp *http.Response, err error) (*http.Response, error) {
	if resp != nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		st.hop = resp.StatusCode
	}
	return resp, err
}

// attemptHeader returns the header map of attempt n: nil for the first,
// which sends the request's own (it already says 1); a copy numbered n
// otherwise.
func attemptHeader(h http.Header, n int) http.Header {
	if n == 1 {
		return nil
	}
	h = h.Clone()
	h[AttemptHeader] = []string{strconv.Itoa(n)}
	return h
}

// Do calls any endpoint through the same pipeline as the typed methods.
// path is relative to the base URL ("/v1/marketplace/listings?limit=5").
// in is the request body: nil for none, []byte or json.RawMessage sent as
// is, an io.Reader read once, anything else encoded as JSON. out receives the
// response: nil to discard it, a *[]byte for the raw bytes, anything else
// decoded from JSON. Non-safe methods (POST, PUT, PATCH, DELETE and any
// other) get an idempotency key, retries with the same key and bytes, and the
// journal; GET, HEAD and OPTIONS never carry a key.
func (c *Client) Do(ctx context.Context, method, path string, in, out any, opts ...RequestOption) error {
	if method == "" || strings.IndexFunc(method, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
		return fmt.Errorf("%w: method %q must be upper-case letters", ErrInvalidRequest, clean(method, 20))
	}
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") || strings.ContainsAny(path, " \r\n#") {
		return fmt.Errorf("%w: path %q must start with one / and hold no space or fragment", ErrInvalidRequest, clean(path, 100))
	}
	body, err := encodeBody(in)
	if err != nil {
		return err
	}
	keyed := !(method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions)
	_, err = c.call(ctx, request{op: OpDo, method: method, path: path, body: body, keyed: keyed}, opts,
		func(_ context.Context, resp *response) error { return decodeOut(resp, method, out) })
	return err
}

// decodeOut stores a Do call's answer in out.
func decodeOut(resp *response, method string, out any) error {
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = resp.body
		return nil
	}
	if len(resp.body) == 0 && (resp.status == http.StatusNoContent || method == http.MethodHead) {
		return nil
	}
	return decodeBody(resp, out)
}

// maxRequestBody bounds a request body read from an io.Reader.
const maxRequestBody = 32 << 20

func encodeBody(in any) ([]byte, error) {
	switch v := in.(type) {
	case nil:
		return nil, nil
	case []byte:
		return v, nil
	case json.RawMessage:
		return v, nil
	case io.Reader:
		b, err := io.ReadAll(io.LimitReader(v, maxRequestBody+1))
		if err != nil {
			return nil, fmt.Errorf("safegen: reading request body: %w", err)
		}
		if len(b) > maxRequestBody {
			return nil, fmt.Errorf("%w: request body over %d bytes", ErrInvalidRequest, maxRequestBody)
		}
		return b, nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding request body: %v", ErrInvalidRequest, err)
	}
	return b, nil
}

// fixedPaths are the typed methods' fixed paths, whose URLs a Client builds
// once instead of on every call.
var fixedPaths = [...]string{"/v1/generations", "/v1/generations/estimate", "/v1/account"}

// url is the absolute URL of path.
func (c *Client) url(path string) string {
	if u, ok := c.urls[path]; ok {
		return u
	}
	return c.root + path
}
