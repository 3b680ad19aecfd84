package safegentest

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Scope is a permission an API key can hold.
type Scope string

// The scopes. A key made with no scopes holds all of them.
const (
	// ScopeRead allows the GET endpoints and the estimate.
	ScopeRead Scope = "read"
	// ScopeWrite allows creating generations.
	ScopeWrite Scope = "write"
)

const (
	pathGenerations = "/v1/generations"
	pathEstimate    = "/v1/generations/estimate"
	pathAccount     = "/v1/account"
)

// Server is a fake Generation API running on an httptest.Server. It is safe
// for concurrent use by multiple goroutines.
type Server struct {
	*httptest.Server

	// APIKey is a ready key with every scope.
	APIKey string
	// WebhookSecret signs webhook deliveries; see WithWebhookSecret.
	WebhookSecret string

	cfg        config
	webhookKey []byte

	stop      context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	whClient  *http.Client
	whTrans   *http.Transport

	mu         sync.Mutex
	closed     bool
	accounts   map[string]*account
	idem       map[string]*idemEntry
	gens       map[string]*generation
	genOrder   []*generation
	charges    []Charge
	refunds    []Refund
	outputKey  []byte // signs output URLs
	requests   []RecordedRequest
	faults     []Fault
	rng        *rand.Rand
	deliveries []WebhookDelivery
}

// account is one API key: its scopes, balance and rate-limit state.
type account struct {
	scopes      map[Scope]bool // nil: all
	credits     int64
	windowStart time.Time
	count       int
	inflight    int
}

// response is a fully built answer, written at once or dropped.
type response struct {
	status   int
	header   http.Header
	body     []byte
	replayed bool
}

// NewServer starts a Server and closes it when t's test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := Start(opts...)
	t.Cleanup(s.Close)
	return s
}

// Start starts a Server on a random loopback port. The caller must call
// Close, which also stops the server's background work (webhook deliveries
// and timers).
func Start(opts ...Option) *Server {
	s := newServer(opts)
	s.Server = httptest.NewServer(s)
	s.startBackground()
	return s
}

// Listen starts a Server on addr (such as "127.0.0.1:8080"), for a fake API
// that runs on its own, as `safegen fake-server` does. The caller must call
// Close.
func Listen(addr string, opts ...Option) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("safegentest: %w", err)
	}
	s := newServer(opts)
	s.Server = httptest.NewUnstartedServer(s)
	s.Server.Listener.Close()
	s.Server.Listener = l
	s.Server.Start()
	s.startBackground()
	return s, nil
}

func newServer(opts []Option) *Server {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	s := &Server{
		cfg:           cfg,
		WebhookSecret: cfg.webhookSecret,
		webhookKey:    webhookKeyBytes(cfg.webhookSecret),
		accounts:      make(map[string]*account),
		idem:          make(map[string]*idemEntry),
		gens:          make(map[string]*generation),
		outputKey:     []byte(randHex(32)),
	}
	if cfg.hasFaultRates {
		s.rng = rand.New(rand.NewPCG(uint64(cfg.faultSeed), uint64(cfg.faultSeed)^0x9e3779b97f4a7c15))
	}
	s.whTrans = &http.Transport{DisableKeepAlives: true}
	s.whClient = &http.Client{Timeout: 10 * time.Second, Transport: s.whTrans}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.APIKey = s.NewAPIKey()
	return s
}

func (s *Server) startBackground() {
	s.wg.Add(1)
	go s.tick()
}

// Close shuts the server down and waits for its background goroutines.
// It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.Server.Close()
		s.wg.Wait()
		s.whTrans.CloseIdleConnections()
	})
}

// tick finishes generations on the server clock and starts their webhooks.
func (s *Server) tick() {
	defer s.wg.Done()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop.Done():
			return
		case <-t.C:
			s.mu.Lock()
			s.dispatchWebhooksLocked()
			s.mu.Unlock()
		}
	}
}

// NewAPIKey creates an API key with its own account (starting balance from
// WithCredits) holding the given scopes, or every scope when none is given.
func (s *Server) NewAPIKey(scopes ...Scope) string {
	key := "sk_test_" + randHex(16)
	a := &account{credits: s.cfg.credits}
	if len(scopes) > 0 {
		a.scopes = make(map[Scope]bool)
		for _, sc := range scopes {
			a.scopes[sc] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[key] = a
	return key
}

// SetCredits sets the balance of apiKey's account. An unknown key is ignored.
func (s *Server) SetCredits(apiKey string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[apiKey]; a != nil {
		a.credits = n
	}
}

// Ledger returns a snapshot of every charge and refund made so far.
func (s *Server) Ledger() Ledger {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Ledger{Charges: append([]Charge(nil), s.charges...), Refunds: append([]Refund(nil), s.refunds...)}
}

// Requests returns every request the server saw, in arrival order,
// including those answered by an injected fault.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RecordedRequest, len(s.requests))
	for i, r := range s.requests {
		r.Header = r.Header.Clone()
		r.Body = append([]byte(nil), r.Body...)
		out[i] = r
	}
	return out
}

// ServeHTTP answers one request. It makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, tooLarge, readErr := readBody(r, s.cfg.maxBodyBytes)
	apiKey := s.apiKeyFrom(r)
	path := r.URL.Path
	class := classOther
	switch {
	case r.Method == http.MethodPost && path == pathGenerations:
		class = classBillable
	case strings.HasPrefix(path, pathOutputs) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		class = classDownload
	}

	s.mu.Lock()
	idx := len(s.requests)
	s.requests = append(s.requests, RecordedRequest{
		Method: r.Method, Path: path, Header: r.Header.Clone(), Body: body,
		IdempotencyKey: r.Header.Get("Idempotency-Key"), APIKey: apiKey,
		At: s.cfg.clock.Now(),
	})
	if readErr != nil {
		// The connection ended before the body did: there is no request to
		// run, and running the partial body would store its answer under
		// the key. Recorded with status 0, like a reset.
		s.mu.Unlock()
		hijackClose(w, false)
		return
	}
	fault := s.pickFault(r.Method, path, class)
	s.requests[idx].Fault = fault.Kind
	s.mu.Unlock()

	var resp *response
	switch fault.Kind {
	case FaultStatus:
		resp = statusFaultResponse(fault)
	case FaultRateLimit:
		resp = s.rateLimitFaultResponse(fault)
	case FaultReset:
		s.finish(idx, 0, false, 0)
		hijackClose(w, true)
		return
	case FaultLatency:
		s.sleep(r.Context(), fault.Latency)
	}
	if resp == nil && strings.HasPrefix(path, pathOutputs) {
		if fault.Kind == FaultDropAfterCommit {
			s.finish(idx, 0, false, 0)
			hijackClose(w, false)
			return
		}
		s.serveOutput(w, r, idx, fault)
		return
	}
	if resp == nil {
		resp = s.handle(r, body, tooLarge, apiKey)
	}
	if fault.Kind == FaultDropAfterCommit {
		s.finish(idx, 0, resp.replayed, 0)
		hijackClose(w, false)
		return
	}
	s.write(w, idx, resp)
}

// write sends a fully built answer and records its status.
func (s *Server) write(w http.ResponseWriter, idx int, resp *response) {
	s.finish(idx, resp.status, resp.replayed, int64(len(resp.body)))
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	h.Set("X-Request-Id", newID("req_"))
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

func (s *Server) finish(idx, status int, replayed bool, sent int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[idx].Status = status
	s.requests[idx].Replayed = replayed
	s.requests[idx].ResponseBytes = sent
}

// readBody reads at most max+1 bytes and reports whether the body was larger
// than max. A read error (the connection closed before Content-Length bytes
// arrived) is returned: the bytes read are not the request.
func readBody(r *http.Request, max int64) ([]byte, bool, error) {
	if r.Body == nil {
		return nil, false, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	return b, int64(len(b)) > max, err
}

// apiKeyFrom extracts the key the dialect's auth header carries.
func (s *Server) apiKeyFrom(r *http.Request) string {
	if s.cfg.dialect == DialectRealm {
		return strings.TrimSpace(r.Header.Get("X-API-Key"))
	}
	v := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	tok = strings.TrimSpace(tok)
	if strings.ContainsAny(tok, " \t") {
		return ""
	}
	return tok
}

// route names the endpoint for a path and the method it takes; "" when the
// path is unknown.
func route(path string) (name, method string) {
	if id, ok := cancelID(path); ok && id != "" && !strings.Contains(id, "/") {
		return "cancel", http.MethodPost
	}
	switch {
	case path == pathGenerations:
		return "create", http.MethodPost
	case path == pathEstimate:
		return "estimate", http.MethodPost
	case path == pathAccount:
		return "account", http.MethodGet
	case strings.HasPrefix(path, pathGenerations+"/"):
		id := strings.TrimPrefix(path, pathGenerations+"/")
		if id != "" && !strings.Contains(id, "/") {
			return "get", http.MethodGet
		}
	}
	return "", ""
}

// cancelID returns the id of a /v1/generations/{id}/cancel path.
func cancelID(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, pathGenerations+"/")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "/cancel")
}

// handle routes, authenticates, rate-limits and dispatches one request.
func (s *Server) handle(r *http.Request, body []byte, tooLarge bool, apiKey string) *response {
	name, method := route(r.URL.Path)
	if name == "" {
		return errorResponse(http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	}
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		resp := errorResponse(http.StatusMethodNotAllowed, "method_not_allowed",
			r.Method+" is not allowed on "+r.URL.Path)
		resp.header.Set("Allow", method)
		return resp
	}
	need := ScopeRead
	if name == "create" || name == "cancel" {
		need = ScopeWrite
	}

	s.mu.Lock()
	acct := s.accounts[apiKey]
	if acct == nil {
		s.mu.Unlock()
		return errorResponse(http.StatusUnauthorized, "invalid_api_key", "missing or unknown API key")
	}
	if acct.scopes != nil && !acct.scopes[need] {
		s.mu.Unlock()
		return errorResponse(http.StatusForbidden, "insufficient_scope", "this API key lacks the "+string(need)+" scope")
	}
	limited := s.admitLocked(acct)
	rateHeader := http.Header{}
	s.rateHeadersLocked(acct, rateHeader)
	s.mu.Unlock()
	if limited != nil {
		return limited
	}
	defer func() {
		s.mu.Lock()
		acct.inflight--
		s.mu.Unlock()
	}()

	var resp *response
	switch {
	case tooLarge:
		resp = errorResponse(http.StatusRequestEntityTooLarge, "invalid_request", "request body too large")
	case name == "create":
		resp = s.create(r, body, apiKey)
	case name == "estimate":
		resp = s.estimate(r, body)
	case name == "get":
		resp = s.get(strings.TrimPrefix(r.URL.Path, pathGenerations+"/"))
	case name == "cancel":
		id, _ := cancelID(r.URL.Path)
		resp = s.cancelGeneration(id, apiKey)
	case name == "account":
		s.mu.Lock()
		bal := acct.credits
		s.mu.Unlock()
		resp = jsonResponse(http.StatusOK, map[string]int64{"credits": bal})
	}
	for k, v := range rateHeader {
		resp.header[k] = v
	}
	return resp
}

// admitLocked counts a request against acct's limits, or returns the 429
// that refuses it.
func (s *Server) admitLocked(acct *account) *response {
	now := s.cfg.clock.Now()
	if pm := s.cfg.perMinute; pm > 0 {
		if acct.windowStart.IsZero() || !now.Before(acct.windowStart.Add(s.cfg.rateWindow)) {
			acct.windowStart, acct.count = now, 0
		}
		if acct.count >= pm {
			wait := max(ceilSeconds(acct.windowStart.Add(s.cfg.rateWindow).Sub(now)), 1)
			resp := errorResponse(http.StatusTooManyRequests, "rate_limit_exceeded",
				"more than "+strconv.Itoa(pm)+" requests in "+s.cfg.rateWindow.String())
			resp.header.Set("Retry-After", strconv.Itoa(wait))
			s.rateHeadersLocked(acct, resp.header)
			return resp
		}
	}
	if c := s.cfg.concurrent; c > 0 && acct.inflight >= c {
		resp := errorResponse(http.StatusTooManyRequests, "rate_limit_exceeded",
			"more than "+strconv.Itoa(c)+" concurrent requests")
		resp.header.Set("Retry-After", "1")
		if s.cfg.perMinute > 0 {
			s.rateHeadersLocked(acct, resp.header)
		} else {
			s.setRateHeaders(resp.header, c, 0, 1)
		}
		return resp
	}
	acct.count++
	acct.inflight++
	return nil
}

// rateHeadersLocked sets the RateLimit-* headers for acct's minute window.
func (s *Server) rateHeadersLocked(acct *account, h http.Header) {
	pm := s.cfg.perMinute
	if pm == 0 {
		return
	}
	reset := max(ceilSeconds(acct.windowStart.Add(s.cfg.rateWindow).Sub(s.cfg.clock.Now())), 0)
	s.setRateHeaders(h, pm, max(pm-acct.count, 0), reset)
}

func (s *Server) setRateHeaders(h http.Header, limit, remaining, reset int) {
	h.Set("RateLimit-Limit", strconv.Itoa(limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(reset))
	if s.cfg.dialect == DialectRimp {
		at := s.cfg.clock.Now().Add(time.Duration(reset) * time.Second).Unix()
		h.Set("X-RateLimit-Reset", strconv.FormatInt(at, 10))
	}
}

// ceilSeconds rounds d up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int {
	n := int((d + time.Second - 1) / time.Second)
	return max(n, 1)
}

// errorResponse builds the contract's error body.
func errorResponse(status int, code, message string) *response {
	type errBody struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	return jsonResponse(status, map[string]errBody{"error": {Type: errorType(status, code), Code: code, Message: message}})
}

func errorType(status int, code string) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusConflict:
		if code == "generation_terminal" {
			return "invalid_request_error"
		}
		return "idempotency_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

func jsonResponse(status int, v any) *response {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"type":"api_error","code":"internal_error","message":"encoding failed"}}`)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return &response{status: status, header: h, body: b}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

func newID(prefix string) string { return prefix + randHex(12) }
