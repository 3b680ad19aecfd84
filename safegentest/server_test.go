package safegentest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAuthAndScopes(t *testing.T) {
	srv := NewServer(t)
	readKey := srv.NewAPIKey(ScopeRead)
	writeKey := srv.NewAPIKey(ScopeWrite)
	bothKey := srv.NewAPIKey(ScopeRead, ScopeWrite)
	c := client(t)

	tests := []struct {
		name   string
		auth   string
		method string
		path   string
		want   int
		code   string
	}{
		{"missing header", "", "GET", "/v1/account", 401, "invalid_api_key"},
		{"unknown key", "Bearer sk_test_nope", "GET", "/v1/account", 401, "invalid_api_key"},
		{"wrong scheme", "Basic " + srv.APIKey, "GET", "/v1/account", 401, "invalid_api_key"},
		{"no space", "Bearer" + srv.APIKey, "GET", "/v1/account", 401, "invalid_api_key"},
		{"two tokens", "Bearer " + srv.APIKey + " extra", "GET", "/v1/account", 401, "invalid_api_key"},
		{"lower-case scheme", "bearer " + srv.APIKey, "GET", "/v1/account", 200, ""},
		{"full key creates", "Bearer " + srv.APIKey, "POST", "/v1/generations", 202, ""},
		{"read key cannot create", "Bearer " + readKey, "POST", "/v1/generations", 403, "insufficient_scope"},
		{"read key estimates", "Bearer " + readKey, "POST", "/v1/generations/estimate", 200, ""},
		{"read key reads account", "Bearer " + readKey, "GET", "/v1/account", 200, ""},
		{"write key cannot read", "Bearer " + writeKey, "GET", "/v1/account", 403, "insufficient_scope"},
		{"write key cannot estimate", "Bearer " + writeKey, "POST", "/v1/generations/estimate", 403, "insufficient_scope"},
		{"write key creates", "Bearer " + writeKey, "POST", "/v1/generations", 202, ""},
		{"both scopes create", "Bearer " + bothKey, "POST", "/v1/generations", 202, ""},
		{"X-API-Key ignored by default", "", "GET", "/v1/account", 401, "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method == "POST" {
				body = bodyA
			}
			r := must(t, c, srv, tt.method, tt.path, body,
				"Authorization", tt.auth, "Content-Type", "application/json", "X-API-Key", srv.APIKey)
			assert.Equal(t, tt.want, r.Status, "%s", r.Body)
			if tt.code != "" {
				assert.Equal(t, tt.code, errCode(t, r))
			}
		})
	}
	assert.Equal(t, 3, srv.Ledger().Total())
}

func TestInsufficientCredits(t *testing.T) {
	srv := NewServer(t, WithCredits(13))
	c := client(t)

	r := create(t, c, srv, "k1", bodyA) // 12 credits
	require.Equal(t, http.StatusAccepted, r.Status)
	r = create(t, c, srv, "k2", bodyB)
	assert.Equal(t, http.StatusPaymentRequired, r.Status)
	assert.Equal(t, "insufficient_credits", errCode(t, r))
	assert.Equal(t, 1, srv.Ledger().Total(), "nothing created")

	srv.SetCredits(srv.APIKey, 100)
	r = create(t, c, srv, "k2", bodyB)
	assert.Equal(t, http.StatusPaymentRequired, r.Status, "a 402 is stored under its key")
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))

	r = create(t, c, srv, "k3", bodyB)
	assert.Equal(t, http.StatusAccepted, r.Status)
	acct := get(t, c, srv, "/v1/account")
	assert.Equal(t, float64(88), decode(t, acct)["credits"])
	assert.Equal(t, int64(24), srv.Ledger().Credits(srv.APIKey))
}

func TestEstimateAndCost(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	tests := []struct {
		body string
		want float64
	}{
		{`{"model":"veo-3-1-fast","prompt":"p"}`, 12},
		{`{"model":"veo-3-1","prompt":"p","duration_s":10}`, 30},
		{`{"model":"img-2","prompt":"p"}`, 1},
		{`{"model":"img-2-hd","prompt":"p"}`, 1},
		{`{"model":"test-anything","prompt":"p"}`, 1},
	}
	for _, tt := range tests {
		r := must(t, c, srv, http.MethodPost, "/v1/generations/estimate", tt.body,
			"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json; charset=utf-8")
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		assert.Equal(t, tt.want, decode(t, r)["credits"], tt.body)

		cr := create(t, c, srv, "", tt.body)
		require.Equal(t, http.StatusAccepted, cr.Status)
		assert.Equal(t, tt.want, decode(t, cr)["cost"], tt.body)
	}
	assert.Equal(t, len(tests), srv.Ledger().Total(), "estimates never charge")
}

func TestGenerationLifecycle(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithGenerationTiming(50*time.Millisecond, 100*time.Millisecond))
	c := client(t)

	r := create(t, c, srv, "k", bodyA)
	require.Equal(t, http.StatusAccepted, r.Status)
	g := decode(t, r)
	id := g["id"].(string)
	assert.True(t, strings.HasPrefix(id, "gen_"))
	assert.True(t, strings.HasPrefix(g["request_id"].(string), "req_"))
	assert.Equal(t, "queued", g["status"])
	assert.Equal(t, "veo-3-1-fast", g["model"])
	assert.Equal(t, "a cat", g["prompt"])
	assert.Equal(t, t0.Format(time.RFC3339), g["created_at"])
	assert.Nil(t, g["output"])

	fr := create(t, c, srv, "", `{"model":"img-2","prompt":"please [fail]"}`)
	failID := decode(t, fr)["id"].(string)

	status := func(id string) map[string]any {
		r := get(t, c, srv, "/v1/generations/"+id)
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		return decode(t, r)
	}
	clk.Advance(50 * time.Millisecond)
	assert.Equal(t, "processing", status(id)["status"])
	clk.Advance(100 * time.Millisecond)
	done := status(id)
	assert.Equal(t, "succeeded", done["status"])
	assert.NotEmpty(t, done["output"].(map[string]any)["url"])

	failed := status(failID)
	assert.Equal(t, "failed", failed["status"])
	assert.Equal(t, "generation_failed", failed["error"].(map[string]any)["code"])

	dbg, ok := srv.Generation(id)
	require.True(t, ok)
	assert.Equal(t, "succeeded", dbg["status"])
	_, ok = srv.Generation("gen_nope")
	assert.False(t, ok)
}

func TestBadInput(t *testing.T) {
	srv := NewServer(t, WithMaxBodyBytes(1024))
	c := client(t)
	auth := "Bearer " + srv.APIKey
	tests := []struct {
		name   string
		method string
		path   string
		ctype  string
		body   string
		want   int
		code   string
	}{
		{"malformed JSON", "POST", "/v1/generations", "application/json", `{"model":`, 400, "invalid_request"},
		{"not an object", "POST", "/v1/generations", "application/json", `[1,2]`, 400, "invalid_request"},
		{"two objects", "POST", "/v1/generations", "application/json", bodyA + bodyA, 400, "invalid_request"},
		{"empty body", "POST", "/v1/generations", "application/json", ``, 400, "invalid_request"},
		{"wrong content type", "POST", "/v1/generations", "text/plain", bodyA, 400, "invalid_request"},
		{"no content type", "POST", "/v1/generations", "", bodyA, 400, "invalid_request"},
		{"missing model", "POST", "/v1/generations", "application/json", `{"prompt":"p"}`, 400, "invalid_request"},
		{"missing prompt", "POST", "/v1/generations", "application/json", `{"model":"img-2"}`, 400, "invalid_request"},
		{"model not a string", "POST", "/v1/generations", "application/json", `{"model":1,"prompt":"p"}`, 400, "invalid_request"},
		{"input not an object", "POST", "/v1/generations", "application/json", `{"model":"img-2","prompt":"p","input":3}`, 400, "invalid_request"},
		{"fractional duration", "POST", "/v1/generations", "application/json", `{"model":"veo-3-1","prompt":"p","duration_s":4.5}`, 400, "invalid_request"},
		{"duration 0", "POST", "/v1/generations", "application/json", `{"model":"veo-3-1","prompt":"p","duration_s":0}`, 422, "model_input_invalid"},
		{"duration 61", "POST", "/v1/generations", "application/json", `{"model":"veo-3-1","prompt":"p","duration_s":61}`, 422, "model_input_invalid"},
		{"unknown model", "POST", "/v1/generations", "application/json", `{"model":"gpt-9","prompt":"p"}`, 422, "model_input_invalid"},
		{"oversized body", "POST", "/v1/generations", "application/json", `{"model":"img-2","prompt":"` + strings.Repeat("x", 2000) + `"}`, 413, "invalid_request"},
		{"estimate malformed", "POST", "/v1/generations/estimate", "application/json", `nope`, 400, "invalid_request"},
		{"unknown path", "GET", "/v2/things", "", ``, 404, "not_found"},
		{"root", "GET", "/", "", ``, 404, "not_found"},
		{"nested id", "GET", "/v1/generations/a/b", "", ``, 404, "not_found"},
		{"unknown generation", "GET", "/v1/generations/gen_nope", "", ``, 404, "not_found"},
		{"GET on create", "GET", "/v1/generations", "", ``, 405, "method_not_allowed"},
		{"DELETE generation", "DELETE", "/v1/generations/gen_x", "", ``, 405, "method_not_allowed"},
		{"POST account", "POST", "/v1/account", "application/json", `{}`, 405, "method_not_allowed"},
		{"GET estimate", "GET", "/v1/generations/estimate", "", ``, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := must(t, c, srv, tt.method, tt.path, tt.body, "Authorization", auth, "Content-Type", tt.ctype)
			assert.Equal(t, tt.want, r.Status, "%s", r.Body)
			assert.Equal(t, tt.code, errCode(t, r))
			assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
			assert.True(t, strings.HasPrefix(r.Header.Get("X-Request-Id"), "req_"))
		})
	}
	assert.Equal(t, 0, srv.Ledger().Total())
}

func TestRateLimitPerMinute(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithRateLimit(3, 0))
	c := client(t)

	for i := range 3 {
		r := get(t, c, srv, "/v1/account")
		require.Equal(t, http.StatusOK, r.Status)
		assert.Equal(t, "3", r.Header.Get("RateLimit-Limit"))
		assert.Equal(t, strconv.Itoa(2-i), r.Header.Get("RateLimit-Remaining"))
		assert.Equal(t, "60", r.Header.Get("RateLimit-Reset"))
		assert.Empty(t, r.Header.Get("X-RateLimit-Reset"), "only rimp sends it")
	}
	clk.Advance(20 * time.Second)
	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "rate_limit_exceeded", errCode(t, r))
	assert.Equal(t, "40", r.Header.Get("Retry-After"))
	assert.Equal(t, "0", r.Header.Get("RateLimit-Remaining"))
	assert.Equal(t, "40", r.Header.Get("RateLimit-Reset"))
	assert.Equal(t, 0, srv.Ledger().Total())

	clk.Advance(39*time.Second + 500*time.Millisecond)
	r = create(t, c, srv, "k", bodyA)
	assert.Equal(t, "1", r.Header.Get("Retry-After"), "rounded up, never 0")

	clk.Advance(time.Second)
	r = create(t, c, srv, "k", bodyA)
	assert.Equal(t, http.StatusAccepted, r.Status, "a 429 is not stored: the key runs now")
	assert.Equal(t, 1, srv.Ledger().Total())

	other := srv.NewAPIKey()
	r = must(t, c, srv, http.MethodGet, "/v1/account", "", "Authorization", "Bearer "+other)
	assert.Equal(t, http.StatusOK, r.Status, "limits are per API key")
}

func TestRateLimitConcurrent(t *testing.T) {
	srv := NewServer(t, WithRateLimit(0, 1), WithWorkTime(300*time.Millisecond))
	c := client(t)
	done := make(chan result, 1)
	go func() {
		r, _ := send(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
			"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", "k")
		done <- r
	}()
	waitClaimed(t, srv)
	r := get(t, c, srv, "/v1/account")
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "rate_limit_exceeded", errCode(t, r))
	assert.Equal(t, "1", r.Header.Get("Retry-After"))
	assert.Equal(t, http.StatusAccepted, (<-done).Status)
	assert.Equal(t, http.StatusOK, get(t, c, srv, "/v1/account").Status)
}

func TestLedger(t *testing.T) {
	l := Ledger{Charges: []Charge{
		{APIKey: "a", IdempotencyKey: "k1", Credits: 3},
		{APIKey: "a", IdempotencyKey: "k1", Credits: 3},
		{APIKey: "b", IdempotencyKey: "k1", Credits: 1},
		{APIKey: "a", IdempotencyKey: "", Credits: 2},
		{APIKey: "a", IdempotencyKey: "", Credits: 2},
		{APIKey: "b", IdempotencyKey: "k2", Credits: 5},
	}}
	assert.Equal(t, 6, l.Total())
	assert.Equal(t, map[string]int{"a": 4, "b": 2}, l.ByAPIKey())
	assert.Equal(t, map[string]int{"k1": 3, "": 2, "k2": 1}, l.ByIdempotencyKey())
	assert.Equal(t, []string{"k1"}, l.Duplicates())
	assert.Equal(t, int64(10), l.Credits("a"))
	assert.Equal(t, int64(6), l.Credits("b"))
	assert.Equal(t, int64(0), l.Credits("c"))
}

func TestManualClock(t *testing.T) {
	c := NewManualClock(t0)
	assert.Equal(t, t0, c.Now())
	c.Advance(time.Hour)
	assert.Equal(t, t0.Add(time.Hour), c.Now())
	c.Set(t0)
	assert.Equal(t, t0, c.Now())
}

func TestListen(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", WithRateLimit(0, 0))
	require.NoError(t, err)
	defer srv.Close()
	c := client(t)
	r := create(t, c, srv, "listen-1", `{"model":"img-2","prompt":"x"}`)
	require.Equal(t, http.StatusAccepted, r.Status)
	_, err = Listen("256.0.0.1:bad")
	require.Error(t, err)
}

func TestRecordedRequestCause(t *testing.T) {
	for _, tc := range []struct {
		r    RecordedRequest
		want string
	}{
		{RecordedRequest{Status: 202}, ""},
		{RecordedRequest{Status: 409}, "409 in progress"},
		{RecordedRequest{Fault: FaultLatency, Status: 409}, "409 in progress"},
		{RecordedRequest{Fault: FaultLatency, Status: 202}, ""},
		{RecordedRequest{Fault: FaultStatus, Status: 503}, "503"},
		{RecordedRequest{Fault: FaultRateLimit, Status: 429}, "429"},
		{RecordedRequest{Fault: FaultReset}, "reset"},
		{RecordedRequest{Fault: FaultDropAfterCommit, Status: 202}, "dropped after commit"},
		{RecordedRequest{Fault: FaultCut, Status: 200}, "cut mid-body"},
		{RecordedRequest{Fault: FaultTrickle, Status: 200}, ""},
	} {
		assert.Equal(t, tc.want, tc.r.Cause(), "%+v", tc.r)
	}
}
