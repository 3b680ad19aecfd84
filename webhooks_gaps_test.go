package safegen

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lastHexChanged returns sig with only its last hex digit changed.
func lastHexChanged(sig string) string {
	c := byte('0')
	if sig[len(sig)-1] == '0' {
		c = '1'
	}
	return sig[:len(sig)-1] + string(c)
}

// lastBase64Changed returns sig (the standard base64 of 32 bytes, 43
// characters and one '=') with only its last data character changed, to one
// that still decodes strictly: it changes the last byte of the signature,
// and no other.
func lastBase64Changed(t *testing.T, sig string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	require.Len(t, sig, 44)
	require.Equal(t, byte('='), sig[43])
	i := 0
	for alphabet[i] != sig[42] {
		i++
	}
	// The last data character carries the final byte's low four bits in its
	// top four bits; its two low bits are padding and must stay zero.
	changed := sig[:42] + string(alphabet[i^4]) + "="
	a, err := base64.StdEncoding.Strict().DecodeString(sig)
	require.NoError(t, err)
	b, err := base64.StdEncoding.Strict().DecodeString(changed)
	require.NoError(t, err, "still canonical base64")
	require.Equal(t, a[:31], b[:31])
	require.NotEqual(t, a[31], b[31])
	return changed
}

// TestVerifyWebhookComparesWholeSignature: a signature that differs from
// the right one only in its last character (its last byte) is refused, in
// both forms, so a comparison that stops short of the end fails. The first
// character is checked too, for symmetry.
func TestVerifyWebhookComparesWholeSignature(t *testing.T) {
	sig := hexSig(whKey, whTS, whBody)
	std := b64Sig(whKey, "evt_1", whTS, whBody)
	firstHex := "0" + sig[1:]
	if sig[0] == '0' {
		firstHex = "1" + sig[1:]
	}
	tests := []struct {
		name   string
		header map[string]string
		ok     bool
	}{
		{"X-Signature as signed", map[string]string{"X-Signature": "t=" + whTS + ",v1=" + sig}, true},
		{"X-Signature, last hex digit changed", map[string]string{"X-Signature": "t=" + whTS + ",v1=" + lastHexChanged(sig)}, false},
		{"X-Signature, first hex digit changed", map[string]string{"X-Signature": "t=" + whTS + ",v1=" + firstHex}, false},
		{"X-Clipia-Signature, last hex digit changed", map[string]string{"X-Clipia-Signature": "t=" + whTS + ",v1=" + lastHexChanged(sig)}, false},
		{"Standard Webhooks as signed", map[string]string{"webhook-id": "evt_1", "webhook-timestamp": whTS, "webhook-signature": "v1," + std}, true},
		{"Standard Webhooks, last base64 character changed", map[string]string{"webhook-id": "evt_1", "webhook-timestamp": whTS,
			"webhook-signature": "v1," + lastBase64Changed(t, std)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var kv []string
			for k, v := range tt.header {
				kv = append(kv, k, v)
			}
			err := VerifyWebhook(hdr(kv...), whBody, []string{whSecret}, at(whAt))
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrWebhookSignature)
			assert.NotErrorIs(t, err, ErrWebhookMalformed)
		})
	}
}

// TestWebhookToleranceNotPositiveKeepsDefault: a zero or negative tolerance
// keeps the 5-minute default: a delivery a minute old still passes, one
// ten minutes old does not.
func TestWebhookToleranceNotPositiveKeepsDefault(t *testing.T) {
	h := SignPayload(whSecret, whBody, whAt)
	for _, d := range []time.Duration{0, -1, -time.Hour} {
		assert.NoError(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(time.Minute)), WithWebhookTolerance(d)), "tolerance %v", d)
		assert.ErrorIs(t, VerifyWebhook(h, whBody, []string{whSecret}, at(whAt.Add(10*time.Minute)), WithWebhookTolerance(d)), ErrWebhookTimestamp, "tolerance %v", d)
	}
}
