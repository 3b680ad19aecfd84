package safegen

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook sentinels, matched with errors.Is. Their messages say what was
// wrong with a delivery, never the secret or the signature that was expected.
var (
	// ErrWebhookSignature: no signature header, or no signature in it
	// matches the body under any of the secrets. WebhookHandler answers 401.
	ErrWebhookSignature = errors.New("safegen: webhook signature does not match")
	// ErrWebhookTimestamp: the signature matches, but its timestamp is
	// further from now than the tolerance (a replayed or badly delayed
	// delivery, or a skewed clock). WebhookHandler answers 401.
	ErrWebhookTimestamp = errors.New("safegen: webhook timestamp outside the tolerance")
	// ErrWebhookMalformed: a signature header that cannot be parsed, a body
	// over the size limit, or (ParseEvent) a body that is not an event.
	// WebhookHandler answers 400.
	ErrWebhookMalformed = errors.New("safegen: malformed webhook")
)

// errNoWebhookSecret is a receiver's configuration error, not the sender's
// fault: WebhookHandler answers 500 so the delivery is retried later.
var errNoWebhookSecret = errors.New("safegen: no webhook secret configured")

// The headers a delivery is signed in (CONTRACT.md, Webhooks).
const (
	headerSignature       = "X-Signature"
	headerClipiaSignature = "X-Clipia-Signature"
	headerWebhookID       = "webhook-id"
	headerWebhookTime     = "webhook-timestamp"
	headerWebhookSig      = "webhook-signature"
)

const (
	defaultWebhookTolerance = 5 * time.Minute
	defaultWebhookMaxBody   = 1 << 20
	// maxTimestampDigits keeps a Unix time far from int64 overflow.
	maxTimestampDigits = 18
)

// webhookConfig is what the WebhookOptions set.
type webhookConfig struct {
	tolerance time.Duration
	now       func() time.Time
	maxBody   int64
	dedup     DedupStore
	logger    *slog.Logger
}

func newWebhookConfig(opts []WebhookOption) webhookConfig {
	cfg := webhookConfig{
		tolerance: defaultWebhookTolerance,
		now:       time.Now,
		maxBody:   defaultWebhookMaxBody,
		logger:    slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg
}

// WebhookOption configures VerifyWebhook, ParseEvent and WebhookHandler.
// Options apply in order; the last one wins.
type WebhookOption func(*webhookConfig)

// WithWebhookTolerance sets how far a delivery's timestamp may be from now,
// in either direction. Default 5 minutes. A non-positive d keeps the
// default: the check cannot be turned off (inject a clock instead).
func WithWebhookTolerance(d time.Duration) WebhookOption {
	return func(c *webhookConfig) {
		if d > 0 {
			c.tolerance = d
		}
	}
}

// WithWebhookClock sets the clock that timestamps are checked against, and
// that the handler's default dedup store ages its entries by. Default
// time.Now; nil keeps the default.
func WithWebhookClock(now func() time.Time) WebhookOption {
	return func(c *webhookConfig) {
		if now != nil {
			c.now = now
		}
	}
}

// WithWebhookMaxBody sets the largest body accepted, in bytes. Default
// 1 MiB; a non-positive n keeps the default. WebhookHandler answers 413 to
// a larger body, VerifyWebhook returns ErrWebhookMalformed.
func WithWebhookMaxBody(n int64) WebhookOption {
	return func(c *webhookConfig) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// WithWebhookDedupStore sets where WebhookHandler records the event ids it
// has processed. Default: a MemoryDedupStore of its own with a 24-hour TTL,
// on the WithWebhookClock clock; several replicas behind one URL need a
// shared store. Nil keeps the default. VerifyWebhook and ParseEvent ignore it.
func WithWebhookDedupStore(s DedupStore) WebhookOption {
	return func(c *webhookConfig) { c.dedup = s }
}

// WithWebhookLogger sets the logger of WebhookHandler: rejected deliveries
// at Warn, duplicates at Debug, failures of fn or of the store at Error.
// It never logs a secret, a signature or a body. Default: silent; nil keeps
// the default.
func WithWebhookLogger(l *slog.Logger) WebhookOption {
	return func(c *webhookConfig) {
		if l != nil {
			c.logger = l
		}
	}
}

// webhookKey returns the HMAC key of a secret: the base64-decoded part after
// "whsec_" (the Standard Webhooks convention, which the contract uses for
// X-Signature too), else the secret's raw bytes.
func webhookKey(secret string) []byte {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if b, err := base64.StdEncoding.DecodeString(rest); err == nil && len(b) > 0 {
			return b
		}
	}
	return []byte(secret)
}

// webhookKeys holds the candidate HMAC keys of the configured secrets.
type webhookKeys struct {
	// std signs both forms: webhookKey of each secret.
	std [][]byte
	// raw are the full secret strings' bytes where they differ from std:
	// accepted for X-Signature only, for senders that key it that way.
	raw [][]byte
}

func keysOf(secrets []string) (webhookKeys, error) {
	var k webhookKeys
	for _, s := range secrets {
		if s == "" {
			continue
		}
		key := webhookKey(s)
		k.std = append(k.std, key)
		if !bytes.Equal(key, []byte(s)) {
			k.raw = append(k.raw, []byte(s))
		} else if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) >= 16 {
			// A bare base64 secret: the Standard Webhooks libraries decode
			// it as if it had the whsec_ prefix, so accept that key too.
			k.std = append(k.std, b)
		}
	}
	if len(k.std) == 0 {
		return k, errNoWebhookSecret
	}
	return k, nil
}

// VerifyWebhook checks that body was signed under one of secrets, less than
// the tolerance ago (or ahead). It accepts both signature forms:
//
//   - X-Signature (or X-Clipia-Signature, whatever the dialect):
//     "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">". Several v1
//     entries may appear while the sender rotates its secret; other schemes
//     are ignored.
//   - Standard Webhooks: webhook-id, webhook-timestamp and webhook-signature
//     "v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">", several
//     entries separated by spaces.
//
// A secret "whsec_<base64>" keys the HMAC with its decoded bytes; any other
// secret with its raw bytes, and, when it is itself valid base64 of 16 bytes
// or more, with its decoded bytes too (as the Standard Webhooks libraries
// treat a secret without the prefix). For X-Signature the raw bytes of the
// full "whsec_..." string are also accepted, for senders that key it that
// way (as Stripe does). Pass several secrets while rotating yours.
//
// Every signature header present must be well formed (else
// ErrWebhookMalformed), and at least one signature must match (else
// ErrWebhookSignature) with a timestamp in the tolerance (else
// ErrWebhookTimestamp). Signatures are compared in constant time.
func VerifyWebhook(header http.Header, body []byte, secrets []string, opts ...WebhookOption) error {
	cfg := newWebhookConfig(opts)
	return cfg.verify(header, body, secrets)
}

// sigCheck is one signature header's outcome.
type sigCheck int

const (
	sigAbsent   sigCheck = iota
	sigNoMatch           // well formed, no entry matches
	sigStale             // an entry matches, timestamp outside the tolerance
	sigVerified          // an entry matches, timestamp within the tolerance
)

func (cfg *webhookConfig) verify(header http.Header, body []byte, secrets []string) error {
	keys, err := keysOf(secrets)
	if err != nil {
		return err
	}
	if int64(len(body)) > cfg.maxBody {
		return fmt.Errorf("%w: body larger than %d bytes", ErrWebhookMalformed, cfg.maxBody)
	}
	now := cfg.now()
	best := sigAbsent
	for _, name := range []string{headerSignature, headerClipiaSignature} {
		r, err := cfg.checkXSignature(header, name, body, keys, now)
		if err != nil {
			return err
		}
		best = max(best, r)
	}
	r, err := cfg.checkStandard(header, body, keys, now)
	if err != nil {
		return err
	}
	best = max(best, r)
	switch best {
	case sigVerified:
		return nil
	case sigStale:
		return fmt.Errorf("%w (%s)", ErrWebhookTimestamp, cfg.tolerance)
	case sigAbsent:
		return fmt.Errorf("%w: no signature header (%s, %s or %s)", ErrWebhookSignature,
			headerSignature, headerClipiaSignature, headerWebhookSig)
	}
	return ErrWebhookSignature
}

// singleHeader returns the header's only value, ok false when it is absent,
// and an error when it appears more than once.
func singleHeader(h http.Header, name string) (string, bool, error) {
	vs := h.Values(name)
	switch len(vs) {
	case 0:
		return "", false, nil
	case 1:
		return vs[0], true, nil
	}
	return "", false, fmt.Errorf("%w: %s: more than one header line", ErrWebhookMalformed, name)
}

// xSignature is a parsed X-Signature value.
type xSignature struct {
	t   int64
	ts  string   // t as sent, all digits
	v1s [][]byte // decoded v1 entries
}

// parseXSignature parses "t=<digits>,v1=<64 hex>[,v1=...][,<scheme>=<value>]".
// Exactly one t; unknown schemes are ignored but must still look like
// "<lower-case token>=<visible ASCII>" (a base64 value may hold '=').
// Spaces and tabs around an element are allowed (HTTP list syntax),
// nowhere else.
func parseXSignature(name, v string) (xSignature, error) {
	var x xSignature
	bad := func(why string) (xSignature, error) {
		return xSignature{}, fmt.Errorf("%w: %s: %s", ErrWebhookMalformed, name, why)
	}
	if strings.TrimSpace(v) == "" {
		return bad("empty")
	}
	seenT := false
	for _, part := range strings.Split(v, ",") {
		part = strings.Trim(part, " \t")
		k, val, ok := strings.Cut(part, "=")
		switch {
		case part == "":
			return bad("empty element")
		case !ok || k == "" || val == "":
			return bad("element is not key=value")
		case !isSchemeToken(k):
			return bad("invalid key")
		}
		switch k {
		case "t":
			if seenT {
				return bad("more than one t")
			}
			seenT = true
			t, err := parseUnixDigits(val)
			if err != nil {
				return bad("t " + err.Error())
			}
			x.t, x.ts = t, val
		case "v1":
			if len(val) != 2*sha256.Size {
				return bad("v1 is not 64 hex digits")
			}
			sig, err := hex.DecodeString(val)
			if err != nil {
				return bad("v1 is not 64 hex digits")
			}
			x.v1s = append(x.v1s, sig)
		default:
			for i := 0; i < len(val); i++ {
				if val[i] < 0x21 || val[i] > 0x7e {
					return bad("invalid value")
				}
			}
		}
	}
	if !seenT {
		return bad("no t")
	}
	return x, nil
}

// isSchemeToken reports whether s is 1 to 32 lower-case letters, digits,
// '_' and '-'.
func isSchemeToken(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// parseUnixDigits parses a Unix time written as 1 to 18 ASCII digits, with
// no sign, space or other character.
func parseUnixDigits(s string) (int64, error) {
	if s == "" || len(s) > maxTimestampDigits {
		return 0, errors.New("is not 1 to 18 digits")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("is not all digits")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func (cfg *webhookConfig) checkXSignature(h http.Header, name string, body []byte, keys webhookKeys, now time.Time) (sigCheck, error) {
	v, ok, err := singleHeader(h, name)
	if err != nil || !ok {
		return sigAbsent, err
	}
	x, err := parseXSignature(name, v)
	if err != nil {
		return sigAbsent, err
	}
	if len(x.v1s) == 0 {
		return sigNoMatch, nil
	}
	matched := false
	for _, set := range [][][]byte{keys.std, keys.raw} {
		for _, key := range set {
			want := macOf(key, x.ts, ".", body)
			for _, sig := range x.v1s {
				// Keep looping after a match: the work done must not
				// depend on which entry matched.
				if hmac.Equal(sig, want) {
					matched = true
				}
			}
		}
	}
	return cfg.judge(matched, x.t, now), nil
}

func (cfg *webhookConfig) checkStandard(h http.Header, body []byte, keys webhookKeys, now time.Time) (sigCheck, error) {
	sigHeader, ok, err := singleHeader(h, headerWebhookSig)
	if err != nil || !ok {
		return sigAbsent, err
	}
	id, okID, err := singleHeader(h, headerWebhookID)
	if err != nil {
		return sigAbsent, err
	}
	ts, okTS, err := singleHeader(h, headerWebhookTime)
	if err != nil {
		return sigAbsent, err
	}
	bad := func(why string) (sigCheck, error) {
		return sigAbsent, fmt.Errorf("%w: %s", ErrWebhookMalformed, why)
	}
	if !okID || id == "" {
		return bad(headerWebhookSig + " without " + headerWebhookID)
	}
	if !okTS {
		return bad(headerWebhookSig + " without " + headerWebhookTime)
	}
	t, err := parseUnixDigits(ts)
	if err != nil {
		return bad(headerWebhookTime + " " + err.Error())
	}
	entries := strings.Fields(sigHeader)
	if len(entries) == 0 {
		return bad(headerWebhookSig + ": empty")
	}
	var sigs [][]byte
	for _, e := range entries {
		version, val, ok := strings.Cut(e, ",")
		if !ok || version == "" || val == "" {
			return bad(headerWebhookSig + ": entry is not <version>,<signature>")
		}
		if version != "v1" {
			continue // another scheme (such as v1a, asymmetric): not ours to check
		}
		sig, err := base64.StdEncoding.Strict().DecodeString(val) // one encoding per signature: no malleable padding bits
		if err != nil || len(sig) != sha256.Size {
			return bad(headerWebhookSig + ": v1 is not a base64 HMAC-SHA256")
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return sigNoMatch, nil
	}
	matched := false
	for _, key := range keys.std {
		want := macOf(key, id+"."+ts, ".", body)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				matched = true
			}
		}
	}
	return cfg.judge(matched, t, now), nil
}

// judge turns a match and its timestamp into an outcome. The timestamp is
// only looked at once the signature matched, so ErrWebhookTimestamp always
// means an authentic delivery that is too old or too new.
func (cfg *webhookConfig) judge(matched bool, t int64, now time.Time) sigCheck {
	if !matched {
		return sigNoMatch
	}
	// time.Time.Sub saturates instead of overflowing.
	d := now.Sub(time.Unix(t, 0))
	if d > cfg.tolerance || d < -cfg.tolerance {
		return sigStale
	}
	return sigVerified
}

// macOf returns HMAC-SHA256(key, prefix + sep + body).
func macOf(key []byte, prefix, sep string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(prefix))
	m.Write([]byte(sep))
	m.Write(body)
	return m.Sum(nil)
}
