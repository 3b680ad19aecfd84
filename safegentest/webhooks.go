package safegentest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WebhookDelivery is one attempt to deliver a webhook event.
type WebhookDelivery struct {
	EventID string
	Type    string
	URL     string
	Attempt int    // 1 for the first delivery
	Status  int    // the receiver's status, 0 on a transport error
	Err     string // the transport error, if any
	Header  http.Header
	Body    []byte
	At      time.Time // server clock
}

// webhookKeyBytes returns the HMAC key: the base64-decoded part after
// "whsec_" (the Standard Webhooks convention, used for X-Signature too),
// else the secret's raw bytes.
func webhookKeyBytes(secret string) []byte {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if b, err := base64.StdEncoding.DecodeString(rest); err == nil {
			return b
		}
	}
	return []byte(secret)
}

type webhookEvent struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	RequestID string         `json:"request_id"`
	CreatedAt string         `json:"created_at"`
	Data      generationJSON `json:"data"`
}

// dispatchWebhooksLocked starts one delivery for each generation with a
// webhook_url that has reached a terminal status. Called with s.mu held.
func (s *Server) dispatchWebhooksLocked() {
	if s.closed {
		return
	}
	now := s.cfg.clock.Now()
	for _, g := range s.genOrder {
		if g.webhookURL == "" || g.dispatched {
			continue
		}
		v := s.viewLocked(g, now)
		if !terminal(v.Status) {
			continue
		}
		g.dispatched = true
		ev := webhookEvent{
			ID: newID("evt_"), Type: "generation." + v.Status, RequestID: g.requestID,
			CreatedAt: now.UTC().Format(time.RFC3339), Data: v,
		}
		body, err := json.Marshal(ev)
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go s.deliver(ev.ID, ev.Type, g.webhookURL, body)
	}
}

// deliver POSTs one event until the receiver answers 2xx or the attempts
// run out, waiting initial, 2*initial, ... real time between attempts.
func (s *Server) deliver(eventID, typ, url string, body []byte) {
	defer s.wg.Done()
	wait := s.cfg.webhookInitial
	for attempt := 1; attempt <= s.cfg.webhookAttempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-s.stop.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait *= 2
		}
		if s.deliverOnce(eventID, typ, url, body, attempt) {
			return
		}
		if s.stop.Err() != nil {
			return
		}
	}
}

// deliverOnce makes one attempt and records it; true when the receiver
// answered 2xx.
func (s *Server) deliverOnce(eventID, typ, url string, body []byte, attempt int) bool {
	now := s.cfg.clock.Now()
	h := s.signatureHeaders(eventID, now.Unix(), body)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "safegentest-webhooks/1")
	d := WebhookDelivery{EventID: eventID, Type: typ, URL: url, Attempt: attempt, Header: h.Clone(), Body: body, At: now}

	ctx, cancel := context.WithCancel(s.stop)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err == nil {
		req.Header = h
		var resp *http.Response
		resp, err = s.whClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			d.Status = resp.StatusCode
		}
	}
	if err != nil {
		d.Err = err.Error()
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	return d.Status >= 200 && d.Status < 300
}

// signatureHeaders signs body both ways: X-Signature (X-Clipia-Signature
// for Clipia) "t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">", and the
// Standard Webhooks webhook-id, webhook-timestamp and webhook-signature
// "v1,<base64 HMAC-SHA256 of "<id>.<t>.<body>">". Both use the same key.
func (s *Server) signatureHeaders(eventID string, t int64, body []byte) http.Header {
	ts := strconv.FormatInt(t, 10)
	mac := hmac.New(sha256.New, s.webhookKey)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	sig := "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))

	mac = hmac.New(sha256.New, s.webhookKey)
	mac.Write([]byte(eventID + "." + ts + "."))
	mac.Write(body)

	h := http.Header{}
	if s.cfg.dialect == DialectClipia {
		h.Set("X-Clipia-Signature", sig)
	} else {
		h.Set("X-Signature", sig)
	}
	h.Set("webhook-id", eventID)
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return h
}

// WebhookDeliveries returns every delivery attempt so far, in order.
func (s *Server) WebhookDeliveries() []WebhookDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WebhookDelivery, len(s.deliveries))
	for i, d := range s.deliveries {
		d.Header = d.Header.Clone()
		out[i] = d
	}
	return out
}
