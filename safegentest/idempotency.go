package safegentest

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"
)

// idemEntry is what the server remembers about one idempotency key.
type idemEntry struct {
	fingerprint string
	created     time.Time
	inProgress  bool
	status      int
	body        []byte
}

// fingerprint identifies a request by method, path and body bytes.
func fingerprint(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// maxKeyLen is the longest idempotency key the dialect accepts.
func (s *Server) maxKeyLen() int {
	if s.cfg.dialect == DialectRimp {
		return 200
	}
	return 255
}

func validKey(k string, maxLen int) bool {
	if len(k) < 1 || len(k) > maxLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// mismatchCode is the dialect's 409 code for one key sent with two bodies.
func (s *Server) mismatchCode() string {
	switch s.cfg.dialect {
	case DialectRelaystation:
		return "IDEMPOTENCY_CONFLICT"
	case DialectPatomic:
		return "idempotency_key_conflict"
	}
	return "idempotency_key_reuse"
}

// replay answers with the stored status and body, plus the dialect's replay
// header. No other stored header is replayed.
func (s *Server) replay(e *idemEntry) *response {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	switch s.cfg.dialect {
	case DialectRealm, DialectRelaystation, DialectClipia:
	case DialectPatomic:
		// Written as is: Patomic sends the name in lower case on the wire.
		h["idempotency-replayed"] = []string{"true"}
	default:
		h.Set("Idempotent-Replayed", "true")
	}
	return &response{status: e.status, header: h, body: append([]byte(nil), e.body...), replayed: true}
}

// create runs a billable POST under the contract's idempotency rules.
func (s *Server) create(r *http.Request, body []byte, apiKey string) *response {
	vals, hasKey := r.Header["Idempotency-Key"]
	if !hasKey {
		return s.createGeneration(r, body, apiKey, "")
	}
	key := vals[0]
	if len(vals) != 1 || !validKey(key, s.maxKeyLen()) {
		return errorResponse(http.StatusBadRequest, "invalid_idempotency_key",
			"Idempotency-Key must be 1 to "+itoa(s.maxKeyLen())+" printable ASCII characters")
	}
	fp := fingerprint(r.Method, r.URL.Path, body)
	slot := apiKey + "\x00" + key
	now := s.cfg.clock.Now()

	s.mu.Lock()
	e := s.idem[slot]
	if e != nil && !e.inProgress && !now.Before(e.created.Add(s.cfg.keyWindow)) {
		delete(s.idem, slot)
		e = nil
	}
	if e != nil {
		defer s.mu.Unlock()
		switch {
		case e.inProgress:
			return errorResponse(http.StatusConflict, "request_in_progress",
				"a request with this Idempotency-Key is still being processed")
		case e.fingerprint != fp && s.cfg.dialect != DialectRealm:
			return errorResponse(http.StatusConflict, s.mismatchCode(),
				"this Idempotency-Key was used with a different request")
		}
		return s.replay(e)
	}
	e = &idemEntry{fingerprint: fp, created: now, inProgress: true}
	s.idem[slot] = e
	s.mu.Unlock()

	s.sleep(r.Context(), s.cfg.workTime)
	resp := s.createGeneration(r, body, apiKey, key)

	s.mu.Lock()
	defer s.mu.Unlock()
	if resp.status >= 500 || resp.status == http.StatusTooManyRequests {
		if s.idem[slot] == e {
			delete(s.idem, slot)
		}
		return resp
	}
	e.inProgress = false
	e.status = resp.status
	e.body = append([]byte(nil), resp.body...)
	return resp
}
