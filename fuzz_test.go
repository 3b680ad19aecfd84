package safegen

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRetryAfter: any Retry-After, Retry-After-Ms, RateLimit-Reset or
// X-RateLimit-Reset value parses to a non-negative wait or is ignored; never
// a panic.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "2", "1.5", "-1", "NaN", "+Inf", "1e308", "99999999999999999999",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "", " ", "garbage", "0x10", "1_000"} {
		f.Add(s, s, 429)
	}
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, a, b string, status int) {
		for _, name := range []string{"Retry-After", "Retry-After-Ms", "RateLimit-Reset", "X-RateLimit-Reset"} {
			h := http.Header{}
			h.Set(name, a)
			h.Add(name, b)
			d, ok := retryAfter(h, status, now)
			if d < 0 {
				t.Fatalf("%s %q: negative wait %v", name, a, d)
			}
			if !ok && d != 0 {
				t.Fatalf("%s %q: ignored value with a wait %v", name, a, d)
			}
		}
		if d, ok := parseSeconds(a); ok && d < 0 {
			t.Fatalf("parseSeconds(%q) = %v", a, d)
		}
	})
}

// FuzzDecodeErrorBody: any body and content type give a bounded, one-line,
// valid UTF-8 message; never a panic.
func FuzzDecodeErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"error":{"type":"t","code":"c","message":"m"}}`, `{"error":"x"}`, `{"code":"c"}`, `<html><title>502</title></html>`,
		``, `{`, `null`, `[]`, `{"error":null}`, `{"error":{"code":1}}`, "\xff\xfe", strings.Repeat("{", 10000),
	} {
		f.Add("application/json", []byte(s))
		f.Add("text/html", []byte(s))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		e := newAPIError("POST", "/v1/generations", 502, http.Header{"Content-Type": {ct}}, body)
		line := e.Error()
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("multi-line error: %q", line)
		}
		if !utf8.ValidString(e.Message) || !utf8.ValidString(e.Code) {
			t.Fatalf("invalid UTF-8 in %q / %q", e.Message, e.Code)
		}
		if len(e.Message) > 1500 || len(e.Body) > maxErrorBody {
			t.Fatalf("unbounded: message %d bytes, body %d", len(e.Message), len(e.Body))
		}
		_ = e.Is(ErrIdempotencyKeyReuse)
	})
}

// FuzzContentRange: any Content-Range parses to a start within a known
// total, or is refused; never a panic.
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes */10", "bytes 9-5/10", "bytes -1-2/3",
		"bytes 0-9223372036854775807/9223372036854775807", "bytes 1-2/3/4", "", "bytes", "bytes 0-0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, total, ok := contentRange(v)
		if !ok {
			return
		}
		if start < 0 || (total != -1 && start >= total) {
			t.Fatalf("contentRange(%q) = %d, %d", v, start, total)
		}
	})
}
