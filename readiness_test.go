package safegen

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A 504 often comes after the work was committed: it is retried with the
// same key and the same bytes, like 500, 502 and 503.
func TestGatewayTimeoutRetriedSameKey(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n < 3 {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusGatewayTimeout)
			_, _ = w.Write([]byte("<html><title>504 Gateway Time-out</title></html>"))
			return
		}
		writeJSON(w, http.StatusAccepted, genBody)
	})
	c, clk := newTestClient(t, rec.URL)
	g, err := c.Generations.Create(context.Background(), testParams)
	require.NoError(t, err)
	assert.Equal(t, 3, g.Meta.Attempts)
	seen := rec.Seen()
	require.Len(t, seen, 3)
	for _, s := range seen {
		assert.Equal(t, seen[0].Key, s.Key)
		assert.Equal(t, seen[0].Body, s.Body)
	}
	assert.Len(t, clk.Sleeps(), 2, "backed off before each retry")
}

// A success whose declared length is over WithMaxResponseBytes is refused
// before its body is read: a 50 MB declaration must not cost 50 (or 22) MB.
func TestDeclaredLengthOverLimitRefusedUnread(t *testing.T) {
	const declared = 50 << 20
	chunk := bytes.Repeat([]byte{'a'}, 32<<10)
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(declared))
		w.WriteHeader(http.StatusOK)
		for sent := 0; sent < declared; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	c, _ := newTestClient(t, rec.URL, WithMaxRetries(0))
	ctx := context.Background()
	_, _ = c.Account(ctx) // warm the connection pool and the code paths

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := c.Account(ctx)
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrResponseTooLarge)
	assert.Contains(t, err.Error(), "Content-Length")
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("a refused 50 MB declared body allocated %d bytes", grew)
	assert.Less(t, grew, uint64(2<<20), "heap allocated for a refused 50 MB body: %d bytes", grew)
}

// A body whose length is not declared is still bounded while it is read.
func TestUndeclaredLengthOverLimit(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // chunked: no Content-Length
		_, _ = w.Write(bytes.Repeat([]byte{' '}, 4<<10))
	})
	c, _ := newTestClient(t, rec.URL, WithMaxRetries(0), WithMaxResponseBytes(1<<10))
	_, err := c.Account(context.Background())
	require.ErrorIs(t, err, ErrResponseTooLarge)
}

// A server that echoes the refused API key in its error message: the key is
// in neither Error(), the kept body, nor any log line.
func TestEchoedAPIKeyRedacted(t *testing.T) {
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusUnauthorized, apiErrBody("invalid_api_key", "API key "+testAPIKey+" is not valid"))
	})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, _ := newTestClient(t, rec.URL, WithLogger(logger))
	_, err := c.Generations.Create(context.Background(), testParams)
	require.ErrorIs(t, err, ErrAuthentication)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	assert.NotContains(t, err.Error(), testAPIKey)
	assert.Contains(t, err.Error(), "[REDACTED]")
	assert.NotContains(t, string(apiErr.Body), testAPIKey)
	assert.NotContains(t, apiErr.Message, testAPIKey)
	assert.NotEmpty(t, logs.String())
	assert.NotContains(t, logs.String(), testAPIKey)
}
