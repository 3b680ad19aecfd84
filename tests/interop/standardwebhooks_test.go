// Package interop checks safegen's webhooks against the Standard Webhooks
// reference library. It is its own module so that the library never reaches
// an importer of safegen.
package interop

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

var (
	whKey       = []byte("test-webhook-key-0123456789abcdef")
	whSecret    = "whsec_" + base64.StdEncoding.EncodeToString(whKey)
	whOldKey    = []byte("old-webhook-key-fedcba9876543210")
	whOldSecret = "whsec_" + base64.StdEncoding.EncodeToString(whOldKey)
	whAt        = time.Unix(1_700_000_000, 0)
	whTS        = strconv.FormatInt(whAt.Unix(), 10)
	whBody      = []byte(`{"id":"evt_1","type":"generation.succeeded","request_id":"req_1","created_at":"2023-11-14T22:13:20Z","data":{"id":"gen_1","status":"succeeded","model":"img-2","cost":3,"created_at":"2023-11-14T22:13:00Z","output":{"url":"https://cdn.example/1.png"}}}`)
)

func at(t time.Time) safegen.WebhookOption {
	return safegen.WithWebhookClock(func() time.Time { return t })
}

func stdHdr(id, ts, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", sig)
	return h
}

// Signatures made by the Standard Webhooks reference library verify here,
// and safegen.SignPayload's verify there.
func TestWebhookInteropStandardWebhooks(t *testing.T) {
	ref, err := standardwebhooks.NewWebhook(whSecret)
	require.NoError(t, err)
	refOld, err := standardwebhooks.NewWebhook(whOldSecret)
	require.NoError(t, err)

	t.Run("theirs verify here", func(t *testing.T) {
		sig, err := ref.Sign("msg_2Lh9", whAt, whBody)
		require.NoError(t, err)
		h := stdHdr("msg_2Lh9", whTS, sig)
		require.NoError(t, safegen.VerifyWebhook(h, whBody, []string{whSecret}, at(whAt)))
		_, err = safegen.ParseEvent(h, whBody, []string{whSecret}, at(whAt))
		require.NoError(t, err)

		assert.ErrorIs(t, safegen.VerifyWebhook(h, whBody, []string{whOldSecret}, at(whAt)), safegen.ErrWebhookSignature)
		assert.ErrorIs(t, safegen.VerifyWebhook(h, append(bytes.Clone(whBody), ' '), []string{whSecret}, at(whAt)), safegen.ErrWebhookSignature)
		assert.ErrorIs(t, safegen.VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(time.Hour))), safegen.ErrWebhookTimestamp)

		// Rotation: the sender signs with both secrets.
		sigOld, err := refOld.Sign("msg_2Lh9", whAt, whBody)
		require.NoError(t, err)
		both := stdHdr("msg_2Lh9", whTS, sigOld+" "+sig)
		require.NoError(t, safegen.VerifyWebhook(both, whBody, []string{whSecret}, at(whAt)))
		require.NoError(t, safegen.VerifyWebhook(both, whBody, []string{whOldSecret}, at(whAt)))
	})

	t.Run("ours verify there", func(t *testing.T) {
		now := time.Now() // the reference library checks against the wall clock
		h := safegen.SignPayload(whSecret, whBody, now)
		require.NoError(t, ref.Verify(whBody, h))
		assert.Error(t, refOld.Verify(whBody, h))
		assert.Error(t, ref.Verify(append(bytes.Clone(whBody), ' '), h))

		// A raw key on their side is the decoded whsec_ part on ours.
		raw, err := standardwebhooks.NewWebhookRaw(whKey)
		require.NoError(t, err)
		require.NoError(t, raw.Verify(whBody, h))
	})

	t.Run("safegentest's deliveries verify there", func(t *testing.T) {
		// The fake server's default secret is a whsec_ secret too.
		key := base64.StdEncoding.EncodeToString([]byte("interop-key-0123456789"))
		srv := safegentest.NewServer(t, safegentest.WithWebhookSecret("whsec_"+key),
			safegentest.WithWebhookRetry(time.Millisecond, 1),
			safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond), safegentest.WithRateLimit(0, 0))
		got := make(chan http.Header, 1)
		var body []byte
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b := new(bytes.Buffer)
			_, _ = b.ReadFrom(r.Body)
			body = b.Bytes()
			w.WriteHeader(http.StatusNoContent)
			got <- r.Header.Clone()
		}))
		defer hook.Close()
		c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Generations.Create(context.Background(), &safegen.GenerationCreateParams{Model: "img-2", Prompt: "x", WebhookURL: hook.URL})
		require.NoError(t, err)
		var h http.Header
		select {
		case h = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
		ref, err := standardwebhooks.NewWebhook("whsec_" + key)
		require.NoError(t, err)
		require.NoError(t, ref.Verify(body, h))
		require.NoError(t, safegen.VerifyWebhook(h, body, []string{"whsec_" + key}))
	})
}
