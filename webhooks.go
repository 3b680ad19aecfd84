package safegen

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
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

// Event is a webhook event: a generation reached a terminal status.
type Event struct {
	// ID identifies the event ("evt_..."); redeliveries repeat it, so it is
	// the key to deduplicate by.
	ID string `json:"id"`
	// Type is "generation.succeeded", "generation.failed" or
	// "generation.canceled".
	Type string `json:"type"`
	// RequestID is the request that created the generation.
	RequestID string `json:"request_id"`
	// CreatedAt is when the event was made; zero when the server sent none
	// or an unreadable one.
	CreatedAt time.Time `json:"-"`
	// Data is the generation as it stood when the event was made.
	Data Generation `json:"data"`
	// Raw is the body exactly as received and verified.
	Raw []byte `json:"-"`
}

// ParseEvent verifies the delivery as VerifyWebhook does, then decodes the
// event. A body that is not JSON, or lacks id or type, is
// ErrWebhookMalformed. Raw holds a copy of body.
func ParseEvent(header http.Header, body []byte, secrets []string, opts ...WebhookOption) (*Event, error) {
	cfg := newWebhookConfig(opts)
	return cfg.parseEvent(header, body, secrets)
}

func (cfg *webhookConfig) parseEvent(header http.Header, body []byte, secrets []string) (*Event, error) {
	if err := cfg.verify(header, body, secrets); err != nil {
		return nil, err
	}
	return decodeEvent(body)
}

func decodeEvent(body []byte) (*Event, error) {
	var aux struct {
		Event
		CreatedAt json.RawMessage `json:"created_at"`
	}
	if err := json.Unmarshal(body, &aux); err != nil {
		return nil, fmt.Errorf("%w: body is not an event: %s", ErrWebhookMalformed, jsonErrorKind(err))
	}
	e := aux.Event
	if e.ID == "" || e.Type == "" {
		return nil, fmt.Errorf("%w: event without id or type", ErrWebhookMalformed)
	}
	var s string
	if len(aux.CreatedAt) > 0 && json.Unmarshal(aux.CreatedAt, &s) == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			e.CreatedAt = t
		}
	}
	e.Raw = bytes.Clone(body)
	return &e, nil
}

// jsonErrorKind describes a decoding error without quoting the body.
func jsonErrorKind(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return "invalid JSON at offset " + strconv.FormatInt(syn.Offset, 10)
	case errors.As(err, &typ):
		return "field " + clean(typ.Field, 60) + " has the wrong type"
	}
	return "invalid JSON"
}

// SignPayload signs body as a sender does, at time t, in both forms:
// X-Signature, and the Standard Webhooks webhook-id, webhook-timestamp and
// webhook-signature. The secret is keyed as VerifyWebhook keys it. The
// webhook-id is the body's event id when it has one, else "msg_" and a hash
// of the body. It also sets Content-Type: application/json. Use it to make
// valid deliveries in tests of your own handler.
func SignPayload(secret string, body []byte, t time.Time) http.Header {
	key := webhookKey(secret)
	ts := strconv.FormatInt(t.Unix(), 10)
	id := eventIDOf(body)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(headerSignature, "t="+ts+",v1="+hex.EncodeToString(macOf(key, ts, ".", body)))
	h.Set(headerWebhookID, id)
	h.Set(headerWebhookTime, ts)
	h.Set(headerWebhookSig, "v1,"+base64.StdEncoding.EncodeToString(macOf(key, id+"."+ts, ".", body)))
	return h
}

// eventIDOf returns the body's top-level "id", or an id derived from the
// body when it has none.
func eventIDOf(body []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &v) == nil && v.ID != "" && !strings.ContainsAny(v.ID, "\r\n") {
		return v.ID
	}
	sum := sha256.Sum256(body)
	return "msg_" + hex.EncodeToString(sum[:16])
}

// WebhookHandler returns an http.Handler that receives webhook deliveries:
//
//   - only POST (405 otherwise), a body up to the size limit (413 over it);
//   - verified as ParseEvent does: 400 when malformed, 401 when the signature
//     or the timestamp is wrong;
//   - deduplicated by event id through the DedupStore: a delivery already
//     processed answers 204 without calling fn, and one that another request
//     is processing right now answers 409, so the sender tries again later;
//   - fn called with the request's context; nil answers 204, an error (or a
//     panic) answers 500 and releases the event id, so the sender's retry
//     runs fn again.
//
// fn runs before the answer: senders retry what is not answered within
// seconds (10 for the Generation API), so keep it short and hand long work
// to a queue. A store error
// answers 500. With no usable secret every delivery answers 500.
func WebhookHandler(secrets []string, fn func(ctx context.Context, e *Event) error, opts ...WebhookOption) http.Handler {
	cfg := newWebhookConfig(opts)
	if cfg.dedup == nil {
		cfg.dedup = newMemoryDedupStore(defaultDedupTTL, cfg.now)
	}
	return &webhookHandler{cfg: cfg, secrets: append([]string(nil), secrets...), fn: fn}
}

type webhookHandler struct {
	cfg     webhookConfig
	secrets []string
	fn      func(ctx context.Context, e *Event) error
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.cfg.logger
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.cfg.maxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	e, err := h.cfg.parseEvent(r.Header, body, h.secrets)
	if err != nil {
		status := http.StatusUnauthorized
		switch {
		case errors.Is(err, ErrWebhookMalformed):
			status = http.StatusBadRequest
		case errors.Is(err, errNoWebhookSecret):
			status = http.StatusInternalServerError
			log.Error("webhook rejected: receiver has no secret")
		}
		if status != http.StatusInternalServerError {
			log.Warn("webhook rejected", "status", status, "reason", err.Error())
		}
		http.Error(w, http.StatusText(status), status)
		return
	}

	ctx := r.Context()
	state, err := h.cfg.dedup.Claim(ctx, e.ID)
	if err != nil {
		log.Error("webhook dedup store: claim failed", "event_id", e.ID, "err", err)
		http.Error(w, "dedup store unavailable", http.StatusInternalServerError)
		return
	}
	switch state {
	case DedupDone:
		log.Debug("webhook duplicate ignored", "event_id", e.ID, "type", e.Type)
		w.WriteHeader(http.StatusNoContent)
		return
	case DedupBusy:
		log.Debug("webhook duplicate while in progress", "event_id", e.ID, "type", e.Type)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "event is being processed", http.StatusConflict)
		return
	case DedupClaimed:
	default:
		log.Error("webhook dedup store: unknown claim state", "event_id", e.ID, "state", int(state))
		http.Error(w, "dedup store error", http.StatusInternalServerError)
		return
	}

	// The store must hear the outcome even if the sender hung up.
	storeCtx := context.WithoutCancel(ctx)
	if err := h.run(ctx, e); err != nil {
		if rerr := h.cfg.dedup.Release(storeCtx, e.ID); rerr != nil {
			log.Error("webhook dedup store: release failed", "event_id", e.ID, "err", rerr)
		}
		log.Error("webhook handler failed; the sender will retry", "event_id", e.ID, "type", e.Type, "err", err)
		http.Error(w, "handler failed", http.StatusInternalServerError)
		return
	}
	if err := h.cfg.dedup.Done(storeCtx, e.ID); err != nil {
		// fn has run: answering 500 would run it again on the retry.
		log.Error("webhook dedup store: done failed", "event_id", e.ID, "err", err)
	}
	log.Debug("webhook processed", "event_id", e.ID, "type", e.Type)
	w.WriteHeader(http.StatusNoContent)
}

// run calls fn, turning a panic into an error so the claim is released.
func (h *webhookHandler) run(ctx context.Context, e *Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("safegen: webhook handler panicked: %v", p)
		}
	}()
	if h.fn == nil {
		return nil
	}
	return h.fn(ctx, e)
}

// DedupState is what DedupStore.Claim found.
type DedupState int

const (
	// DedupClaimed: the id was free and is now claimed by the caller, who
	// must call Done or Release.
	DedupClaimed DedupState = iota + 1
	// DedupDone: the id was processed before; skip it.
	DedupDone
	// DedupBusy: another caller holds a claim on the id right now.
	DedupBusy
)

// DedupStore remembers which event ids a WebhookHandler has processed, so a
// redelivery does not run the handler's function twice. An implementation
// must be safe for concurrent use, and Claim must be atomic: of two
// concurrent Claims of one id, at most one gets DedupClaimed. A store shared
// by several processes (a database row, a Redis SET NX with expiry) lets
// replicas behind one URL deduplicate together.
type DedupStore interface {
	// Claim marks id as in progress if it is neither done nor claimed.
	Claim(ctx context.Context, id string) (DedupState, error)
	// Done marks a claimed id as processed, for the store's retention time.
	Done(ctx context.Context, id string) error
	// Release drops a claim whose processing failed, so the next delivery
	// of the id can claim it again.
	Release(ctx context.Context, id string) error
}

const (
	// defaultDedupTTL is how long a processed id is remembered: longer than
	// any sender's retry schedule (6 attempts span minutes to hours).
	defaultDedupTTL = 24 * time.Hour
	// dedupClaimLease bounds how long a claim blocks other deliveries when
	// its holder neither finishes nor releases it (a hung handler).
	dedupClaimLease = 10 * time.Minute
	// defaultDedupMaxEntries bounds a MemoryDedupStore's memory.
	defaultDedupMaxEntries = 100_000
)

// MemoryDedupStore is a DedupStore in this process's memory. It remembers a
// processed id for its TTL, prunes expired ids as it goes, and holds at most
// 100,000 ids: past that it forgets the oldest first. A claim that is neither
// done nor released within 10 minutes lapses, so a hung handler does not
// block its event for good. It is safe for concurrent use by multiple
// goroutines. Its contents do not survive a restart, and each process has
// its own: use a shared DedupStore for several replicas.
type MemoryDedupStore struct {
	mu         sync.Mutex
	ttl        time.Duration
	lease      time.Duration
	maxEntries int
	now        func() time.Time
	entries    map[string]*list.Element // of *dedupEntry
	order      *list.List               // oldest update first
}

type dedupEntry struct {
	id      string
	done    bool
	updated time.Time
}

// NewMemoryDedupStore returns an empty MemoryDedupStore that remembers a
// processed id for ttl, on the wall clock. Default (ttl <= 0) 24 hours.
func NewMemoryDedupStore(ttl time.Duration) *MemoryDedupStore {
	return newMemoryDedupStore(ttl, time.Now)
}

func newMemoryDedupStore(ttl time.Duration, now func() time.Time) *MemoryDedupStore {
	if ttl <= 0 {
		ttl = defaultDedupTTL
	}
	return &MemoryDedupStore{
		ttl:        ttl,
		lease:      min(ttl, dedupClaimLease),
		maxEntries: defaultDedupMaxEntries,
		now:        now,
		entries:    make(map[string]*list.Element),
		order:      list.New(),
	}
}

// Claim implements DedupStore.
func (m *MemoryDedupStore) Claim(ctx context.Context, id string) (DedupState, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.pruneLocked(now)
	if el, ok := m.entries[id]; ok {
		e := el.Value.(*dedupEntry)
		if e.done {
			return DedupDone, nil
		}
		if now.Sub(e.updated) < m.lease {
			return DedupBusy, nil
		}
		// A lapsed claim: take it over.
		e.updated = now
		m.order.MoveToBack(el)
		return DedupClaimed, nil
	}
	for m.order.Len() >= m.maxEntries {
		m.removeLocked(m.order.Front())
	}
	m.entries[id] = m.order.PushBack(&dedupEntry{id: id, updated: now})
	return DedupClaimed, nil
}

// Done implements DedupStore. Marking an id that is not claimed records it
// as done all the same.
func (m *MemoryDedupStore) Done(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if el, ok := m.entries[id]; ok {
		e := el.Value.(*dedupEntry)
		e.done, e.updated = true, now
		m.order.MoveToBack(el)
		return nil
	}
	for m.order.Len() >= m.maxEntries {
		m.removeLocked(m.order.Front())
	}
	m.entries[id] = m.order.PushBack(&dedupEntry{id: id, done: true, updated: now})
	return nil
}

// Release implements DedupStore. Releasing an id that is done or unknown
// does nothing.
func (m *MemoryDedupStore) Release(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[id]; ok && !el.Value.(*dedupEntry).done {
		m.removeLocked(el)
	}
	return nil
}

// Len returns how many ids the store holds, done or claimed, expired ones
// included until they are pruned.
func (m *MemoryDedupStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}

// pruneLocked drops the ids whose retention has passed. The list is in
// update order, so they are at its front.
func (m *MemoryDedupStore) pruneLocked(now time.Time) {
	for el := m.order.Front(); el != nil; el = m.order.Front() {
		if now.Sub(el.Value.(*dedupEntry).updated) < m.ttl {
			return
		}
		m.removeLocked(el)
	}
}

func (m *MemoryDedupStore) removeLocked(el *list.Element) {
	delete(m.entries, el.Value.(*dedupEntry).id)
	m.order.Remove(el)
}
