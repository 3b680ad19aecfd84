package safegenotel

import (
	"errors"
	"net/http"

	"github.com/safegen/safegen-go"
)

// This file keeps every metric attribute value in a small fixed set,
// whatever a server answers: an unknown value becomes "other".

// other stands for any value outside a label's fixed set.
const other = "other"

// operation is op if it is one of safegen's operations.
func operation(op string) string {
	switch op {
	case safegen.OpCreate, safegen.OpGet, safegen.OpCancel, safegen.OpEstimate, safegen.OpWait,
		safegen.OpDownload, safegen.OpRun, safegen.OpAccount, safegen.OpResume, safegen.OpDo:
		return op
	}
	return other
}

// callSpanName is "safegen." + the operation, without an allocation.
func callSpanName(op string) string {
	switch op {
	case safegen.OpCreate:
		return "safegen.generations.create"
	case safegen.OpGet:
		return "safegen.generations.get"
	case safegen.OpCancel:
		return "safegen.generations.cancel"
	case safegen.OpEstimate:
		return "safegen.generations.estimate"
	case safegen.OpWait:
		return "safegen.generations.wait"
	case safegen.OpDownload:
		return "safegen.generations.download"
	case safegen.OpRun:
		return "safegen.generations.run"
	case safegen.OpAccount:
		return "safegen.account.get"
	case safegen.OpResume:
		return "safegen.resume"
	case safegen.OpDo:
		return "safegen.do"
	}
	return "safegen." + other
}

// urlTemplate is the path template of an operation's requests, "" when
// unknown (Client.Do, a download from wherever the output is).
func urlTemplate(op string) string {
	switch op {
	case safegen.OpCreate:
		return "/v1/generations"
	case safegen.OpGet:
		return "/v1/generations/{id}"
	case safegen.OpCancel:
		return "/v1/generations/{id}/cancel"
	case safegen.OpEstimate:
		return "/v1/generations/estimate"
	case safegen.OpAccount:
		return "/v1/account"
	}
	return ""
}

// attemptSpanName follows the HTTP conventions: "{method} {url.template}",
// or the method alone.
func attemptSpanName(op, method string) string {
	switch op {
	case safegen.OpCreate:
		return "POST /v1/generations"
	case safegen.OpGet:
		return "GET /v1/generations/{id}"
	case safegen.OpCancel:
		return "POST /v1/generations/{id}/cancel"
	case safegen.OpEstimate:
		return "POST /v1/generations/estimate"
	case safegen.OpAccount:
		return "GET /v1/account"
	}
	return httpMethod(method)
}

// httpMethod is a known HTTP method, or "_OTHER" as the conventions say.
func httpMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// outcomeOf is "ok" or "error".
func outcomeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return "error"
}

// errorType keeps a CallResult.ErrorType in its documented set.
func errorType(t string) string {
	switch t {
	case "", "transport", "timeout", "canceled", "retry_budget_exhausted", "retry_after_too_long", "invalid_request",
		"idempotency_key_reuse", "intent_expired", "malformed_response", "response_too_large", "generation_failed",
		"output_corrupt", "spend_limit", other:
		return t
	}
	if isStatus(t) {
		return t
	}
	return other
}

// attemptCause keeps an AttemptInfo.Cause in a fixed set: the status of
// the answer (and "409 request_in_progress"), or what happened instead.
func attemptCause(c string) string {
	switch c {
	case "ok", "transport", "timeout", "canceled", "redirect", "local", "409 request_in_progress":
		return c
	}
	if len(c) >= 3 && isStatus(c[:3]) {
		return c[:3] // "409 some_code_the_server_made_up" → "409"
	}
	return other
}

// isStatus reports three digits from 100 to 599.
func isStatus(s string) bool {
	return len(s) == 3 && s[0] >= '1' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9'
}

// statusCode is a valid HTTP status, else 0 (left out).
func statusCode(n int) int {
	if n < 100 || n > 599 {
		return 0
	}
	return n
}

// journalStep keeps a JournalEvent.Step in its set.
func journalStep(s string) string {
	switch s {
	case safegen.JournalBegin, safegen.JournalComplete, safegen.JournalExpire, safegen.JournalAdvance:
		return s
	}
	return other
}

// apiCode is the error code of the server's answer an error carries.
func apiCode(err error) string {
	var apiErr *safegen.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code
	}
	return ""
}
