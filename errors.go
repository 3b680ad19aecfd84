package safegen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinels matched with errors.Is. An *APIError matches the sentinel that
// its status and code mean, whatever the dialect spells the code.
var (
	// ErrIdempotencyKeyReuse: one key was sent with two different requests
	// (409 idempotency_key_reuse, Relaystation's IDEMPOTENCY_CONFLICT,
	// Patomic's idempotency_key_conflict, an IETF-style 422), or the journal
	// already holds the key or intent id with other bytes. A bug in the caller.
	ErrIdempotencyKeyReuse = errors.New("safegen: idempotency key reused with a different request")
	// ErrRequestInProgress: the first request under this key is still being
	// processed (409 request_in_progress). Retrying the same key later
	// returns the replay.
	ErrRequestInProgress = errors.New("safegen: request with this idempotency key is still in progress")
	// ErrRateLimited matches every 429, whatever its code.
	ErrRateLimited = errors.New("safegen: rate limited")
	// ErrQuotaExceeded: 429 quota_exceeded (rimp): the plan's quota is spent;
	// retrying does not help. It also matches ErrRateLimited.
	ErrQuotaExceeded = errors.New("safegen: quota exceeded")
	// ErrInvalidIdempotencyKey: the key is not 1 to 255 printable ASCII
	// characters (or the dialect's lower limit), found locally or by the server.
	ErrInvalidIdempotencyKey = errors.New("safegen: invalid idempotency key")
	// ErrInvalidRequest: 400 or 422 other than the idempotency cases, or
	// parameters the client rejected before sending.
	ErrInvalidRequest = errors.New("safegen: invalid request")
	// ErrAuthentication: 401 invalid_api_key or 403 insufficient_scope.
	ErrAuthentication = errors.New("safegen: authentication failed")
	// ErrInsufficientCredits: 402; top up, do not retry.
	ErrInsufficientCredits = errors.New("safegen: insufficient credits")
	// ErrNotFound: 404.
	ErrNotFound = errors.New("safegen: not found")
	// ErrServer matches every 5xx.
	ErrServer = errors.New("safegen: server error")
	// ErrRetryBudgetExhausted: the Client's own retry budget (a token bucket
	// shared by all its calls) is empty, so the call was not retried. It is
	// client-side: the server's last answer is wrapped beside it.
	ErrRetryBudgetExhausted = errors.New("safegen: client-side retry budget exhausted")
	// ErrRetryAfterTooLong: the server asked for a wait longer than the
	// configured bound (WithMaxRetryAfter); the *APIError carries the wait.
	ErrRetryAfterTooLong = errors.New("safegen: Retry-After exceeds the configured bound")
	// ErrIntentExpired: a journaled intent is older than the server's key
	// window, so it was not re-sent (it could bill twice). Reconcile it by
	// its request id.
	ErrIntentExpired = errors.New("safegen: journaled intent expired")
	// ErrResponseTooLarge: a success body exceeded the client's limit.
	ErrResponseTooLarge = errors.New("safegen: response body too large")
	// ErrMalformedResponse: a 2xx whose body could not be decoded.
	ErrMalformedResponse = errors.New("safegen: malformed response")
	// ErrGenerationTerminal: 409 generation_terminal: the generation already
	// succeeded, failed or was canceled, so there is nothing to cancel; read
	// it with Generations.Get.
	ErrGenerationTerminal = errors.New("safegen: generation already terminal")
	// ErrOutputCorrupt: a download's bytes do not match the output's size or
	// SHA-256 (or the server described another output). Nothing was written
	// at the destination path and the partial file was removed.
	ErrOutputCorrupt = errors.New("safegen: output corrupt")
	// ErrIdleTimeout: a download received no byte for the idle timeout
	// (WithIdleTimeout). The attempt is retried like a timeout; this is the
	// cause when the retries run out.
	ErrIdleTimeout = errors.New("safegen: download idle timeout")
)

// maxErrorBody bounds how much of an error body is read and kept.
const maxErrorBody = 64 << 10

// APIError is a non-2xx answer from the server, after the retries the
// policy allowed. It is matched with errors.As; errors.Is matches it against
// the sentinels above.
type APIError struct {
	// Method and Path are the request line (path without the host).
	Method, Path string
	// StatusCode is the HTTP status of the last attempt.
	StatusCode int
	// Type, Code and Message come from the error body when it is the
	// contract's JSON; Message holds a short text otherwise.
	Type, Code, Message string
	// RequestID is the server's X-Request-Id for the last attempt.
	RequestID string
	// IdempotencyKey is the key sent on every attempt ("" for safe methods).
	IdempotencyKey string
	// RetryAfter is the wait the server asked for (Retry-After and its
	// variants), zero when it asked for none.
	RetryAfter time.Duration
	// Attempts is how many attempts the call made.
	Attempts int
	// Body is a copy of the error body, at most 64 KiB.
	Body []byte
	// Header holds the last response's headers.
	Header http.Header

	// stopped is the sentinel saying why retries stopped early
	// (ErrRetryAfterTooLong, ErrRetryBudgetExhausted), nil otherwise.
	stopped error
}

// Error returns one line: the request, the status and code, the message and
// the identifiers needed to reconcile, never a credential.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	b.WriteString(" (")
	sep := ""
	add := func(k, v string) {
		if v != "" {
			b.WriteString(sep + k + "=" + v)
			sep = ", "
		}
	}
	add("request_id", e.RequestID)
	add("key", e.IdempotencyKey)
	if e.RetryAfter > 0 {
		add("retry_after", e.RetryAfter.String())
	}
	add("attempts", strconv.Itoa(e.Attempts))
	if e.stopped != nil {
		add("not retried", strings.TrimPrefix(e.stopped.Error(), "safegen: "))
	}
	b.WriteString(")")
	return b.String()
}

// Is matches the sentinel that the status and code mean.
func (e *APIError) Is(target error) bool {
	if e.stopped != nil && errors.Is(e.stopped, target) {
		return true
	}
	code := strings.ToLower(e.Code)
	switch target {
	case ErrIdempotencyKeyReuse:
		return e.isKeyReuse()
	case ErrRequestInProgress:
		return e.StatusCode == http.StatusConflict && code == "request_in_progress"
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrQuotaExceeded:
		return e.StatusCode == http.StatusTooManyRequests && code == "quota_exceeded"
	case ErrInvalidIdempotencyKey:
		return e.StatusCode == http.StatusBadRequest && code == "invalid_idempotency_key"
	case ErrInvalidRequest:
		return (e.StatusCode == http.StatusBadRequest || e.StatusCode == http.StatusUnprocessableEntity ||
			e.StatusCode == http.StatusRequestEntityTooLarge) && !e.isKeyReuse() && code != "invalid_idempotency_key"
	case ErrAuthentication:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
	case ErrInsufficientCredits:
		return e.StatusCode == http.StatusPaymentRequired
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrServer:
		return e.StatusCode >= 500 && e.StatusCode <= 599
	case ErrGenerationTerminal:
		return e.StatusCode == http.StatusConflict && code == "generation_terminal"
	}
	return false
}

// keyReuseCodes are the dialects' spellings of "one key, two bodies".
var keyReuseCodes = map[string]bool{
	"idempotency_key_reuse":    true,
	"idempotency_conflict":     true,
	"idempotency_key_conflict": true,
	"idempotency_key_reused":   true,
	"idempotency_key_mismatch": true,
}

func (e *APIError) isKeyReuse() bool {
	code := strings.ToLower(e.Code)
	switch e.StatusCode {
	case http.StatusConflict:
		return keyReuseCodes[code]
	case http.StatusUnprocessableEntity:
		// The IETF draft answers a body mismatch with 422; recognise it by
		// its code or, with no code, by what its message talks about.
		if keyReuseCodes[code] {
			return true
		}
		return strings.Contains(strings.ToLower(e.Code+" "+e.Type+" "+e.Message), "idempotency")
	}
	return false
}

// retryable reports whether the status and code are ones the policy retries.
func (e *APIError) retryable() bool {
	switch e.StatusCode {
	case http.StatusTooManyRequests:
		return !strings.EqualFold(e.Code, "quota_exceeded")
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// A 504 often follows committed work: the same key turns the
		// retry into a replay, never a second charge.
		return true
	case http.StatusConflict:
		return strings.EqualFold(e.Code, "request_in_progress")
	}
	return false
}

// definitive reports whether the answer settles the intent for good: the
// server stores it (2xx and 4xx other than 429 and request_in_progress).
func definitive(status int, code string) bool {
	switch {
	case status >= 200 && status < 300:
		return true
	case status == http.StatusTooManyRequests:
		return false
	case status == http.StatusConflict && strings.EqualFold(code, "request_in_progress"):
		return false
	case status >= 400 && status < 500:
		return true
	}
	return false
}

// errorBody is the contract's error shape. Some servers put the fields at the
// top level or send error as a bare string; both are accepted.
type errorBody struct {
	Error json.RawMessage `json:"error"`
	errorFields
}

type errorFields struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// newAPIError builds the error for a non-2xx answer. It never fails: an HTML,
// empty, truncated or malformed body yields a message saying so.
func newAPIError(method, path string, status int, header http.Header, body []byte) *APIError {
	e := &APIError{
		Method:     method,
		Path:       path,
		StatusCode: status,
		RequestID:  header.Get("X-Request-Id"),
		Header:     header,
	}
	if len(body) > maxErrorBody {
		body = body[:maxErrorBody]
	}
	e.Body = body
	e.Type, e.Code, e.Message = decodeErrorBody(header.Get("Content-Type"), body)
	if e.Message == "" {
		e.Message = statusText(status)
	}
	return e
}

// decodeErrorBody extracts type, code and message from an error body,
// whatever shape it has.
func decodeErrorBody(contentType string, body []byte) (typ, code, msg string) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return "", "", ""
	}
	if trimmed[0] == '{' {
		var eb errorBody
		if json.Unmarshal(trimmed, &eb) == nil {
			f := eb.errorFields
			if len(eb.Error) > 0 {
				var inner errorFields
				var s string
				switch {
				case json.Unmarshal(eb.Error, &inner) == nil:
					f = inner
				case json.Unmarshal(eb.Error, &s) == nil:
					f = errorFields{Message: s}
				}
			}
			return clean(f.Type, 100), clean(f.Code, 100), clean(f.Message, 300)
		}
		return "", "", "malformed JSON error body"
	}
	ct := strings.ToLower(contentType)
	if strings.Contains(ct, "html") || trimmed[0] == '<' {
		if t := htmlTitle(trimmed); t != "" {
			return "", "", "non-JSON error page: " + clean(t, 120)
		}
		return "", "", "non-JSON error page"
	}
	return "", "", "non-JSON error body: " + clean(string(trimmed), 120)
}

// htmlTitle returns the text of the first <title> element, if any.
func htmlTitle(b []byte) string {
	lower := asciiLower(b) // same length as b, whatever the bytes
	i := bytes.Index(lower, []byte("<title>"))
	if i < 0 {
		return ""
	}
	start := i + len("<title>")
	j := bytes.Index(lower[start:], []byte("</title>"))
	if j < 0 {
		return ""
	}
	return string(bytes.TrimSpace(b[start : start+j]))
}

// asciiLower lowercases ASCII letters only. bytes.ToLower would replace
// invalid UTF-8 with longer runes and shift every offset.
func asciiLower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// clean makes s safe for a one-line error: valid UTF-8, no control
// characters, at most n runes.
func clean(s string, n int) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	count := 0
	for _, r := range s {
		if count == n {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError:
			r = '?'
		case r < 0x20 || r == 0x7f:
			r = ' '
		}
		b.WriteRune(r)
		count++
	}
	return strings.TrimSpace(b.String())
}

func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return strings.ToLower(t)
	}
	return "unexpected status"
}

// RetryError is a call that failed without a usable answer from the server:
// a transport failure after the retries, a cancelled context, a stopped
// retry. It wraps the cause (a *url.Error, a context error, an *APIError) so
// errors.Is and errors.As reach it.
type RetryError struct {
	Method, Path   string
	IdempotencyKey string
	Attempts       int
	// Reason says why the call stopped, in a few words.
	Reason string
	// Err is the cause.
	Err error

	stopped error // a sentinel beside the cause, such as ErrRetryBudgetExhausted
}

// Error returns one line with the cause and the identifiers to reconcile.
func (e *RetryError) Error() string {
	key := ""
	if e.IdempotencyKey != "" {
		key = "key=" + e.IdempotencyKey + ", "
	}
	return fmt.Sprintf("%s %s: %s: %v (%sattempts=%d)", e.Method, e.Path, e.Reason, e.Err, key, e.Attempts)
}

// Unwrap returns the cause, and the sentinel saying why retries stopped
// early when there is one.
func (e *RetryError) Unwrap() []error {
	if e.stopped != nil {
		return []error{e.Err, e.stopped}
	}
	return []error{e.Err}
}
