package safegen

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hangupServer answers like a normal server, except that the first request
// arriving on a reused keep-alive connection (after dropArmed) is read in
// full and then the connection is closed without an answer: the case where
// net/http re-sends a replayable request on its own.
type hangupServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seen
	// armed: the next request on a reused connection is hung up on.
	armed atomic.Bool
}

type connKey struct{}

func newHangupServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *hangupServer {
	t.Helper()
	hs := &hangupServer{}
	hs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n := r.Context().Value(connKey{}).(*atomic.Int32).Add(1)
		hs.mu.Lock()
		hs.seen = append(hs.seen, seen{Method: r.Method, Path: r.URL.RequestURI(), Key: r.Header.Get("Idempotency-Key"),
			Attempt: r.Header.Get(AttemptHeader), Header: r.Header.Clone(), Body: string(body)})
		hs.mu.Unlock()
		if n > 1 && hs.armed.CompareAndSwap(true, false) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		answer(w, r)
	}))
	hs.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, new(atomic.Int32))
	}
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

func (hs *hangupServer) Seen() []seen {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]seen(nil), hs.seen...)
}

func answerGeneration(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	if r.Method == http.MethodPost {
		status = http.StatusAccepted
	}
	writeJSON(w, status, genBody)
}

// TestEverySendCounted: a keyed POST whose reused connection dies after the
// request was read is not re-sent by net/http behind the retry loop: the
// loop counts the failure, backs off and sends attempt 2 itself. The meta,
// the attempt hook and the server agree.
func TestEverySendCounted(t *testing.T) {
	hs := newHangupServer(t, answerGeneration)
	var infos []AttemptInfo
	c, clk := newTestClient(t, hs.URL, WithAttemptHook(func(i AttemptInfo) { infos = append(infos, i) }))
	ctx := context.Background()
	_, err := c.Generations.Create(ctx, testParams) // opens the keep-alive connection
	require.NoError(t, err)
	infos = nil
	hs.armed.Store(true)

	var meta ResponseMeta
	_, err = c.Generations.Create(ctx, testParams, WithIdempotencyKey("key-hangup-1"), WithResponseMeta(&meta))
	require.NoError(t, err)

	var sent []seen
	for _, s := range hs.Seen() {
		if s.Key == "key-hangup-1" {
			sent = append(sent, s)
		}
	}
	require.Len(t, sent, 2, "the server got the request twice")
	assert.Equal(t, 2, meta.Attempts, "and the meta says so")
	require.Len(t, infos, 2, "and so does the hook")
	assert.Equal(t, "transport", infos[0].Cause)
	assert.True(t, infos[0].Retry)
	assert.Equal(t, "ok", infos[1].Cause)
	assert.Equal(t, []string{"1", "2"}, []string{sent[0].Attempt, sent[1].Attempt}, "each send carries its own attempt number")
	assert.Equal(t, sent[0].Body, sent[1].Body)
	assert.Len(t, clk.Sleeps(), 1, "the retry was backed off like any other")
}

// TestEverySendCountedNoRetries: with WithMaxRetries(0) a keyed POST is
// sent once, even when net/http would have re-sent it.
func TestEverySendCountedNoRetries(t *testing.T) {
	hs := newHangupServer(t, answerGeneration)
	c, _ := newTestClient(t, hs.URL, WithMaxRetries(0))
	ctx := context.Background()
	_, err := c.Generations.Create(ctx, testParams)
	require.NoError(t, err)
	hs.armed.Store(true)

	_, err = c.Generations.Create(ctx, testParams, WithIdempotencyKey("key-hangup-2"))
	var re *RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
	n := 0
	for _, s := range hs.Seen() {
		if s.Key == "key-hangup-2" {
			n++
		}
	}
	assert.Equal(t, 1, n, "one attempt allowed, one request sent")
}

// TestGetNotResentByNetHTTP: a GET, which net/http would re-send on its
// own, also goes through the retry loop.
func TestGetNotResentByNetHTTP(t *testing.T) {
	hs := newHangupServer(t, answerGeneration)
	var infos []AttemptInfo
	c, clk := newTestClient(t, hs.URL, WithAttemptHook(func(i AttemptInfo) { infos = append(infos, i) }))
	ctx := context.Background()
	_, err := c.Generations.Get(ctx, "gen_1")
	require.NoError(t, err)
	infos = nil
	hs.armed.Store(true)

	g, err := c.Generations.Get(ctx, "gen_1")
	require.NoError(t, err)
	seen := hs.Seen()
	require.Len(t, seen, 3, "the server got the second Get twice")
	assert.Equal(t, []string{"1", "2"}, []string{seen[1].Attempt, seen[2].Attempt})
	assert.Empty(t, seen[2].Header.Get("Transfer-Encoding"), "a GET goes out without a body")
	assert.Equal(t, 2, g.Meta.Attempts)
	require.Len(t, infos, 2)
	assert.Equal(t, "transport", infos[0].Cause)
	assert.True(t, infos[0].Retry)
	assert.Equal(t, "ok", infos[1].Cause)
	assert.Len(t, clk.Sleeps(), 1)
}
