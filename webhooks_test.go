package safegen

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	whKey       = []byte("test-webhook-key-0123456789abcdef")
	whSecret    = "whsec_" + base64.StdEncoding.EncodeToString(whKey)
	whOldKey    = []byte("old-webhook-key-fedcba9876543210")
	whOldSecret = "whsec_" + base64.StdEncoding.EncodeToString(whOldKey)
	whAt        = time.Unix(1_700_000_000, 0)
	whBody      = []byte(`{"id":"evt_1","type":"generation.succeeded","request_id":"req_1","created_at":"2023-11-14T22:13:20Z","data":{"id":"gen_1","status":"succeeded","model":"img-2","cost":3,"created_at":"2023-11-14T22:13:00Z","output":{"url":"https://cdn.example/1.png"}}}`)
)

// whTS is whAt as a header timestamp.
var whTS = strconv.FormatInt(whAt.Unix(), 10)

func at(t time.Time) WebhookOption { return WithWebhookClock(func() time.Time { return t }) }

// hexSig and b64Sig sign the two forms by hand, independently of SignPayload.
func hexSig(key []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func b64Sig(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// hdr builds a header from name/value pairs; an empty value is skipped.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			h.Add(kv[i], kv[i+1])
		}
	}
	return h
}

func xsigHdr(v string) http.Header { return hdr("X-Signature", v) }

func stdHdr(id, ts, sig string) http.Header {
	return hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", sig)
}

// secretsLeak lists what no error or log line may contain.
func secretsLeak(body []byte) []string {
	out := []string{whSecret, strings.TrimPrefix(whSecret, "whsec_"), string(whKey), whOldSecret, string(whOldKey)}
	for _, k := range [][]byte{whKey, whOldKey, []byte(whSecret)} {
		out = append(out, hexSig(k, whTS, body), b64Sig(k, "evt_1", whTS, body))
	}
	return out
}

func assertNoLeak(t *testing.T, s string, body []byte) {
	t.Helper()
	for _, secret := range secretsLeak(body) {
		assert.NotContains(t, s, secret)
	}
}

func TestVerifyWebhookAccepts(t *testing.T) {
	sigNew := hexSig(whKey, whTS, whBody)
	sigOld := hexSig(whOldKey, whTS, whBody)
	stdNew := b64Sig(whKey, "evt_1", whTS, whBody)
	stdOld := b64Sig(whOldKey, "evt_1", whTS, whBody)
	rawSecret := "plain-secret-no-prefix"

	tests := []struct {
		name    string
		header  http.Header
		secrets []string
	}{
		{"SignPayload, both forms", SignPayload(whSecret, whBody, whAt), []string{whSecret}},
		{"X-Signature alone", xsigHdr("t=" + whTS + ",v1=" + sigNew), []string{whSecret}},
		{"X-Clipia-Signature alone", hdr("X-Clipia-Signature", "t="+whTS+",v1="+sigNew), []string{whSecret}},
		{"lower-case header name", hdr("x-signature", "t="+whTS+",v1="+sigNew), []string{whSecret}},
		{"Standard Webhooks alone", stdHdr("evt_1", whTS, "v1,"+stdNew), []string{whSecret}},
		{"v1 first, t last", xsigHdr("v1=" + sigNew + ",t=" + whTS), []string{whSecret}},
		{"upper-case hex", xsigHdr("t=" + whTS + ",v1=" + strings.ToUpper(sigNew)), []string{whSecret}},
		{"spaces around elements", xsigHdr(" t=" + whTS + " , v1=" + sigNew + " "), []string{whSecret}},
		{"unknown schemes ignored", xsigHdr("t=" + whTS + ",v0=abc,v2=zzz,v1=" + sigNew), []string{whSecret}},
		{"unknown scheme with base64 padding", xsigHdr("t=" + whTS + ",v1=" + sigNew + ",v1_ed25519=YWJjZA=="), []string{whSecret}},
		{"rotation: two v1, new secret", xsigHdr("t=" + whTS + ",v1=" + sigOld + ",v1=" + sigNew), []string{whSecret}},
		{"rotation: two v1, old secret", xsigHdr("t=" + whTS + ",v1=" + sigOld + ",v1=" + sigNew), []string{whOldSecret}},
		{"rotation: old signature, two secrets", xsigHdr("t=" + whTS + ",v1=" + sigOld), []string{whSecret, whOldSecret}},
		{"rotation: empty secret skipped", xsigHdr("t=" + whTS + ",v1=" + sigOld), []string{"", whOldSecret}},
		{"std rotation: two entries", stdHdr("evt_1", whTS, "v1,"+stdOld+" v1,"+stdNew), []string{whSecret}},
		{"std: other versions ignored", stdHdr("evt_1", whTS, "v1a,AAAA v1,"+stdNew), []string{whSecret}},
		{"std: old signature, two secrets", stdHdr("evt_1", whTS, "v1,"+stdOld), []string{whSecret, whOldSecret}},
		{"X-Signature keyed with the whole secret string (Stripe style)",
			xsigHdr("t=" + whTS + ",v1=" + hexSig([]byte(whSecret), whTS, whBody)), []string{whSecret}},
		{"secret without prefix: raw bytes, X-Signature",
			xsigHdr("t=" + whTS + ",v1=" + hexSig([]byte(rawSecret), whTS, whBody)), []string{rawSecret}},
		{"secret without prefix: raw bytes, Standard Webhooks",
			stdHdr("evt_1", whTS, "v1,"+b64Sig([]byte(rawSecret), "evt_1", whTS, whBody)), []string{rawSecret}},
		{"SignPayload with a raw secret", SignPayload(rawSecret, whBody, whAt), []string{rawSecret}},
		{"both forms, one valid and one not matching",
			hdr("X-Signature", "t="+whTS+",v1="+sigOld, "webhook-id", "evt_1", "webhook-timestamp", whTS, "webhook-signature", "v1,"+stdNew),
			[]string{whSecret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, VerifyWebhook(tt.header, whBody, tt.secrets, at(whAt)))
		})
	}
}

func TestVerifyWebhookRejects(t *testing.T) {
	sig := hexSig(whKey, whTS, whBody)
	std := b64Sig(whKey, "evt_1", whTS, whBody)
	tampered := bytes.Replace(bytes.Clone(whBody), []byte(`"cost":3`), []byte(`"cost":4`), 1)
	t6 := strconv.FormatInt(whAt.Unix()+1, 10)

	tests := []struct {
		name    string
		header  http.Header
		body    []byte
		secrets []string
		opts    []WebhookOption
		want    error
	}{
		{"no signature header", hdr("Content-Type", "application/json"), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"wrong secret", SignPayload(whOldSecret, whBody, whAt), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"tampered body, both forms", SignPayload(whSecret, whBody, whAt), tampered, []string{whSecret}, nil, ErrWebhookSignature},
		{"tampered body, X-Signature", xsigHdr("t=" + whTS + ",v1=" + sig), tampered, []string{whSecret}, nil, ErrWebhookSignature},
		{"tampered body, Standard Webhooks", stdHdr("evt_1", whTS, "v1,"+std), tampered, []string{whSecret}, nil, ErrWebhookSignature},
		{"trailing byte added", SignPayload(whSecret, whBody, whAt), append(bytes.Clone(whBody), ' '), []string{whSecret}, nil, ErrWebhookSignature},
		{"empty body", SignPayload(whSecret, whBody, whAt), nil, []string{whSecret}, nil, ErrWebhookSignature},
		{"t changed, signature kept", xsigHdr("t=" + t6 + ",v1=" + sig), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"webhook-id changed", stdHdr("evt_2", whTS, "v1,"+std), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"webhook-timestamp changed", stdHdr("evt_1", t6, "v1,"+std), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"no v1 entry", xsigHdr("t=" + whTS + ",v0=" + sig), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"std: only other versions", stdHdr("evt_1", whTS, "v1a,"+std), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"std keyed with the whole secret string is not accepted",
			stdHdr("evt_1", whTS, "v1,"+b64Sig([]byte(whSecret), "evt_1", whTS, whBody)), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"unprefixed base64 secret, signed with its raw bytes, wrong key",
			xsigHdr("t=" + whTS + ",v1=" + hexSig([]byte("not the key"), whTS, whBody)), whBody, []string{base64.StdEncoding.EncodeToString(whKey)}, nil, ErrWebhookSignature},
		{"too old", SignPayload(whSecret, whBody, whAt), whBody, []string{whSecret}, []WebhookOption{at(whAt.Add(5*time.Minute + time.Second))}, ErrWebhookTimestamp},
		{"too new", SignPayload(whSecret, whBody, whAt), whBody, []string{whSecret}, []WebhookOption{at(whAt.Add(-5*time.Minute - time.Second))}, ErrWebhookTimestamp},
		{"std too old", stdHdr("evt_1", whTS, "v1,"+std), whBody, []string{whSecret}, []WebhookOption{at(whAt.Add(time.Hour))}, ErrWebhookTimestamp},
		{"custom tolerance", SignPayload(whSecret, whBody, whAt), whBody, []string{whSecret},
			[]WebhookOption{WithWebhookTolerance(time.Minute), at(whAt.Add(61 * time.Second))}, ErrWebhookTimestamp},
		{"far-future t", xsigHdr("t=999999999999999999,v1=" + hexSig(whKey, "999999999999999999", whBody)), whBody, []string{whSecret}, nil, ErrWebhookTimestamp},
		{"t zero", xsigHdr("t=0,v1=" + hexSig(whKey, "0", whBody)), whBody, []string{whSecret}, nil, ErrWebhookTimestamp},
		{"stale and wrong: signature wins", xsigHdr("t=0,v1=" + sig), whBody, []string{whSecret}, nil, ErrWebhookSignature},
		{"body over the limit", SignPayload(whSecret, whBody, whAt), whBody, []string{whSecret},
			[]WebhookOption{WithWebhookMaxBody(int64(len(whBody) - 1))}, ErrWebhookMalformed},
		{"both forms, valid X-Signature, malformed webhook-signature",
			hdr("X-Signature", "t="+whTS+",v1="+sig, "webhook-id", "evt_1", "webhook-timestamp", whTS, "webhook-signature", "v1,!!"),
			whBody, []string{whSecret}, nil, ErrWebhookMalformed},
		{"both forms, valid webhook-signature, malformed X-Signature",
			hdr("X-Signature", "t=x", "webhook-id", "evt_1", "webhook-timestamp", whTS, "webhook-signature", "v1,"+std),
			whBody, []string{whSecret}, nil, ErrWebhookMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]WebhookOption{at(whAt)}, tt.opts...)
			err := VerifyWebhook(tt.header, tt.body, tt.secrets, opts...)
			require.ErrorIs(t, err, tt.want)
			for _, other := range []error{ErrWebhookSignature, ErrWebhookTimestamp, ErrWebhookMalformed} {
				if other != tt.want {
					assert.NotErrorIs(t, err, other)
				}
			}
			assertNoLeak(t, err.Error(), tt.body)
		})
	}
}

func TestVerifyWebhookToleranceEdges(t *testing.T) {
	h := SignPayload(whSecret, whBody, whAt)
	for _, d := range []time.Duration{0, time.Second, -time.Second, 5 * time.Minute, -5 * time.Minute} {
		assert.NoError(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(d))), "skew %s", d)
	}
	for _, d := range []time.Duration{5*time.Minute + time.Nanosecond, -5*time.Minute - time.Nanosecond} {
		assert.ErrorIs(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(d))), ErrWebhookTimestamp, "skew %s", d)
	}
	// A non-positive tolerance keeps the default rather than disabling the check.
	assert.ErrorIs(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(time.Hour)), WithWebhookTolerance(0)), ErrWebhookTimestamp)
	assert.ErrorIs(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(time.Hour)), WithWebhookTolerance(-1)), ErrWebhookTimestamp)
	assert.NoError(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(time.Hour)), WithWebhookTolerance(2*time.Hour)))
}

func TestVerifyWebhookMalformed(t *testing.T) {
	sig := hexSig(whKey, whTS, whBody)
	std := b64Sig(whKey, "evt_1", whTS, whBody)
	tests := []struct {
		name   string
		header http.Header
	}{
		{"empty X-Signature", xsigHdr(" ")},
		{"t only, empty", xsigHdr("t=")},
		{"t not digits", xsigHdr("t=abc,v1=" + sig)},
		{"t negative", xsigHdr("t=-1,v1=" + sig)},
		{"t with plus", xsigHdr("t=+" + whTS + ",v1=" + sig)},
		{"t with inner space", xsigHdr("t=17 00,v1=" + sig)},
		{"t decimal", xsigHdr("t=" + whTS + ".5,v1=" + sig)},
		{"t 19 digits", xsigHdr("t=0000000000000000001,v1=" + sig)},
		{"t twice, same value", xsigHdr("t=" + whTS + ",t=" + whTS + ",v1=" + sig)},
		{"no t", xsigHdr("v1=" + sig)},
		{"v1 not hex", xsigHdr("t=" + whTS + ",v1=" + strings.Repeat("zz", 32))},
		{"v1 too short", xsigHdr("t=" + whTS + ",v1=" + sig[:62])},
		{"v1 too long", xsigHdr("t=" + whTS + ",v1=" + sig + "00")},
		{"v1 empty", xsigHdr("t=" + whTS + ",v1=")},
		{"v1 without =", xsigHdr("t=" + whTS + ",v1")},
		{"empty element", xsigHdr("t=" + whTS + ",,v1=" + sig)},
		{"trailing comma", xsigHdr("t=" + whTS + ",v1=" + sig + ",")},
		{"semicolons", xsigHdr("t=" + whTS + ";v1=" + sig)},
		{"garbage", xsigHdr("garbage")},
		{"empty key", xsigHdr("t=" + whTS + ",=x,v1=" + sig)},
		{"double =", xsigHdr("t=" + whTS + ",v1==" + sig)},
		{"upper-case key", xsigHdr("T=" + whTS + ",v1=" + sig)},
		{"key with space", xsigHdr("t=" + whTS + ",x y=1,v1=" + sig)},
		{"unknown scheme with control byte", xsigHdr("t=" + whTS + ",v0=a\x01b,v1=" + sig)},
		{"unknown scheme value with a space", xsigHdr("t=" + whTS + ",v0=a b,v1=" + sig)},
		{"NUL in t", xsigHdr("t=" + whTS + "\x00,v1=" + sig)},
		{"two X-Signature lines", hdr("X-Signature", "t="+whTS+",v1="+sig, "X-Signature", "t="+whTS+",v1="+sig)},
		{"X-Clipia-Signature malformed", hdr("X-Clipia-Signature", "t=1,v1=zz")},
		{"std: no webhook-id", stdHdr("", whTS, "v1,"+std)},
		{"std: no webhook-timestamp", stdHdr("evt_1", "", "v1,"+std)},
		{"std: timestamp not digits", stdHdr("evt_1", "12ab", "v1,"+std)},
		{"std: timestamp negative", stdHdr("evt_1", "-"+whTS, "v1,"+std)},
		{"std: empty signature", stdHdr("evt_1", whTS, "   ")},
		{"std: entry without comma", stdHdr("evt_1", whTS, "v1"+std)},
		{"std: v1 not base64", stdHdr("evt_1", whTS, "v1,!!!!")},
		{"std: v1 wrong length", stdHdr("evt_1", whTS, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 16)))},
		{"std: empty version", stdHdr("evt_1", whTS, ","+std)},
		{"std: two signature lines", hdr("webhook-id", "evt_1", "webhook-timestamp", whTS,
			"webhook-signature", "v1,"+std, "webhook-signature", "v1,"+std)},
		{"std: two id lines", hdr("webhook-id", "evt_1", "webhook-id", "evt_1", "webhook-timestamp", whTS, "webhook-signature", "v1,"+std)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyWebhook(tt.header, whBody, []string{whSecret}, at(whAt))
			require.ErrorIs(t, err, ErrWebhookMalformed)
			assertNoLeak(t, err.Error(), whBody)
			_, perr := ParseEvent(tt.header, whBody, []string{whSecret}, at(whAt))
			require.ErrorIs(t, perr, ErrWebhookMalformed)
		})
	}
}

func TestVerifyWebhookNoSecret(t *testing.T) {
	for _, secrets := range [][]string{nil, {}, {""}} {
		err := VerifyWebhook(SignPayload(whSecret, whBody, whAt), whBody, secrets, at(whAt))
		require.ErrorIs(t, err, errNoWebhookSecret)
		assert.NotErrorIs(t, err, ErrWebhookSignature)
	}
}

func TestParseEvent(t *testing.T) {
	e, err := ParseEvent(SignPayload(whSecret, whBody, whAt), whBody, []string{whSecret}, at(whAt))
	require.NoError(t, err)
	assert.Equal(t, "evt_1", e.ID)
	assert.Equal(t, "generation.succeeded", e.Type)
	assert.Equal(t, "req_1", e.RequestID)
	assert.True(t, e.CreatedAt.Equal(whAt), "created_at %s", e.CreatedAt)
	assert.Equal(t, "gen_1", e.Data.ID)
	assert.Equal(t, StatusSucceeded, e.Data.Status)
	assert.Equal(t, 3.0, e.Data.Cost)
	require.NotNil(t, e.Data.Output)
	assert.Equal(t, "https://cdn.example/1.png", e.Data.Output.URL)
	assert.Equal(t, whBody, e.Raw)
	require.NotSame(t, &whBody[0], &e.Raw[0], "Raw must be a copy")

	loose := []byte(`{"id":"evt_2","type":"generation.failed","created_at":"yesterday","data":{"id":"gen_2","status":"failed","error":{"code":"nsfw"}}}`)
	e, err = ParseEvent(SignPayload(whSecret, loose, whAt), loose, []string{whSecret}, at(whAt))
	require.NoError(t, err)
	assert.True(t, e.CreatedAt.IsZero())
	require.NotNil(t, e.Data.Error)
	assert.Equal(t, "nsfw", e.Data.Error.Code)
}

func TestParseEventMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":        `not json`,
		"truncated":       `{"id":"evt_1","type":"generation.succeeded"`,
		"array":           `[1,2]`,
		"missing id":      `{"type":"generation.succeeded","data":{}}`,
		"missing type":    `{"id":"evt_1","data":{}}`,
		"empty id":        `{"id":"","type":"generation.succeeded"}`,
		"id not a string": `{"id":7,"type":"generation.succeeded"}`,
		"data not object": `{"id":"evt_1","type":"generation.succeeded","data":"x"}`,
		"empty":           ``,
	} {
		t.Run(name, func(t *testing.T) {
			b := []byte(body)
			e, err := ParseEvent(SignPayload(whSecret, b, whAt), b, []string{whSecret}, at(whAt))
			require.ErrorIs(t, err, ErrWebhookMalformed)
			assert.Nil(t, e)
		})
	}
	// Verification comes first: an unsigned non-event is a signature error.
	_, err := ParseEvent(http.Header{}, []byte("not json"), []string{whSecret}, at(whAt))
	require.ErrorIs(t, err, ErrWebhookSignature)
}

func TestSignPayload(t *testing.T) {
	h := SignPayload(whSecret, whBody, whAt)
	assert.Equal(t, "t="+whTS+",v1="+hexSig(whKey, whTS, whBody), h.Get("X-Signature"))
	assert.Equal(t, "evt_1", h.Get("webhook-id"))
	assert.Equal(t, whTS, h.Get("webhook-timestamp"))
	assert.Equal(t, "v1,"+b64Sig(whKey, "evt_1", whTS, whBody), h.Get("webhook-signature"))
	assert.Equal(t, "application/json", h.Get("Content-Type"))

	// A body without an event id gets a stable id derived from the body.
	other := []byte("plain text")
	h1, h2 := SignPayload(whSecret, other, whAt), SignPayload(whSecret, other, whAt)
	assert.True(t, strings.HasPrefix(h1.Get("webhook-id"), "msg_"))
	assert.Equal(t, h1.Get("webhook-id"), h2.Get("webhook-id"))
	assert.NotEqual(t, h1.Get("webhook-id"), SignPayload(whSecret, []byte("other text"), whAt).Get("webhook-id"))
	require.NoError(t, VerifyWebhook(h1, other, []string{whSecret}, at(whAt)))
}

// --- handler ---

type handlerRig struct {
	h     http.Handler
	calls atomic.Int32
	fail  atomic.Int32 // the next fail calls of fn fail
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHandlerRig(t *testing.T, opts ...WebhookOption) *handlerRig {
	t.Helper()
	rig := &handlerRig{logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(rig.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := append([]WebhookOption{at(whAt), WithWebhookLogger(logger)}, opts...)
	rig.h = WebhookHandler([]string{whSecret}, func(ctx context.Context, e *Event) error {
		rig.calls.Add(1)
		if e.ID != "evt_1" {
			return errors.New("unexpected event")
		}
		if rig.fail.Load() > 0 {
			rig.fail.Add(-1)
			return errors.New("downstream unavailable")
		}
		return nil
	}, all...)
	t.Cleanup(func() { assertNoLeak(t, rig.logs.String(), whBody) })
	return rig
}

func (r *handlerRig) serve(method string, header http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/hooks", bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	return w
}

func (r *handlerRig) deliver() int {
	return r.serve(http.MethodPost, SignPayload(whSecret, whBody, whAt), whBody).Code
}

func TestWebhookHandlerStatuses(t *testing.T) {
	signed := SignPayload(whSecret, whBody, whAt)
	tests := []struct {
		name   string
		method string
		header http.Header
		body   []byte
		opts   []WebhookOption
		want   int
		calls  int32
	}{
		{"valid", http.MethodPost, signed, whBody, nil, http.StatusNoContent, 1},
		{"GET", http.MethodGet, signed, nil, nil, http.StatusMethodNotAllowed, 0},
		{"PUT", http.MethodPut, signed, whBody, nil, http.StatusMethodNotAllowed, 0},
		{"too large", http.MethodPost, signed, whBody, []WebhookOption{WithWebhookMaxBody(64)}, http.StatusRequestEntityTooLarge, 0},
		{"malformed signature", http.MethodPost, xsigHdr("t=x"), whBody, nil, http.StatusBadRequest, 0},
		{"not an event", http.MethodPost, SignPayload(whSecret, []byte("{}"), whAt), []byte("{}"), nil, http.StatusBadRequest, 0},
		{"unsigned", http.MethodPost, http.Header{}, whBody, nil, http.StatusUnauthorized, 0},
		{"wrong signature", http.MethodPost, SignPayload(whOldSecret, whBody, whAt), whBody, nil, http.StatusUnauthorized, 0},
		{"stale", http.MethodPost, SignPayload(whSecret, whBody, whAt.Add(-time.Hour)), whBody, nil, http.StatusUnauthorized, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rig := newHandlerRig(t, tt.opts...)
			w := rig.serve(tt.method, tt.header, tt.body)
			assert.Equal(t, tt.want, w.Code)
			assert.Equal(t, tt.calls, rig.calls.Load())
			if tt.want == http.StatusMethodNotAllowed {
				assert.Equal(t, "POST", w.Header().Get("Allow"))
			}
		})
	}
}

func TestWebhookHandlerTooLargeWithoutLength(t *testing.T) {
	rig := newHandlerRig(t, WithWebhookMaxBody(64))
	req := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(whBody))
	req.ContentLength = -1 // chunked: the cap must be enforced while reading
	for k, v := range SignPayload(whSecret, whBody, whAt) {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	rig.h.ServeHTTP(w, req)
	assert.Equal(t, http.StatusRequestEntityTooLarge, w.Code)
	assert.Zero(t, rig.calls.Load())
}

func TestWebhookHandlerDedupAndRetry(t *testing.T) {
	rig := newHandlerRig(t)
	rig.fail.Store(2)
	assert.Equal(t, http.StatusInternalServerError, rig.deliver(), "fn fails: 500 so the sender retries")
	assert.Equal(t, http.StatusInternalServerError, rig.deliver(), "the retry runs fn again, which fails again")
	assert.Equal(t, http.StatusNoContent, rig.deliver(), "third delivery succeeds")
	assert.Equal(t, int32(3), rig.calls.Load())
	for range 3 {
		assert.Equal(t, http.StatusNoContent, rig.deliver(), "redelivery of a processed event")
	}
	assert.Equal(t, int32(3), rig.calls.Load(), "fn never runs for a processed event")
	assert.Contains(t, rig.logs.String(), "downstream unavailable")
	assert.Contains(t, rig.logs.String(), "duplicate")
}

func TestWebhookHandlerPanicReleases(t *testing.T) {
	var calls atomic.Int32
	h := WebhookHandler([]string{whSecret}, func(ctx context.Context, e *Event) error {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return nil
	}, at(whAt))
	send := func() int {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(whBody))
		req.Header = SignPayload(whSecret, whBody, whAt)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	assert.Equal(t, http.StatusInternalServerError, send())
	assert.Equal(t, http.StatusNoContent, send())
	assert.Equal(t, http.StatusNoContent, send())
	assert.Equal(t, int32(2), calls.Load())
}

func TestWebhookHandlerNoSecret(t *testing.T) {
	h := WebhookHandler(nil, func(context.Context, *Event) error { return nil })
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(whBody))
	req.Header = SignPayload(whSecret, whBody, time.Now())
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	assert.Equal(t, http.StatusInternalServerError, w.Code)
}

// stubStore answers from fields and records calls.
type stubStore struct {
	mu                  sync.Mutex
	state               DedupState
	claimErr, doneErr   error
	claims, dones, rels int
	releaseErr          error
}

func (s *stubStore) Claim(context.Context, string) (DedupState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims++
	return s.state, s.claimErr
}

func (s *stubStore) Done(context.Context, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dones++
	return s.doneErr
}

func (s *stubStore) Release(context.Context, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rels++
	return s.releaseErr
}

func TestWebhookHandlerStore(t *testing.T) {
	tests := []struct {
		name  string
		store *stubStore
		fail  int32
		want  int
		calls int32
	}{
		{"claim error", &stubStore{claimErr: errors.New("db down")}, 0, http.StatusInternalServerError, 0},
		{"busy", &stubStore{state: DedupBusy}, 0, http.StatusConflict, 0},
		{"done", &stubStore{state: DedupDone}, 0, http.StatusNoContent, 0},
		{"unknown state", &stubStore{state: 42}, 0, http.StatusInternalServerError, 0},
		{"done error after fn ran: not retried", &stubStore{state: DedupClaimed, doneErr: errors.New("db down")}, 0, http.StatusNoContent, 1},
		{"release error after fn failed", &stubStore{state: DedupClaimed, releaseErr: errors.New("db down")}, 1, http.StatusInternalServerError, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rig := newHandlerRig(t, WithWebhookDedupStore(tt.store))
			rig.fail.Store(tt.fail)
			assert.Equal(t, tt.want, rig.deliver())
			assert.Equal(t, tt.calls, rig.calls.Load())
			assert.Equal(t, 1, tt.store.claims)
			if tt.calls > 0 && tt.fail == 0 {
				assert.Equal(t, 1, tt.store.dones)
			}
			if tt.fail > 0 {
				assert.Equal(t, 1, tt.store.rels)
				assert.Zero(t, tt.store.dones)
			}
		})
	}
}

// Duplicates that arrive while the first delivery is still in fn must not
// run fn: they answer 409 so the sender comes back later.
func TestWebhookHandlerConcurrentDuplicates(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	h := WebhookHandler([]string{whSecret}, func(ctx context.Context, e *Event) error {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return nil
	}, at(whAt))
	send := func() int {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(whBody))
		req.Header = SignPayload(whSecret, whBody, whAt)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	first := make(chan int, 1)
	go func() { first <- send() }()
	<-entered

	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = send()
		}()
	}
	wg.Wait()
	for _, c := range codes {
		assert.Equal(t, http.StatusConflict, c)
	}
	close(release)
	assert.Equal(t, http.StatusNoContent, <-first)
	assert.Equal(t, http.StatusNoContent, send())
	assert.Equal(t, int32(1), calls.Load())
}

// Many simultaneous deliveries of one event: fn runs exactly once.
func TestWebhookHandlerConcurrentStress(t *testing.T) {
	var calls atomic.Int32
	h := WebhookHandler([]string{whSecret}, func(ctx context.Context, e *Event) error {
		calls.Add(1)
		return nil
	}, at(whAt))
	srv := httptest.NewServer(h)
	defer srv.Close()

	const n = 40
	var wg sync.WaitGroup
	start := make(chan struct{})
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(whBody))
			if !assert.NoError(t, err) {
				return
			}
			req.Header = SignPayload(whSecret, whBody, whAt)
			resp, err := srv.Client().Do(req)
			if !assert.NoError(t, err) {
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	assert.Equal(t, int32(1), calls.Load())
	for _, c := range codes {
		assert.Contains(t, []int{http.StatusNoContent, http.StatusConflict}, c)
	}
	srv.Client().CloseIdleConnections()
}

// --- MemoryDedupStore ---

type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryDedupStore(t *testing.T) {
	ctx := context.Background()
	clk := &stepClock{now: whAt}
	m := newMemoryDedupStore(time.Hour, clk.Now)

	st, err := m.Claim(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, DedupClaimed, st)
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupBusy, st)

	require.NoError(t, m.Release(ctx, "a"))
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupClaimed, st, "a released id can be claimed again")
	require.NoError(t, m.Done(ctx, "a"))
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupDone, st)
	require.NoError(t, m.Release(ctx, "a"), "releasing a done id does nothing")
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupDone, st)

	// Retention: remembered until the TTL has passed, then pruned.
	clk.Advance(59 * time.Minute)
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupDone, st)
	clk.Advance(time.Minute)
	st, _ = m.Claim(ctx, "b")
	assert.Equal(t, DedupClaimed, st)
	assert.Equal(t, 1, m.Len(), "the expired id was pruned")
	st, _ = m.Claim(ctx, "a")
	assert.Equal(t, DedupClaimed, st, "an expired id is new again")

	// A claim that is never finished lapses after the lease.
	clk.Advance(10*time.Minute - time.Second)
	st, _ = m.Claim(ctx, "b")
	assert.Equal(t, DedupBusy, st)
	clk.Advance(time.Second)
	st, _ = m.Claim(ctx, "b")
	assert.Equal(t, DedupClaimed, st)

	// Done without a claim still records the id.
	require.NoError(t, m.Done(ctx, "c"))
	st, _ = m.Claim(ctx, "c")
	assert.Equal(t, DedupDone, st)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = m.Claim(cctx, "d")
	require.ErrorIs(t, err, context.Canceled)
}

func TestMemoryDedupStoreDefaults(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Hour} {
		m := NewMemoryDedupStore(ttl)
		assert.Equal(t, 24*time.Hour, m.ttl)
		assert.Equal(t, 10*time.Minute, m.lease)
	}
	assert.Equal(t, 48*time.Hour, NewMemoryDedupStore(48*time.Hour).ttl)
	assert.Equal(t, time.Minute, NewMemoryDedupStore(time.Minute).lease, "the lease never outlives the TTL")
	assert.Equal(t, defaultDedupMaxEntries, NewMemoryDedupStore(0).maxEntries)

	// The handler's own store runs on the handler's clock.
	clk := &stepClock{now: whAt}
	h := WebhookHandler([]string{whSecret}, nil, WithWebhookClock(clk.Now)).(*webhookHandler)
	ms, ok := h.cfg.dedup.(*MemoryDedupStore)
	require.True(t, ok)
	assert.Equal(t, 24*time.Hour, ms.ttl)
	require.NoError(t, ms.Done(context.Background(), "x"))
	clk.Advance(24 * time.Hour)
	st, _ := ms.Claim(context.Background(), "x")
	assert.Equal(t, DedupClaimed, st)
}

func TestMemoryDedupStoreBounded(t *testing.T) {
	ctx := context.Background()
	m := newMemoryDedupStore(time.Hour, func() time.Time { return whAt })
	m.maxEntries = 5
	for i := range 20 {
		_, err := m.Claim(ctx, "id"+strconv.Itoa(i))
		require.NoError(t, err)
		require.NoError(t, m.Done(ctx, "id"+strconv.Itoa(i)))
		assert.LessOrEqual(t, m.Len(), 5)
		assert.LessOrEqual(t, len(m.entries), 5)
	}
	st, _ := m.Claim(ctx, "id19")
	assert.Equal(t, DedupDone, st, "the newest ids are kept")
	st, _ = m.Claim(ctx, "id0")
	assert.Equal(t, DedupClaimed, st, "the oldest were forgotten")
}

func TestMemoryDedupStoreConcurrentClaims(t *testing.T) {
	m := NewMemoryDedupStore(0)
	var claimed atomic.Int32
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := m.Claim(context.Background(), "same")
			assert.NoError(t, err)
			if st == DedupClaimed {
				claimed.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), claimed.Load())
}

// TestBareBase64Secret: a secret given without the whsec_ prefix also
// verifies signatures keyed with its base64-decoded bytes, as the Standard
// Webhooks libraries key them.
func TestBareBase64Secret(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdef")
	bare := base64.StdEncoding.EncodeToString(raw)
	body := []byte(`{"id":"evt_1","type":"generation.succeeded","data":{"id":"gen_1","status":"succeeded"}}`)
	h := SignPayload("whsec_"+bare, body, time.Now()) // keyed with raw
	require.NoError(t, VerifyWebhook(h, body, []string{bare}))
	require.ErrorIs(t, VerifyWebhook(h, body, []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of 32 bytes......"))}), ErrWebhookSignature)
}
