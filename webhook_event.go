package safegen

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

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
