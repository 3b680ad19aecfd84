package safegentest

import (
	"encoding/base64"
	"time"
)

// Dialect selects which vendor's row of CONTRACT.md the server follows.
type Dialect string

// The dialects, one per row of the contract's dialect table.
const (
	DialectDefault      Dialect = "default"
	DialectRimp         Dialect = "rimp"
	DialectRealm        Dialect = "realm"
	DialectRelaystation Dialect = "relaystation"
	DialectClipia       Dialect = "clipia"
	DialectPatomic      Dialect = "patomic"
)

// defaultWebhookSecret is fixed so that tests and the CLI can verify
// signatures without plumbing the secret around.
var defaultWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("safegentest-fixed-webhook-secret"))

type config struct {
	dialect         Dialect
	clock           Clock
	workTime        time.Duration
	queued          time.Duration
	processing      time.Duration
	perMinute       int
	rateWindow      time.Duration
	concurrent      int
	credits         int64
	keyWindow       time.Duration
	faultRates      FaultRates
	faultSeed       int64
	hasFaultRates   bool
	webhookSecret   string
	webhookInitial  time.Duration
	webhookAttempts int
	maxBodyBytes    int64
	outputSize      int64
	outputTTL       time.Duration
	pollHint        time.Duration // < 0: the time to the next status change
}

func defaultConfig() config {
	return config{
		dialect:         DialectDefault,
		clock:           realClock{},
		queued:          50 * time.Millisecond,
		processing:      100 * time.Millisecond,
		perMinute:       120,
		rateWindow:      time.Minute,
		concurrent:      10,
		credits:         1_000_000,
		keyWindow:       24 * time.Hour,
		webhookSecret:   defaultWebhookSecret,
		webhookInitial:  time.Second,
		webhookAttempts: 6,
		maxBodyBytes:    1 << 20,
		outputSize:      64 << 10,
		outputTTL:       time.Hour,
		pollHint:        -1,
	}
}

// Option configures a Server. Options apply in order; the last one wins.
type Option func(*config)

// WithDialect makes the server follow one vendor's dialect. Default
// DialectDefault. An unknown dialect behaves like DialectDefault.
func WithDialect(d Dialect) Option {
	return func(c *config) { c.dialect = d }
}

// WithClock sets the server clock. Default: the wall clock. A nil Clock
// keeps the default.
func WithClock(clk Clock) Option {
	return func(c *config) {
		if clk != nil {
			c.clock = clk
		}
	}
}

// WithWorkTime sets the real time the create handler spends working after it
// has claimed the idempotency key and before it commits, so a test can send a
// second request with the same key and see 409 request_in_progress.
// Default 0.
func WithWorkTime(d time.Duration) Option {
	return func(c *config) { c.workTime = max(d, 0) }
}

// WithGenerationTiming sets, on the server clock, how long a new generation
// stays queued and then processing before it reaches its terminal status.
// Default 50ms queued and 100ms processing.
func WithGenerationTiming(queued, processing time.Duration) Option {
	return func(c *config) {
		c.queued = max(queued, 0)
		c.processing = max(processing, 0)
	}
}

// WithRateWindow sets the length of the rate-limit window (default one
// minute): WithRateLimit(L, 0) with WithRateWindow(time.Second) allows L
// requests a second. Retry-After and RateLimit-Reset round up to whole
// seconds.
func WithRateWindow(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.rateWindow = d
		}
	}
}

// WithRateLimit sets the per-API-key limits: perMinute requests per
// server-clock minute over all endpoints, and concurrent in-flight requests.
// Zero disables that limit. Default 120 per minute and 10 concurrent.
func WithRateLimit(perMinute, concurrent int) Option {
	return func(c *config) {
		c.perMinute = max(perMinute, 0)
		c.concurrent = max(concurrent, 0)
	}
}

// WithCredits sets the starting balance of every API key's account.
// Default 1_000_000.
func WithCredits(n int64) Option {
	return func(c *config) { c.credits = n }
}

// WithKeyWindow sets how long, on the server clock, an idempotency key is
// remembered from its first use. Default 24h.
func WithKeyWindow(d time.Duration) Option {
	return func(c *config) { c.keyWindow = d }
}

// WithFaultRates makes billable POSTs fail at random with the given
// probabilities, drawn from a PCG generator seeded with seed so that a run
// can be reproduced. Faults queued with InjectFaults take precedence.
// Default: no random faults.
func WithFaultRates(r FaultRates, seed int64) Option {
	return func(c *config) {
		c.faultRates = r
		c.faultSeed = seed
		c.hasFaultRates = true
	}
}

// WithWebhookSecret sets the webhook signing secret. A secret of the form
// "whsec_<base64>" signs with the decoded bytes (as Standard Webhooks does);
// any other string signs with its raw bytes. Default: a fixed
// "whsec_..." secret, exposed as Server.WebhookSecret.
func WithWebhookSecret(secret string) Option {
	return func(c *config) { c.webhookSecret = secret }
}

// WithWebhookRetry sets the real-time wait before the first webhook
// redelivery (doubled after each failure) and the maximum number of
// delivery attempts. Default 1s and 6 attempts.
func WithWebhookRetry(initial time.Duration, attempts int) Option {
	return func(c *config) {
		c.webhookInitial = max(initial, 0)
		c.webhookAttempts = max(attempts, 1)
	}
}

// WithMaxBodyBytes sets the largest request body the server accepts; a
// larger one gets 413 invalid_request. Default 1 MiB.
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) { c.maxBodyBytes = max(n, 0) }
}

// WithOutputSize sets the size in bytes of every succeeded generation's
// output. The bytes are generated on the fly from the generation id, so a
// large output costs no memory. Default 64 KiB; a negative size keeps the
// default.
func WithOutputSize(n int64) Option {
	return func(c *config) {
		if n >= 0 {
			c.outputSize = n
		}
	}
}

// WithOutputTTL sets how long, on the server clock, an output URL stays
// valid after the GET of the generation that returned it; past that it
// answers 403 url_expired. Default one hour; d <= 0 keeps the default.
func WithOutputTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.outputTTL = d
		}
	}
}

// WithPollHint sets the Retry-After (whole seconds, rounded up) that a GET
// of a generation that is not terminal carries. Default: the time left
// until the generation's next status change on the server clock, rounded
// down to whole seconds (so "0" for a phase shorter than a second, which
// keeps fast test timings fast). A negative d restores the default.
func WithPollHint(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.pollHint = -1
			return
		}
		c.pollHint = d
	}
}
