package safegen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GenerationsService calls the generation endpoints. Get it from
// Client.Generations.
type GenerationsService struct {
	c *Client
}

// GenerationCreateParams is the body of a create call. Model and Prompt are
// required.
type GenerationCreateParams struct {
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	// DurationS is the clip length in seconds (video models); 0 omits it.
	DurationS int `json:"duration_s,omitempty"`
	// Input holds model-specific inputs.
	Input map[string]any `json:"input,omitempty"`
	// WebhookURL receives a signed event when the generation finishes.
	WebhookURL string `json:"webhook_url,omitempty"`
}

func (p *GenerationCreateParams) validate() error {
	switch {
	case p == nil:
		return fmt.Errorf("%w: nil params", ErrInvalidRequest)
	case strings.TrimSpace(p.Model) == "":
		return fmt.Errorf("%w: model is required", ErrInvalidRequest)
	case strings.TrimSpace(p.Prompt) == "":
		return fmt.Errorf("%w: prompt is required", ErrInvalidRequest)
	case p.DurationS < 0:
		return fmt.Errorf("%w: duration_s must not be negative", ErrInvalidRequest)
	}
	if p.WebhookURL != "" {
		u, err := url.Parse(p.WebhookURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%w: webhook_url must be an absolute http(s) URL", ErrInvalidRequest)
		}
	}
	return nil
}

// GenerationStatus is where a generation is in its life:
// queued → processing → succeeded | failed | canceled.
type GenerationStatus string

// The statuses of CONTRACT.md.
const (
	StatusQueued     GenerationStatus = "queued"
	StatusProcessing GenerationStatus = "processing"
	StatusSucceeded  GenerationStatus = "succeeded"
	StatusFailed     GenerationStatus = "failed"
	StatusCanceled   GenerationStatus = "canceled"
)

// Terminal reports whether the status is final.
func (s GenerationStatus) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// Generation is one generation as the server describes it.
type Generation struct {
	ID        string           `json:"id"`
	RequestID string           `json:"request_id,omitempty"`
	Status    GenerationStatus `json:"status"`
	Model     string           `json:"model,omitempty"`
	Prompt    string           `json:"prompt,omitempty"`
	// DurationS is the clip length in seconds the generation was made with
	// (video models); 0 when the server sent none.
	DurationS int `json:"duration_s,omitempty"`
	// Cost is the price in credits.
	Cost float64 `json:"cost"`
	// CreatedAt is zero when the server sent none or an unreadable one.
	CreatedAt time.Time         `json:"created_at"`
	Output    *GenerationOutput `json:"output,omitempty"`
	Error     *GenerationError  `json:"error,omitempty"`

	// Meta describes the call that returned this generation; it is not
	// part of the server's JSON.
	Meta ResponseMeta `json:"-"`
}

// GenerationOutput is where a succeeded generation's result lives: a signed
// link valid until ExpiresAt, and what the bytes behind it must be.
type GenerationOutput struct {
	// URL is a signed link; past ExpiresAt it answers 403 url_expired and
	// a fresh Get of the generation returns a new one for the same bytes.
	URL string `json:"url"`
	// Size is the output's length in bytes; 0 when the server sent none.
	Size int64 `json:"size,omitempty"`
	// SHA256 is the hex SHA-256 of the output's bytes; empty when the
	// server sent none.
	SHA256 string `json:"sha256,omitempty"`
	// ContentType is the output's media type, for example video/mp4.
	ContentType string `json:"content_type,omitempty"`
	// ExpiresAt is when URL stops working; zero when the server sent none.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// GenerationError is why a generation failed.
type GenerationError struct {
	Type    string `json:"type,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// UnmarshalJSON decodes a generation, tolerating a created_at that is not
// RFC 3339 (left zero) rather than failing the whole call.
func (g *Generation) UnmarshalJSON(b []byte) error {
	type plain Generation
	err := json.Unmarshal(b, (*plain)(g))
	var pe *time.ParseError
	if err == nil || !errors.As(err, &pe) {
		return err
	}
	var aux struct {
		*plain
		CreatedAt json.RawMessage `json:"created_at"`
	}
	*g = Generation{}
	aux.plain = (*plain)(g)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	return nil
}

// Estimate is the price of a parameter set.
type Estimate struct {
	Credits float64      `json:"credits"`
	Meta    ResponseMeta `json:"-"`
}

// Account is the account's balance.
type Account struct {
	Credits float64      `json:"credits"`
	Meta    ResponseMeta `json:"-"`
}

// Create starts a generation. It is billable: the call gets one idempotency
// key before its first attempt (a fresh UUID v4, or WithIdempotencyKey) and
// every retry re-sends the same key and the same bytes, so a retried create
// is billed at most once. With a journal, the intent is recorded first.
func (s *GenerationsService) Create(ctx context.Context, params *GenerationCreateParams, opts ...RequestOption) (*Generation, error) {
	if err := params.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return s.generation(ctx, request{op: OpCreate, method: http.MethodPost, path: "/v1/generations", body: body, params: params, keyed: true}, opts, nil)
}

// generation makes one observed call that answers a Generation; then, if
// not nil, runs after on it under the call's context.
func (s *GenerationsService) generation(ctx context.Context, r request, opts []Option, after func(context.Context, *Generation)) (*Generation, error) {
	var g *Generation
	_, err := s.c.call(ctx, r, opts, func(ctx context.Context, resp *response) (err error) {
		if g, err = decodeGeneration(resp); err == nil && after != nil {
			after(ctx, g)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Get returns one generation. It is safe: retried freely, never keyed.
func (s *GenerationsService) Get(ctx context.Context, id string, opts ...RequestOption) (*Generation, error) {
	g, _, err := s.get(ctx, id, opts)
	return g, err
}

// get is Get, with the response for its headers (the poll hint).
func (s *GenerationsService) get(ctx context.Context, id string, opts []Option) (*Generation, *response, error) {
	if id == "" {
		return nil, nil, fmt.Errorf("%w: empty generation id", ErrInvalidRequest)
	}
	var g *Generation
	resp, err := s.c.call(ctx, request{op: OpGet, method: http.MethodGet, path: "/v1/generations/" + url.PathEscape(id)}, opts,
		func(_ context.Context, resp *response) (err error) {
			g, err = decodeGeneration(resp)
			return err
		})
	if err != nil {
		return nil, nil, err
	}
	return g, resp, nil
}

// Cancel asks the server to stop generation id and returns it, now
// canceled. A generation canceled while queued is refunded; once processing
// it stays charged. A generation already succeeded, failed or canceled
// elsewhere answers 409 generation_terminal: errors.Is(err,
// ErrGenerationTerminal). Cancel is not billable and the contract makes it
// idempotent, so it carries no idempotency key, never touches the journal,
// and is retried like a safe call.
func (s *GenerationsService) Cancel(ctx context.Context, id string, opts ...RequestOption) (*Generation, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty generation id", ErrInvalidRequest)
	}
	var refund func(context.Context, *Generation)
	if s.c.spend != nil {
		refund = func(ctx context.Context, g *Generation) {
			s.c.spend.refund(ctx, &s.c.s, g) // a refunded cancel gives the credits back
		}
	}
	return s.generation(ctx, request{op: OpCancel, method: http.MethodPost, path: "/v1/generations/" + url.PathEscape(id) + "/cancel"}, opts, refund)
}

// Estimate returns the price of params. It never charges, so it carries no
// key and is retried like a safe call.
func (s *GenerationsService) Estimate(ctx context.Context, params *GenerationCreateParams, opts ...RequestOption) (*Estimate, error) {
	if err := params.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	e := &Estimate{}
	resp, err := s.c.call(ctx, request{op: OpEstimate, method: http.MethodPost, path: "/v1/generations/estimate", body: body}, opts,
		func(_ context.Context, resp *response) error { return decodeBody(resp, e) })
	if err != nil {
		return nil, err
	}
	e.Meta = resp.meta
	return e, nil
}

// Wait polls the generation until its status is terminal and returns it,
// polling at WithPollInterval's pace (0.5 s growing to 5 s by default, with
// jitter), never sooner than the server's poll hint (Retry-After on a
// generation not yet terminal, bounded by WithMaxRetryAfter). A verified
// webhook event handed to Notify ends the wait at once: Wait returns the
// event's generation when it is terminal (its Meta is then zero: no call
// returned it), and polls again at once otherwise. The context bounds the
// wait; a failed or canceled generation is returned without error (check
// Status and Error).
func (s *GenerationsService) Wait(ctx context.Context, id string, opts ...RequestOption) (g *Generation, err error) {
	if ctx == nil {
		return nil, errors.New("safegen: nil context")
	}
	ctx, ob := s.c.startCall(ctx, OpWait, "", "", opts)
	defer func() { ob.finish(ResponseMeta{}, err) }()
	return s.wait(ctx, id, opts)
}

// wait is Wait, observed as one call.
func (s *GenerationsService) wait(ctx context.Context, id string, opts []Option) (*Generation, error) {
	cs, err := s.c.callSettings(opts)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, fmt.Errorf("%w: empty generation id", ErrInvalidRequest)
	}
	w := s.c.waiters.add(id)
	defer s.c.waiters.remove(w)
	if g := s.c.waiters.terminal(id); g != nil {
		return g, nil
	}
	interval := cs.pollInterval
	for {
		g, resp, err := s.get(ctx, id, opts)
		if err != nil {
			return nil, err
		}
		if g.Status.Terminal() {
			return g, nil
		}
		wait := jitter(interval)
		if hint, ok := retryAfter(resp.header, resp.status, cs.clock.Now()); ok {
			wait = max(wait, min(hint, cs.maxRetryAfter))
		}
		woken, err := s.c.waiters.sleep(ctx, w, cs.clock, wait)
		if err != nil {
			return nil, fmt.Errorf("safegen: waiting for generation %s (last status %s): %w", id, g.Status, err)
		}
		if woken {
			if t := s.c.waiters.terminal(id); t != nil {
				return t, nil
			}
			continue // a non-terminal event: poll now
		}
		interval = min(cs.pollMax, time.Duration(float64(interval)*1.5))
	}
}

// jitter returns a wait drawn uniformly between 80 % and 100 % of d.
func jitter(d time.Duration) time.Duration {
	if spread := d / 5; spread > 0 {
		return d - rand.N(spread+1)
	}
	return d
}

// Account returns the balance left.
func (c *Client) Account(ctx context.Context, opts ...RequestOption) (*Account, error) {
	a := &Account{}
	resp, err := c.call(ctx, request{op: OpAccount, method: http.MethodGet, path: "/v1/account"}, opts,
		func(_ context.Context, resp *response) error { return decodeBody(resp, a) })
	if err != nil {
		return nil, err
	}
	a.Meta = resp.meta
	return a, nil
}

func decodeGeneration(resp *response) (*Generation, error) {
	g := &Generation{}
	// The usual answer without reflection (generation_decode.go); else
	// encoding/json without Generation.UnmarshalJSON (which would scan the
	// body twice), falling back to it only for an unreadable created_at.
	if !decodeGenerationFast(resp.body, g) {
		*g = Generation{}
		type plain Generation
		if err := json.Unmarshal(resp.body, (*plain)(g)); err != nil || len(resp.body) == 0 {
			*g = Generation{}
			if err := decodeBody(resp, g); err != nil {
				return nil, err
			}
		}
	}
	if g.ID == "" {
		return nil, fmt.Errorf("%w: %s: generation without an id (request_id=%s, key=%s)",
			ErrMalformedResponse, statusText(resp.status), resp.meta.RequestID, resp.meta.IdempotencyKey)
	}
	g.Meta = resp.meta
	if g.Meta.RequestID == "" {
		g.Meta.RequestID = g.RequestID
	}
	return g, nil
}

// decodeBody decodes a 2xx JSON body; an empty, HTML or broken body is an
// ErrMalformedResponse that still names the request id and key.
func decodeBody(resp *response, v any) error {
	if len(resp.body) == 0 {
		return fmt.Errorf("%w: %d with an empty body (request_id=%s, key=%s)",
			ErrMalformedResponse, resp.status, resp.meta.RequestID, resp.meta.IdempotencyKey)
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		var se *json.SyntaxError
		what := err.Error()
		if errors.As(err, &se) {
			what = fmt.Sprintf("not JSON at byte %d", se.Offset)
		}
		return fmt.Errorf("%w: %d: %s (content-type %q, request_id=%s, key=%s)", ErrMalformedResponse, resp.status,
			clean(what, 120), clean(resp.header.Get("Content-Type"), 60), resp.meta.RequestID, resp.meta.IdempotencyKey)
	}
	return nil
}
