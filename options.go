package safegen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Option configures a Client (in NewClient) or one call (as a trailing
// argument of any method). Options apply in order and the last one wins. A
// per-call option never changes the Client. Options marked "client only"
// return an error when given to a call.
type Option func(*settings) error

// RequestOption is an Option given to one call. It is the same type, so
// options such as WithMaxRetries work in both places.
type RequestOption = Option

// settings is everything an Option can set. The Client holds one; a call
// with options works on a copy.
type settings struct {
	perCall bool

	baseURL       *url.URL
	httpClient    *http.Client
	dialect       Dialect
	userAgent     string
	logger        *slog.Logger
	journal       KeyJournal
	clock         Clock
	attemptHook   func(AttemptInfo)
	observer      Observer
	insecureHTTP  bool
	quoteKey      bool
	budgetTokens  int
	keyWindow     time.Duration
	resumeMargin  time.Duration
	pollInterval  time.Duration
	pollMax       time.Duration
	maxRespBytes  int64
	attemptTO     time.Duration
	maxRetries    int
	backoffInit   time.Duration
	backoffMult   float64
	backoffMax    time.Duration
	maxRetryAfter time.Duration
	pacing        bool
	sharedQuota   bool
	paceRPS       float64
	paceBurst     int
	maxInFlight   int
	idleTimeout   time.Duration
	spendLimit    float64
	spendOn       bool

	// per call only
	idempotencyKey string
	intentID       string
	header         http.Header
	meta           *ResponseMeta
	progress       func(done, total int64)
	cost           float64
	costSet        bool
}

func defaultSettings() settings {
	return settings{
		dialect:       DialectDefault,
		userAgent:     defaultUserAgent,
		logger:        slog.New(slog.DiscardHandler),
		clock:         realClock{},
		budgetTokens:  500,
		keyWindow:     24 * time.Hour,
		resumeMargin:  time.Hour,
		pollInterval:  500 * time.Millisecond,
		pollMax:       5 * time.Second,
		maxRespBytes:  10 << 20,
		attemptTO:     60 * time.Second,
		maxRetries:    3,
		backoffInit:   500 * time.Millisecond,
		backoffMult:   2,
		backoffMax:    8 * time.Second,
		maxRetryAfter: 60 * time.Second,
		idleTimeout:   30 * time.Second,
	}
}

func clientOnly(s *settings, name string) error {
	if s.perCall {
		return fmt.Errorf("safegen: %s is a client option; pass it to NewClient", name)
	}
	return nil
}

// WithBaseURL sets the API's base URL, such as "https://api.example.com" or
// "https://host/prefix" (required; client only). Plain http is refused for
// any host but loopback unless WithInsecureHTTP is also given.
func WithBaseURL(raw string) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithBaseURL"); err != nil {
			return err
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("safegen: bad base URL: %w", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("safegen: bad base URL %q: scheme must be http or https", u.Redacted())
		}
		if u.Host == "" {
			return fmt.Errorf("safegen: bad base URL %q: no host", u.Redacted())
		}
		if u.User != nil {
			return errors.New("safegen: bad base URL: credentials in the URL are refused; pass the API key to NewClient")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("safegen: bad base URL %q: no query or fragment allowed", u.Redacted())
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = ""
		s.baseURL = u
		return nil
	}
}

// WithHTTPClient makes the Client send through a copy of hc: its Transport
// (http.DefaultTransport when nil) and Jar. Its Timeout is ignored: use the
// context for the whole call and WithAttemptTimeout for one attempt. Its
// CheckRedirect is replaced by the SDK's, which never follows a redirect to
// another host. Default: a transport of the Client's own (client only).
func WithHTTPClient(hc *http.Client) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithHTTPClient"); err != nil {
			return err
		}
		if hc == nil {
			return errors.New("safegen: WithHTTPClient(nil)")
		}
		cp := *hc
		s.httpClient = &cp
		return nil
	}
}

// WithMaxRetries sets how many times a call is retried after its first
// attempt (default 3; 0 disables retries; negative is an error).
func WithMaxRetries(n int) Option {
	return func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("safegen: WithMaxRetries(%d): must not be negative", n)
		}
		s.maxRetries = n
		return nil
	}
}

// WithBackoff sets the exponential backoff between retries: the first wait's
// ceiling, its growth factor and the largest ceiling. Each wait is drawn
// uniformly between zero and the ceiling ("full jitter"). Default 0.5 s, ×2,
// 8 s.
func WithBackoff(initial time.Duration, multiplier float64, max time.Duration) Option {
	return func(s *settings) error {
		if initial <= 0 || max < initial || !(multiplier >= 1) {
			return fmt.Errorf("safegen: WithBackoff(%v, %v, %v): want 0 < initial <= max and multiplier >= 1", initial, multiplier, max)
		}
		s.backoffInit, s.backoffMult, s.backoffMax = initial, multiplier, max
		return nil
	}
}

// WithMaxRetryAfter bounds the Retry-After the client will sleep through
// (default 60 s). A longer one ends the call at once with a 429 *APIError
// whose RetryAfter carries the wait (errors.Is ErrRetryAfterTooLong), so the
// caller can reschedule instead of blocking a worker.
func WithMaxRetryAfter(d time.Duration) Option {
	return func(s *settings) error {
		if d < 0 {
			return fmt.Errorf("safegen: WithMaxRetryAfter(%v): must not be negative", d)
		}
		s.maxRetryAfter = d
		return nil
	}
}

// WithAttemptTimeout bounds one attempt, body included (default 60 s; 0
// means no bound but the context's). A timed-out attempt is retried with the
// same key; the context still bounds the whole call. An attempt ends d after
// it started, or up to d/16 later when the call's context is one that cannot
// end (context.Background): such attempts share one timer per slice of
// time instead of one each.
func WithAttemptTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d < 0 {
			return fmt.Errorf("safegen: WithAttemptTimeout(%v): must not be negative", d)
		}
		s.attemptTO = d
		return nil
	}
}

// WithRetryBudget sets the size of the Client's retry token bucket (default
// 500; a retry costs 5 tokens, a retry after a timeout 10, a first-try
// success refunds 1). When it is empty, calls are not retried and fail with
// ErrRetryBudgetExhausted: in an outage the Client adds at most a trickle of
// load. 0 disables the budget (client only).
func WithRetryBudget(tokens int) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithRetryBudget"); err != nil {
			return err
		}
		if tokens < 0 {
			return fmt.Errorf("safegen: WithRetryBudget(%d): must not be negative", tokens)
		}
		s.budgetTokens = tokens
		return nil
	}
}

// WithJournal makes every billable call durable: its intent (key, method,
// path, exact bytes) is recorded before the first byte is sent, so the key
// survives a crash and Client.Resume can finish the call. Default: none
// (client only).
func WithJournal(j KeyJournal) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithJournal"); err != nil {
			return err
		}
		s.journal = j
		return nil
	}
}

// WithKeyWindow sets how long the server remembers an idempotency key and the
// margin Resume keeps from it: an intent older than window minus margin is
// reported expired, never re-sent (default 24 h and 1 h; client only).
func WithKeyWindow(window, margin time.Duration) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithKeyWindow"); err != nil {
			return err
		}
		if window <= 0 || margin < 0 || margin >= window {
			return fmt.Errorf("safegen: WithKeyWindow(%v, %v): want 0 <= margin < window", window, margin)
		}
		s.keyWindow, s.resumeMargin = window, margin
		return nil
	}
}

// WithLogger sends the SDK's log lines to l: each attempt and retry decision
// at Debug, an exhausted call at Warn. Keys and bodies' secrets are never
// logged. Default: silent.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		s.logger = l
		return nil
	}
}

// WithUserAgent sets the User-Agent header (default "safegen-go/<version>").
func WithUserAgent(ua string) Option {
	return func(s *settings) error {
		if ua == "" || strings.ContainsAny(ua, "\r\n") {
			return errors.New("safegen: WithUserAgent: empty or multi-line value")
		}
		s.userAgent = ua
		return nil
	}
}

// WithDialect selects the vendor's variant of the contract (default
// DialectDefault; client only).
func WithDialect(d Dialect) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithDialect"); err != nil {
			return err
		}
		if _, err := ParseDialect(string(d)); err != nil {
			return err
		}
		if d == "" {
			d = DialectDefault
		}
		s.dialect = d
		return nil
	}
}

// WithClock replaces the clock used for backoff waits, Retry-After dates,
// polling and journal timestamps (default: the real clock). Tests use it to
// run retries without sleeping (client only).
func WithClock(c Clock) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithClock"); err != nil {
			return err
		}
		if c == nil {
			return errors.New("safegen: WithClock(nil)")
		}
		s.clock = c
		return nil
	}
}

// WithAttemptHook calls fn after every attempt with what happened and what
// the client decided (default: none). fn runs on the calling goroutine and
// must be quick and safe for concurrent use.
func WithAttemptHook(fn func(AttemptInfo)) Option {
	return func(s *settings) error {
		s.attemptHook = fn
		return nil
	}
}

// WithObserver makes the Client report every call, every attempt, journal
// step, retry-budget and spend change to o, for traces and metrics (default:
// none, which costs nothing; client only). The module
// github.com/safegen/safegen-go/otel provides one on OpenTelemetry. o's
// methods run on the calling goroutines and must be quick and safe for
// concurrent use.
func WithObserver(o Observer) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithObserver"); err != nil {
			return err
		}
		s.observer = o
		return nil
	}
}

// WithInsecureHTTP allows plain http to hosts other than loopback, which
// sends the API key in clear text (default: refused; client only).
func WithInsecureHTTP() Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithInsecureHTTP"); err != nil {
			return err
		}
		s.insecureHTTP = true
		return nil
	}
}

// WithQuotedIdempotencyKey sends the key as an RFC 8941 string, quoted, as
// the IETF Idempotency-Key draft specifies (default: the bare key, as the
// vendors expect; client only).
func WithQuotedIdempotencyKey() Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithQuotedIdempotencyKey"); err != nil {
			return err
		}
		s.quoteKey = true
		return nil
	}
}

// WithPollInterval sets how Generations.Wait polls: the first interval and
// the largest, growing ×1.5 between them (default 0.5 s and 5 s). Each
// wait is drawn between 80 % and 100 % of the interval, so many waiters do
// not poll in step, and is never shorter than the server's poll hint
// (Retry-After on a generation not yet terminal, bounded by
// WithMaxRetryAfter).
func WithPollInterval(initial, max time.Duration) Option {
	return func(s *settings) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("safegen: WithPollInterval(%v, %v): want 0 < initial <= max", initial, max)
		}
		s.pollInterval, s.pollMax = initial, max
		return nil
	}
}

// WithMaxResponseBytes bounds a success body (default 10 MiB). Error bodies
// are always read to at most 64 KiB.
func WithMaxResponseBytes(n int64) Option {
	return func(s *settings) error {
		if n <= 0 {
			return fmt.Errorf("safegen: WithMaxResponseBytes(%d): must be positive", n)
		}
		s.maxRespBytes = n
		return nil
	}
}

// WithIdempotencyKey sends key instead of a fresh UUID v4 (per call only).
// The key must be 1 to 255 printable ASCII characters (200 for rimp). Use it
// to tie a call to an identifier of your own; one key must never be used for
// two different requests.
func WithIdempotencyKey(key string) Option {
	return func(s *settings) error {
		if !s.perCall {
			return errors.New("safegen: WithIdempotencyKey is a per-call option")
		}
		s.idempotencyKey = key
		return nil
	}
}

// WithIntentID names the logical call (an order id, a job id) in the journal
// (per call only; requires WithJournal). The first call under an id records a
// fresh key; a later call under the same id, even after a crash, gets the same
// key back: same params are re-sent and replayed (or the recorded outcome is
// returned), other params fail with ErrIdempotencyKeyReuse before sending.
func WithIntentID(id string) Option {
	return func(s *settings) error {
		if !s.perCall {
			return errors.New("safegen: WithIntentID is a per-call option")
		}
		if id == "" || len(id) > 1024 {
			return errors.New("safegen: WithIntentID: id must be 1 to 1024 bytes")
		}
		s.intentID = id
		return nil
	}
}

// WithHeader adds a header to every request (client) or to one call.
// Authorization, X-API-Key and Idempotency-Key cannot be set this way.
func WithHeader(name, value string) Option {
	return func(s *settings) error {
		cn := http.CanonicalHeaderKey(name)
		switch cn {
		case "Authorization", "X-Api-Key", "Idempotency-Key", "Host", "Content-Length":
			return fmt.Errorf("safegen: WithHeader(%q): set by the client", name)
		}
		if name == "" || strings.ContainsAny(name+value, "\r\n") {
			return errors.New("safegen: WithHeader: empty name or multi-line value")
		}
		h := make(http.Header, len(s.header)+1)
		for k, v := range s.header {
			h[k] = v
		}
		h.Add(cn, value)
		s.header = h
		return nil
	}
}

// WithResponseMeta stores the call's ResponseMeta in *m when the call returns,
// with or without an error (per call only). Useful with Client.Do.
func WithResponseMeta(m *ResponseMeta) Option {
	return func(s *settings) error {
		if !s.perCall {
			return errors.New("safegen: WithResponseMeta is a per-call option")
		}
		s.meta = m
		return nil
	}
}

// WithIdleTimeout bounds how long a download (Generations.Download) may go
// without receiving a byte, response headers included (default 30 s; 0
// means no bound but the context's). A stalled attempt is cut and retried
// from the bytes already on disk. It runs on the real clock. Downloads are
// not bounded by WithAttemptTimeout: a slow transfer that keeps making
// progress is never cut.
func WithIdleTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d < 0 {
			return fmt.Errorf("safegen: WithIdleTimeout(%v): must not be negative", d)
		}
		s.idleTimeout = d
		return nil
	}
}

// WithProgress makes Generations.Download call fn with the bytes of the
// output on disk so far and the output's size (-1 while unknown): once at
// the start (bytes kept from an earlier partial download count), after each
// chunk written, and with 0 when the download has to start over (per call
// only; default none). fn runs on the calling goroutine and must be quick.
func WithProgress(fn func(done, total int64)) Option {
	return func(s *settings) error {
		if !s.perCall {
			return errors.New("safegen: WithProgress is a per-call option")
		}
		s.progress = fn
		return nil
	}
}

// Clock is the time source of a Client. Sleep returns early with the
// context's error when it is cancelled.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WithSpendLimit caps the credits this Client's billable calls may spend
// (client only; default none). Before a billable call is sent its price is
// reserved: WithCost, or Generations.Estimate for a create (never billed;
// cached per model and parameters). A call that does not fit fails before
// anything is sent with a *SpendLimitError matching ErrSpendLimit. A
// definitive answer settles the reservation to the response's cost (a
// replay is the same charge; a refunded cancel gives the credits back); a
// call whose outcome is unknown keeps its reservation until a retry or
// Resume learns it. With a SpendJournal (journal.File, journal.Memory,
// pgjournal) the spend is journaled: a restarted process starts from what
// was spent and reserved, and Clients sharing a pgjournal namespace share
// one limit. credits must be finite and not negative.
func WithSpendLimit(credits float64) Option {
	return func(s *settings) error {
		if err := clientOnly(s, "WithSpendLimit"); err != nil {
			return err
		}
		if math.IsNaN(credits) || math.IsInf(credits, 0) || credits < 0 {
			return fmt.Errorf("safegen: WithSpendLimit(%v): want a finite number of credits, 0 or more", credits)
		}
		s.spendLimit, s.spendOn = credits, true
		return nil
	}
}

// WithCost gives a billable call's price in credits, reserved against the
// spend limit instead of asking Generations.Estimate (per call only;
// default: the estimate). Do calls that bill need it under a spend limit,
// since their price cannot be estimated. credits must be finite and not
// negative.
func WithCost(credits float64) Option {
	return func(s *settings) error {
		if !s.perCall {
			return errors.New("safegen: WithCost is a per-call option")
		}
		if math.IsNaN(credits) || math.IsInf(credits, 0) || credits < 0 {
			return fmt.Errorf("safegen: WithCost(%v): want a finite number of credits, 0 or more", credits)
		}
		s.cost, s.costSet = credits, true
		return nil
	}
}
