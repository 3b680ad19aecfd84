package safegen

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeErrorBody(t *testing.T) {
	huge := strings.Repeat("x", 10<<20)
	tests := []struct {
		name, ct, body      string
		typ, code, msgStart string
	}{
		{"contract JSON", "application/json", `{"error":{"type":"invalid_request_error","code":"invalid_request","message":"prompt is required"}}`, "invalid_request_error", "invalid_request", "prompt is required"},
		{"top-level fields", "application/json", `{"code":"not_found","message":"no such generation"}`, "", "not_found", "no such generation"},
		{"error as a string", "application/json", `{"error":"bad thing"}`, "", "", "bad thing"},
		{"HTML page", "text/html", `<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>`, "", "", "non-JSON error page: 502 Bad Gateway"},
		{"HTML without type", "", `<!DOCTYPE html><html><body>oops</body></html>`, "", "", "non-JSON error page"},
		{"empty", "application/json", ``, "", "", ""},
		{"whitespace", "", "  \n ", "", "", ""},
		{"truncated JSON", "application/json", `{"error":{"code":"internal_er`, "", "", "malformed JSON error body"},
		{"plain text", "text/plain", "upstream connect error", "", "", "non-JSON error body: upstream connect error"},
		{"invalid UTF-8 and controls", "application/json", "{\"error\":{\"code\":\"x\",\"message\":\"a\xffb\\u0007c\"}}", "", "x", "a?b c"},
		{"huge", "text/plain", huge, "", "", "non-JSON error body: xxxx"},
		{"wrong JSON type", "application/json", `{"error":{"code":12}}`, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, code, msg := decodeErrorBody(tt.ct, []byte(tt.body))
			assert.Equal(t, tt.typ, typ)
			assert.Equal(t, tt.code, code)
			assert.True(t, strings.HasPrefix(msg, tt.msgStart), "message %q", msg)
			assert.LessOrEqual(t, len(msg), 400, "messages are bounded")
			assert.NotContains(t, msg, "\n")
		})
	}
}

func TestAPIErrorFromAnyBodyIsOneLine(t *testing.T) {
	bodies := [][]byte{nil, []byte("<html>\n<title>x\ny</title>"), []byte("{"), []byte(strings.Repeat("é", 100000)), []byte("\x00\x01\xff")}
	for _, b := range bodies {
		e := newAPIError("POST", "/v1/generations", 502, http.Header{"X-Request-Id": {"req_1"}}, b)
		e.IdempotencyKey = "k1"
		e.Attempts = 4
		s := e.Error()
		assert.NotContains(t, s, "\n")
		assert.True(t, strings.HasPrefix(s, "POST /v1/generations: 502"), s)
		assert.Contains(t, s, "request_id=req_1")
		assert.Contains(t, s, "key=k1")
		assert.Contains(t, s, "attempts=4")
		assert.LessOrEqual(t, len(e.Body), maxErrorBody)
		assert.NotEmpty(t, e.Message)
	}
}

func TestAPIErrorIsAcrossDialects(t *testing.T) {
	tests := []struct {
		status int
		code   string
		msg    string
		is     []error
		isNot  []error
	}{
		{409, "idempotency_key_reuse", "", []error{ErrIdempotencyKeyReuse}, []error{ErrRequestInProgress, ErrInvalidRequest}},
		{409, "IDEMPOTENCY_CONFLICT", "", []error{ErrIdempotencyKeyReuse}, []error{ErrRequestInProgress}},
		{409, "idempotency_key_conflict", "", []error{ErrIdempotencyKeyReuse}, nil},
		{409, "Request_In_Progress", "", []error{ErrRequestInProgress}, []error{ErrIdempotencyKeyReuse}},
		{422, "", "Idempotency-Key is already used with a different payload", []error{ErrIdempotencyKeyReuse}, []error{ErrInvalidRequest}},
		{422, "idempotency_key_reuse", "", []error{ErrIdempotencyKeyReuse}, []error{ErrInvalidRequest}},
		{422, "unprocessable_content", "Idempotency-Key reused with another request body", []error{ErrIdempotencyKeyReuse}, []error{ErrInvalidRequest}},
		{422, "model_input_invalid", "bad duration", []error{ErrInvalidRequest}, []error{ErrIdempotencyKeyReuse}},
		{429, "rate_limit_exceeded", "", []error{ErrRateLimited}, []error{ErrQuotaExceeded}},
		{429, "quota_exceeded", "", []error{ErrRateLimited, ErrQuotaExceeded}, nil},
		{429, "anomaly_paused", "", []error{ErrRateLimited}, nil},
		{400, "invalid_idempotency_key", "", []error{ErrInvalidIdempotencyKey}, []error{ErrInvalidRequest}},
		{503, "", "", []error{ErrServer}, []error{ErrRateLimited}},
		{409, "generation_terminal", "", []error{ErrGenerationTerminal}, []error{ErrIdempotencyKeyReuse, ErrRequestInProgress, ErrInvalidRequest}},
		{409, "GENERATION_TERMINAL", "", []error{ErrGenerationTerminal}, nil},
		{400, "generation_terminal", "", nil, []error{ErrGenerationTerminal}},
		{409, "request_in_progress", "", nil, []error{ErrGenerationTerminal}},
	}
	for _, tt := range tests {
		e := &APIError{StatusCode: tt.status, Code: tt.code, Message: tt.msg}
		for _, s := range tt.is {
			assert.True(t, errors.Is(e, s), "%d %s should be %v", tt.status, tt.code, s)
		}
		for _, s := range tt.isNot {
			assert.False(t, errors.Is(e, s), "%d %s should not be %v", tt.status, tt.code, s)
		}
	}
}

func TestRetryErrorUnwraps(t *testing.T) {
	cause := errors.New("connection reset")
	re := &RetryError{Method: "POST", Path: "/v1/generations", IdempotencyKey: "k", Attempts: 4, Reason: "transport failure", Err: cause, stopped: ErrRetryBudgetExhausted}
	require.ErrorIs(t, re, cause)
	require.ErrorIs(t, re, ErrRetryBudgetExhausted)
	assert.Equal(t, "POST /v1/generations: transport failure: connection reset (key=k, attempts=4)", re.Error())
}

func TestDownloadErrorUnwraps(t *testing.T) {
	apiErr := &APIError{Method: "GET", Path: "https://cdn/x", StatusCode: 503}
	de := &DownloadError{GenerationID: "gen_1", Path: "out/a.mp4", Reason: "retries exhausted", Attempts: 4, Fetched: 10,
		Err: apiErr, stopped: ErrRetryBudgetExhausted}
	require.ErrorIs(t, de, ErrServer)
	require.ErrorIs(t, de, ErrRetryBudgetExhausted)
	var got *APIError
	require.ErrorAs(t, de, &got)
	assert.Equal(t, "safegen: download of gen_1 to out/a.mp4: retries exhausted: GET https://cdn/x: 503 (attempts=0) (attempts=4, fetched=10)", de.Error())
	require.ErrorIs(t, &DownloadError{Err: ErrOutputCorrupt}, ErrOutputCorrupt)
}

func TestAPIErrorMessageShape(t *testing.T) {
	e := &APIError{Method: "POST", Path: "/v1/generations", StatusCode: 429, Code: "rate_limit_exceeded", Message: "slow down",
		RequestID: "req_1", IdempotencyKey: "k", Attempts: 3, RetryAfter: 2 * time.Second}
	assert.Equal(t, "POST /v1/generations: 429 rate_limit_exceeded: slow down (request_id=req_1, key=k, retry_after=2s, attempts=3)", e.Error())
}
