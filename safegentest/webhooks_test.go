package safegentest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// receiver is a webhook endpoint that answers the statuses it is given, in
// order (the last one repeats), and keeps what it received.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []result
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	rc := &receiver{statuses: statuses}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		st := rc.statuses[min(len(rc.got), len(rc.statuses)-1)]
		rc.got = append(rc.got, result{Status: st, Header: r.Header.Clone(), Body: b})
		rc.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) received() []result {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]result(nil), rc.got...)
}

// verifySignature checks "t=<ts>,v1=<hex>" by hand and returns ts.
func verifySignature(t *testing.T, key []byte, header string, body []byte) int64 {
	t.Helper()
	var ts, v1 string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	assert.True(t, hmac.Equal([]byte(want), []byte(v1)), "X-Signature %q does not verify", header)
	n, err := strconv.ParseInt(ts, 10, 64)
	require.NoError(t, err)
	return n
}

// verifyStandard checks the Standard Webhooks headers by hand.
func verifyStandard(t *testing.T, key []byte, h http.Header, body []byte) {
	t.Helper()
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	assert.True(t, hmac.Equal([]byte(want), []byte(h.Get("webhook-signature"))), "webhook-signature does not verify")
}

func secretKey(t *testing.T, secret string) []byte {
	t.Helper()
	rest, ok := strings.CutPrefix(secret, "whsec_")
	require.True(t, ok, secret)
	key, err := base64.StdEncoding.DecodeString(rest)
	require.NoError(t, err)
	require.Len(t, key, 32)
	return key
}

func TestWebhookDeliveredAndRetried(t *testing.T) {
	rc := newReceiver(t, 500, 200)
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithGenerationTiming(10*time.Millisecond, 10*time.Millisecond),
		WithWebhookRetry(5*time.Millisecond, 3))
	c := client(t)

	r := create(t, c, srv, "k", `{"model":"img-2","prompt":"p","webhook_url":"`+rc.URL+`/hook"}`)
	require.Equal(t, http.StatusAccepted, r.Status)
	genID := decode(t, r)["id"].(string)

	assert.Never(t, func() bool { return len(rc.received()) > 0 }, 30*time.Millisecond, 5*time.Millisecond,
		"nothing is sent before the generation finishes on the server clock")

	clk.Advance(20 * time.Millisecond)
	require.Eventually(t, func() bool { return len(rc.received()) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Never(t, func() bool { return len(rc.received()) > 2 }, 30*time.Millisecond, 5*time.Millisecond,
		"delivered once: no more attempts after a 2xx")

	key := secretKey(t, srv.WebhookSecret)
	got := rc.received()
	for _, g := range got {
		ts := verifySignature(t, key, g.Header.Get("X-Signature"), g.Body)
		assert.Equal(t, clk.Now().Unix(), ts)
		verifyStandard(t, key, g.Header, g.Body)
		assert.Empty(t, g.Header.Get("X-Clipia-Signature"))
	}
	assert.Equal(t, got[0].Body, got[1].Body, "a redelivery carries the same event")

	var ev struct {
		ID, Type, RequestID string
		CreatedAt           string `json:"created_at"`
		Data                map[string]any
	}
	require.NoError(t, json.Unmarshal(got[1].Body, &ev))
	assert.True(t, strings.HasPrefix(ev.ID, "evt_"))
	assert.Equal(t, ev.ID, got[1].Header.Get("webhook-id"))
	assert.Equal(t, "generation.succeeded", ev.Type)
	assert.Equal(t, genID, ev.Data["id"])
	assert.Equal(t, "succeeded", ev.Data["status"])
	assert.NotEmpty(t, ev.CreatedAt)

	ds := srv.WebhookDeliveries()
	require.Len(t, ds, 2)
	assert.Equal(t, 1, ds[0].Attempt)
	assert.Equal(t, 500, ds[0].Status)
	assert.Equal(t, 2, ds[1].Attempt)
	assert.Equal(t, 200, ds[1].Status)
	assert.Equal(t, ev.ID, ds[0].EventID)
	assert.Equal(t, rc.URL+"/hook", ds[1].URL)
}

func TestWebhookFailedClipiaAndExhausted(t *testing.T) {
	rc := newReceiver(t, 503)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	srv := NewServer(t, WithDialect(DialectClipia), WithGenerationTiming(0, 0),
		WithWebhookRetry(time.Millisecond, 3), WithWebhookSecret(secret))
	assert.Equal(t, secret, srv.WebhookSecret)
	c := client(t)

	r := create(t, c, srv, "", `{"model":"img-2","prompt":"[fail] please","webhook_url":"`+rc.URL+`"}`)
	require.Equal(t, http.StatusOK, r.Status)

	require.Eventually(t, func() bool { return len(srv.WebhookDeliveries()) == 3 }, 5*time.Second, 5*time.Millisecond)
	assert.Never(t, func() bool { return len(rc.received()) > 3 }, 30*time.Millisecond, 5*time.Millisecond,
		"attempts are bounded")

	key := secretKey(t, secret)
	for i, g := range rc.received() {
		assert.Empty(t, g.Header.Get("X-Signature"))
		verifySignature(t, key, g.Header.Get("X-Clipia-Signature"), g.Body)
		verifyStandard(t, key, g.Header, g.Body)
		assert.Contains(t, string(g.Body), `"type":"generation.failed"`)
		assert.Equal(t, i+1, srv.WebhookDeliveries()[i].Attempt)
	}
}

func TestWebhookTransportErrorRecorded(t *testing.T) {
	rc := newReceiver(t, 200)
	url := rc.URL
	rc.Close() // nothing listens there any more
	srv := NewServer(t, WithGenerationTiming(0, 0), WithWebhookRetry(time.Millisecond, 2))
	c := client(t)
	create(t, c, srv, "", `{"model":"img-2","prompt":"p","webhook_url":"`+url+`"}`)
	require.Eventually(t, func() bool { return len(srv.WebhookDeliveries()) == 2 }, 5*time.Second, 5*time.Millisecond)
	for _, d := range srv.WebhookDeliveries() {
		assert.Equal(t, 0, d.Status)
		assert.NotEmpty(t, d.Err)
	}
}

func TestCloseStopsWebhookRetries(t *testing.T) {
	rc := newReceiver(t, 500)
	srv := Start(WithGenerationTiming(0, 0), WithWebhookRetry(time.Hour, 6))
	c := client(t)
	create(t, c, srv, "", `{"model":"img-2","prompt":"p","webhook_url":"`+rc.URL+`"}`)
	require.Eventually(t, func() bool { return len(rc.received()) == 1 }, 5*time.Second, 5*time.Millisecond)

	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the pending redelivery")
	}
	srv.Close() // a second Close is harmless
	assert.Len(t, srv.WebhookDeliveries(), 1)
}
