package safegentest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/safegen/safegen-go/internal/leakcheck"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// result is a fully read response.
type result struct {
	Status int
	Header http.Header
	Body   []byte
}

// client returns a client that never reuses connections, so that net/http
// never silently re-sends a request whose connection was reset.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// send makes one raw request. hdr holds header name/value pairs; an
// "Authorization" of "" is left out.
func send(t *testing.T, c *http.Client, srv *Server, method, path, body string, hdr ...string) (result, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" && hdr[i] == "Authorization" {
			continue
		}
		req.Header[hdr[i]] = []string{hdr[i+1]}
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// must is send that fails the test on a transport error.
func must(t *testing.T, c *http.Client, srv *Server, method, path, body string, hdr ...string) result {
	t.Helper()
	r, err := send(t, c, srv, method, path, body, hdr...)
	require.NoError(t, err)
	return r
}

// create POSTs a generation with srv.APIKey; idem "" sends no key.
func create(t *testing.T, c *http.Client, srv *Server, idem, body string) result {
	t.Helper()
	hdr := []string{"Authorization", "Bearer " + srv.APIKey, "Content-Type", "application/json"}
	if idem != "" {
		hdr = append(hdr, "Idempotency-Key", idem)
	}
	return must(t, c, srv, http.MethodPost, "/v1/generations", body, hdr...)
}

func get(t *testing.T, c *http.Client, srv *Server, path string) result {
	t.Helper()
	return must(t, c, srv, http.MethodGet, path, "", "Authorization", "Bearer "+srv.APIKey)
}

// errCode returns the error code of an error body, failing if it has none.
func errCode(t *testing.T, r result) string {
	t.Helper()
	var e struct {
		Error struct{ Type, Code, Message string } `json:"error"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &e), "body: %s", r.Body)
	require.NotEmpty(t, e.Error.Code, "body: %s", r.Body)
	require.NotEmpty(t, e.Error.Type, "body: %s", r.Body)
	require.NotEmpty(t, e.Error.Message, "body: %s", r.Body)
	return e.Error.Code
}

func decode(t *testing.T, r result) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(r.Body), &m), "body: %s", r.Body)
	return m
}

const (
	bodyA = `{"model":"veo-3-1-fast","prompt":"a cat"}`
	bodyB = `{"model":"veo-3-1-fast","prompt":"a dog"}`
)
