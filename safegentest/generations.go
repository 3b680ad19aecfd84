package safegentest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// generation is one created generation; its status follows the server clock.
type generation struct {
	id         string
	requestID  string
	apiKey     string
	model      string
	prompt     string
	durationS  int
	input      json.RawMessage
	webhookURL string
	cost       int64
	createdAt  time.Time
	dispatched bool // webhook event handed to a delivery goroutine
	outSize    int64
	out        *output   // made on the first view as succeeded
	canceledAt time.Time // zero unless canceled
}

type generationJSON struct {
	ID         string          `json:"id"`
	RequestID  string          `json:"request_id"`
	Status     string          `json:"status"`
	Model      string          `json:"model"`
	Prompt     string          `json:"prompt"`
	DurationS  int             `json:"duration_s,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	WebhookURL string          `json:"webhook_url,omitempty"`
	Cost       int64           `json:"cost"`
	CreatedAt  string          `json:"created_at"`
	Output     *outputJSON     `json:"output,omitempty"`
	Error      *genErrorJSON   `json:"error,omitempty"`
}

type outputJSON struct {
	URL         string `json:"url"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	ContentType string `json:"content_type"`
	ExpiresAt   string `json:"expires_at"`
}

type genErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// status is the generation's status at now.
func (g *generation) status(now time.Time, cfg *config) string {
	if !g.canceledAt.IsZero() {
		return "canceled"
	}
	age := now.Sub(g.createdAt)
	switch {
	case age < cfg.queued:
		return "queued"
	case age < cfg.queued+cfg.processing:
		return "processing"
	case strings.Contains(g.prompt, "[fail]"):
		return "failed"
	}
	return "succeeded"
}

func terminal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "canceled"
}

// untilNext is how long, at now, the generation stays in its current
// status; 0 once it is terminal.
func (g *generation) untilNext(now time.Time, cfg *config) time.Duration {
	age := now.Sub(g.createdAt)
	switch g.status(now, cfg) {
	case "queued":
		return cfg.queued - age
	case "processing":
		return cfg.queued + cfg.processing - age
	}
	return 0
}

// viewLocked is the generation's JSON at now, with a freshly signed output
// URL when it succeeded. Called with s.mu held.
func (s *Server) viewLocked(g *generation, now time.Time) generationJSON {
	st := g.status(now, &s.cfg)
	v := generationJSON{
		ID: g.id, RequestID: g.requestID, Status: st, Model: g.model, Prompt: g.prompt,
		DurationS: g.durationS, Input: g.input, WebhookURL: g.webhookURL, Cost: g.cost,
		CreatedAt: g.createdAt.UTC().Format(time.RFC3339),
	}
	switch st {
	case "succeeded":
		v.Output = s.outputJSONLocked(g, now)
	case "failed":
		v.Error = &genErrorJSON{Code: "generation_failed", Message: "the prompt asked to fail"}
	}
	return v
}

// params is a validated create or estimate body.
type params struct {
	model      string
	prompt     string
	durationS  int // 0 for image models
	input      json.RawMessage
	webhookURL string
	cost       int64
}

// videoModels and imageModels are the models the server knows; any model
// named "test-..." is accepted too and priced like an image.
var (
	videoModels = map[string]bool{"veo-3-1-fast": true, "veo-3-1": true}
	imageModels = map[string]bool{"img-2": true, "img-2-hd": true}
)

// Pricing: an image (or test-*) model costs 1 credit; a video model costs
// 3 credits per second of duration_s, which defaults to 4.
const (
	imageCost          = 1
	videoCostPerSecond = 3
	defaultDurationS   = 4
)

// parseParams validates a create or estimate request; it returns the error
// response when the request is bad.
func parseParams(r *http.Request, body []byte) (*params, *response) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, errorResponse(http.StatusBadRequest, "invalid_request", "Content-Type must be application/json")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil || raw == nil || dec.More() {
		return nil, errorResponse(http.StatusBadRequest, "invalid_request", "body must be one JSON object")
	}
	p := &params{}
	if !stringField(raw, "model", &p.model) || p.model == "" {
		return nil, errorResponse(http.StatusBadRequest, "invalid_request", `"model" is required and must be a string`)
	}
	if !stringField(raw, "prompt", &p.prompt) || p.prompt == "" {
		return nil, errorResponse(http.StatusBadRequest, "invalid_request", `"prompt" is required and must be a string`)
	}
	if v, ok := raw["webhook_url"]; ok && string(v) != "null" {
		if json.Unmarshal(v, &p.webhookURL) != nil {
			return nil, errorResponse(http.StatusBadRequest, "invalid_request", `"webhook_url" must be a string`)
		}
	}
	if v, ok := raw["input"]; ok && string(v) != "null" {
		var obj map[string]any
		if json.Unmarshal(v, &obj) != nil {
			return nil, errorResponse(http.StatusBadRequest, "invalid_request", `"input" must be an object`)
		}
		p.input = v
	}
	dur := 0
	if v, ok := raw["duration_s"]; ok && string(v) != "null" {
		if json.Unmarshal(v, &dur) != nil {
			return nil, errorResponse(http.StatusBadRequest, "invalid_request", `"duration_s" must be an integer`)
		}
		if dur < 1 || dur > 60 {
			return nil, errorResponse(http.StatusUnprocessableEntity, "model_input_invalid", `"duration_s" must be between 1 and 60`)
		}
	}
	switch {
	case videoModels[p.model]:
		if dur == 0 {
			dur = defaultDurationS
		}
		p.durationS = dur
		p.cost = int64(videoCostPerSecond * dur)
	case imageModels[p.model] || strings.HasPrefix(p.model, "test-"):
		p.durationS = dur
		p.cost = imageCost
	default:
		return nil, errorResponse(http.StatusUnprocessableEntity, "model_input_invalid", "unknown model "+strconv.Quote(p.model))
	}
	return p, nil
}

// stringField reads raw[name] as a string; false if absent or not a string.
func stringField(raw map[string]json.RawMessage, name string, dst *string) bool {
	v, ok := raw[name]
	return ok && json.Unmarshal(v, dst) == nil
}

// createStatus is the dialect's status for a created generation.
func (s *Server) createStatus() int {
	switch s.cfg.dialect {
	case DialectRealm, DialectPatomic:
		return http.StatusCreated
	case DialectRelaystation, DialectClipia:
		return http.StatusOK
	}
	return http.StatusAccepted
}

// createGeneration validates, charges and creates; the charge and the
// generation appear together or not at all.
func (s *Server) createGeneration(r *http.Request, body []byte, apiKey, idemKey string) *response {
	p, bad := parseParams(r, body)
	if bad != nil {
		return bad
	}
	sum := sha256.Sum256(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := s.accounts[apiKey]
	if acct == nil || acct.credits < p.cost {
		return errorResponse(http.StatusPaymentRequired, "insufficient_credits",
			"this generation costs "+strconv.FormatInt(p.cost, 10)+" credits")
	}
	now := s.cfg.clock.Now()
	g := &generation{
		id: newID("gen_"), requestID: newID("req_"), apiKey: apiKey,
		model: p.model, prompt: p.prompt, durationS: p.durationS, input: p.input,
		webhookURL: p.webhookURL, cost: p.cost, createdAt: now, outSize: s.cfg.outputSize,
	}
	acct.credits -= p.cost
	s.gens[g.id] = g
	s.genOrder = append(s.genOrder, g)
	s.charges = append(s.charges, Charge{
		APIKey: apiKey, IdempotencyKey: idemKey, GenerationID: g.id,
		Credits: p.cost, BodySHA256: hex.EncodeToString(sum[:]), At: now,
	})
	return jsonResponse(s.createStatus(), s.viewLocked(g, now))
}

func (s *Server) estimate(r *http.Request, body []byte) *response {
	p, bad := parseParams(r, body)
	if bad != nil {
		return bad
	}
	return jsonResponse(http.StatusOK, map[string]int64{"credits": p.cost})
}

func (s *Server) get(id string) *response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gens[id]
	if g == nil {
		return errorResponse(http.StatusNotFound, "not_found", "no generation "+strconv.Quote(id))
	}
	s.dispatchWebhooksLocked()
	now := s.cfg.clock.Now()
	resp := jsonResponse(http.StatusOK, s.viewLocked(g, now))
	if !terminal(g.status(now, &s.cfg)) {
		resp.header.Set("Retry-After", strconv.FormatInt(s.pollHintLocked(g, now), 10))
	}
	return resp
}

// pollHintLocked is the Retry-After, in seconds, of a GET of g while it is
// not terminal (see WithPollHint).
func (s *Server) pollHintLocked(g *generation, now time.Time) int64 {
	if d := s.cfg.pollHint; d >= 0 {
		return int64((d + time.Second - 1) / time.Second)
	}
	return int64(max(g.untilNext(now, &s.cfg), 0) / time.Second)
}

// cancelGeneration cancels apiKey's generation id: while queued it is refunded,
// while processing it stays charged, once terminal it answers 409
// generation_terminal. Canceling a canceled generation answers it again.
func (s *Server) cancelGeneration(id, apiKey string) *response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gens[id]
	if g == nil || g.apiKey != apiKey {
		return errorResponse(http.StatusNotFound, "not_found", "no generation "+strconv.Quote(id))
	}
	now := s.cfg.clock.Now()
	switch g.status(now, &s.cfg) {
	case "canceled":
	case "succeeded", "failed":
		return errorResponse(http.StatusConflict, "generation_terminal",
			"the generation is already "+g.status(now, &s.cfg)+"; nothing to cancel")
	case "queued":
		if a := s.accounts[g.apiKey]; a != nil {
			a.credits += g.cost
		}
		s.refunds = append(s.refunds, Refund{APIKey: g.apiKey, GenerationID: g.id, Credits: g.cost, At: now})
		g.cost = 0
		g.canceledAt = now
	default: // processing: the work has started and stays charged
		g.canceledAt = now
	}
	return jsonResponse(http.StatusOK, s.viewLocked(g, now))
}

// Generation returns the generation's current JSON view, as GET would.
func (s *Server) Generation(id string) (map[string]any, bool) {
	s.mu.Lock()
	g := s.gens[id]
	var b []byte
	if g != nil {
		b, _ = json.Marshal(s.viewLocked(g, s.cfg.clock.Now()))
	}
	s.mu.Unlock()
	if g == nil {
		return nil, false
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil, false
	}
	return m, true
}

func itoa(n int) string { return strconv.Itoa(n) }
