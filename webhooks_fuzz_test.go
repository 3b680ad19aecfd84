package safegen

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyWebhook feeds arbitrary header values and bodies to the
// verifier. It must never panic, must fail only with one of the three
// sentinels (or none), must never echo a secret or an expected signature,
// and must accept only a body that was signed: one of the seed bodies, under
// a signature that an independent check finds in the headers.
//
//	go test -run '^$' -fuzz FuzzVerifyWebhook -fuzztime 60s .
func FuzzVerifyWebhook(f *testing.F) {
	secrets := []string{whSecret, whOldSecret}
	signed := map[string]bool{}
	add := func(xsig, clipia, id, ts, wsig string, body []byte) {
		f.Add(xsig, clipia, id, ts, wsig, body)
	}
	addSigned := func(secret string, body []byte, t time.Time) {
		signed[string(body)] = true
		h := SignPayload(secret, body, t)
		x, id, ts, w := h.Get("X-Signature"), h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
		add(x, "", id, ts, w, body)
		add("", x, "", "", "", body)
		add(x, "", "", "", "", body)
		add("", "", id, ts, w, body)
		add(x+",v1="+strings.Repeat("0", 64), "", id, ts, "v1,"+strings.Repeat("A", 43)+"= "+strings.TrimPrefix(w, "v1,"), body)
	}
	addSigned(whSecret, whBody, whAt)
	addSigned(whOldSecret, whBody, whAt)
	addSigned(whSecret, []byte(`{"id":"evt_2","type":"generation.failed","data":{}}`), whAt)
	addSigned(whSecret, []byte{}, whAt)
	addSigned(whSecret, whBody, whAt.Add(-10*time.Minute)) // stale
	add("t=1,v1=zz", "", "", "", "", whBody)
	add("t="+whTS+",t="+whTS, "", "", "", "", whBody)
	add("", "", "evt_1", "-1", "v1,!!", whBody)
	add("", "", "evt_1", whTS, "v1a,abc v2,", nil)

	keys := [][]byte{whKey, whOldKey, []byte(whSecret), []byte(whOldSecret)}
	f.Fuzz(func(t *testing.T, xsig, clipia, id, ts, wsig string, body []byte) {
		h := hdr("X-Signature", xsig, "X-Clipia-Signature", clipia, "webhook-id", id, "webhook-timestamp", ts, "webhook-signature", wsig)
		err := VerifyWebhook(h, body, secrets, at(whAt))
		e, perr := ParseEvent(h, body, secrets, at(whAt))
		if err != nil {
			if !errors.Is(err, ErrWebhookSignature) && !errors.Is(err, ErrWebhookTimestamp) && !errors.Is(err, ErrWebhookMalformed) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			if perr == nil || e != nil {
				t.Fatalf("ParseEvent accepted what VerifyWebhook rejected")
			}
			msg := err.Error()
			for _, k := range keys {
				if bytes.Contains([]byte(msg), k) || strings.Contains(msg, hexSig(k, ts, body)) || strings.Contains(msg, b64Sig(k, id, ts, body)) {
					t.Fatalf("error reveals a secret or a signature: %q", msg)
				}
			}
			for _, s := range secrets {
				if strings.Contains(msg, strings.TrimPrefix(s, "whsec_")) {
					t.Fatalf("error reveals a secret: %q", msg)
				}
			}
			return
		}
		if !signed[string(body)] {
			t.Fatalf("accepted a body that was never signed: %q", body)
		}
		if !independentlySigned(keys, xsig, clipia, id, ts, wsig, body) {
			t.Fatalf("accepted headers that carry no valid signature of the body")
		}
		if perr == nil && !bytes.Equal(e.Raw, body) {
			t.Fatalf("Raw differs from the body")
		}
	})
}

// independentlySigned reports whether a header carries, as a substring, a
// correct signature of body under one of keys, at a timestamp within five
// minutes of whAt: a check written without the parser under test.
func independentlySigned(keys [][]byte, xsig, clipia, id, ts, wsig string, body []byte) bool {
	inTolerance := func(s string) bool {
		var n int64
		for _, c := range s {
			if c < '0' || c > '9' || n > 1e17 {
				return false
			}
			n = n*10 + int64(c-'0')
		}
		diff := n - whAt.Unix()
		return s != "" && diff >= -300 && diff <= 300
	}
	for _, x := range []string{xsig, clipia} {
		for _, part := range strings.Split(x, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k != "t" || !inTolerance(v) {
				continue
			}
			for _, key := range keys {
				if strings.Contains(strings.ToLower(x), "v1="+hexSig(key, v, body)) {
					return true
				}
			}
		}
	}
	if inTolerance(ts) {
		for _, key := range keys[:2] {
			if strings.Contains(wsig, "v1,"+b64Sig(key, id, ts, body)) {
				return true
			}
		}
	}
	return false
}

// The fuzz oracle itself must tell signed from unsigned.
func TestIndependentlySigned(t *testing.T) {
	keys := [][]byte{whKey, whOldKey, []byte(whSecret), []byte(whOldSecret)}
	h := SignPayload(whSecret, whBody, whAt)
	x, id, ts, w := h.Get("X-Signature"), h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if !independentlySigned(keys, x, "", "", "", "", whBody) || !independentlySigned(keys, "", x, "", "", "", whBody) ||
		!independentlySigned(keys, "", "", id, ts, w, whBody) {
		t.Fatal("a signed delivery was not recognised")
	}
	if independentlySigned(keys, x, x, id, ts, w, append(bytes.Clone(whBody), ' ')) {
		t.Fatal("a tampered body was recognised")
	}
	stale := SignPayload(whSecret, whBody, whAt.Add(-time.Hour))
	if independentlySigned(keys, stale.Get("X-Signature"), "", stale.Get("webhook-id"), stale.Get("webhook-timestamp"), stale.Get("webhook-signature"), whBody) {
		t.Fatal("a stale delivery was recognised")
	}
}
