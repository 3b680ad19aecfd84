package safegentest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawResult is a response as it was on the wire, header names unaltered.
type rawResult struct {
	status  int
	headers []string // "Name: value" lines exactly as sent
	body    string
}

func (r rawResult) has(exactName string) (string, bool) {
	for _, h := range r.headers {
		if name, v, ok := strings.Cut(h, ": "); ok && name == exactName {
			return v, true
		}
	}
	return "", false
}

// rawDo sends one HTTP/1.1 request over a fresh TCP connection and reads
// the response without canonicalizing anything.
func rawDo(t *testing.T, srv *Server, method, path, body string, hdr ...string) rawResult {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n",
		method, path, srv.Listener.Addr(), len(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n" + body)
	_, err = io.WriteString(conn, b.String())
	require.NoError(t, err)

	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	parts := strings.SplitN(strings.TrimSpace(line), " ", 3)
	require.GreaterOrEqual(t, len(parts), 2, line)
	var res rawResult
	res.status, err = strconv.Atoi(parts[1])
	require.NoError(t, err)
	for {
		line, err = br.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		res.headers = append(res.headers, line)
	}
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	res.body = string(rest)
	return res
}

func TestDialects(t *testing.T) {
	tests := []struct {
		dialect      Dialect
		realmAuth    bool   // X-API-Key instead of Bearer
		createStatus int    //
		replayHeader string // exact name on the wire, "" for none
		mismatchCode string // "" when the cached result is replayed
		maxKey       int
	}{
		{DialectDefault, false, 202, "Idempotent-Replayed", "idempotency_key_reuse", 255},
		{DialectRimp, false, 202, "Idempotent-Replayed", "idempotency_key_reuse", 200},
		{DialectRealm, true, 201, "", "", 255},
		{DialectRelaystation, false, 200, "", "IDEMPOTENCY_CONFLICT", 255},
		{DialectClipia, false, 200, "", "idempotency_key_reuse", 255},
		{DialectPatomic, false, 201, "idempotency-replayed", "idempotency_key_conflict", 255},
	}
	for _, tt := range tests {
		t.Run(string(tt.dialect), func(t *testing.T) {
			srv := NewServer(t, WithDialect(tt.dialect))
			authName, authValue, wrongName, wrongValue := "Authorization", "Bearer "+srv.APIKey, "X-API-Key", srv.APIKey
			if tt.realmAuth {
				authName, authValue, wrongName, wrongValue = wrongName, wrongValue, authName, authValue
			}
			post := func(key, body string) rawResult {
				return rawDo(t, srv, "POST", "/v1/generations", body,
					authName, authValue, "Content-Type", "application/json", "Idempotency-Key", key)
			}

			// Auth header.
			r := rawDo(t, srv, "GET", "/v1/account", "", wrongName, wrongValue)
			assert.Equal(t, 401, r.status)
			r = rawDo(t, srv, "GET", "/v1/account", "", authName, authValue)
			assert.Equal(t, 200, r.status)

			// Create status; every dialect returns request_id (Clipia's row requires it).
			first := post("k", bodyA)
			require.Equal(t, tt.createStatus, first.status, first.body)
			assert.Contains(t, first.body, `"request_id":"req_`)

			// Replay header, spelled exactly.
			replay := post("k", bodyA)
			assert.Equal(t, tt.createStatus, replay.status)
			assert.Equal(t, first.body, replay.body)
			for _, name := range []string{"Idempotent-Replayed", "idempotency-replayed", "Idempotency-Replayed"} {
				v, ok := replay.has(name)
				if name == tt.replayHeader {
					assert.True(t, ok, "want header %q in %v", name, replay.headers)
					assert.Equal(t, "true", v)
				} else {
					assert.False(t, ok, "unexpected header %q", name)
				}
			}
			_, ok := first.has(tt.replayHeader)
			assert.False(t, ok && tt.replayHeader != "", "first answer is not a replay")

			// Same key, other body.
			mm := post("k", bodyB)
			if tt.mismatchCode == "" {
				assert.Equal(t, tt.createStatus, mm.status)
				assert.Equal(t, first.body, mm.body, "Realm replays the cached result")
			} else {
				assert.Equal(t, 409, mm.status)
				assert.Equal(t, tt.mismatchCode, errCode(t, result{Body: []byte(mm.body)}))
			}

			// Key length.
			ok1 := post(strings.Repeat("x", tt.maxKey), bodyA)
			assert.Equal(t, tt.createStatus, ok1.status)
			long := post(strings.Repeat("y", tt.maxKey+1), bodyA)
			assert.Equal(t, 400, long.status)
			assert.Equal(t, "invalid_idempotency_key", errCode(t, result{Body: []byte(long.body)}))

			assert.Equal(t, 2, srv.Ledger().Total())
			assert.Empty(t, srv.Ledger().Duplicates())
		})
	}
}

func TestDialectInProgress(t *testing.T) {
	for _, d := range []Dialect{DialectDefault, DialectRimp, DialectRealm, DialectRelaystation, DialectClipia, DialectPatomic} {
		t.Run(string(d), func(t *testing.T) {
			srv := NewServer(t, WithDialect(d), WithWorkTime(300*time.Millisecond))
			auth := []string{"Authorization", "Bearer " + srv.APIKey}
			if d == DialectRealm {
				auth = []string{"X-API-Key", srv.APIKey}
			}
			hdr := append(auth, "Content-Type", "application/json", "Idempotency-Key", "k")
			done := make(chan rawResult, 1)
			go func() { done <- rawDo(t, srv, "POST", "/v1/generations", bodyA, hdr...) }()
			waitClaimed(t, srv)
			r := rawDo(t, srv, "POST", "/v1/generations", bodyB, hdr...)
			assert.Equal(t, 409, r.status)
			assert.Equal(t, "request_in_progress", errCode(t, result{Body: []byte(r.body)}))
			assert.Less(t, (<-done).status, 300)
			assert.Equal(t, 1, srv.Ledger().Total())
		})
	}
}

func TestRimpRateLimitReset(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithDialect(DialectRimp), WithClock(clk), WithRateLimit(1, 0))
	c := client(t)
	r := get(t, c, srv, "/v1/account")
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, strconv.FormatInt(t0.Add(time.Minute).Unix(), 10), r.Header.Get("X-RateLimit-Reset"))

	clk.Advance(45 * time.Second)
	r = get(t, c, srv, "/v1/account")
	assert.Equal(t, http.StatusTooManyRequests, r.Status)
	assert.Equal(t, "15", r.Header.Get("Retry-After"))
	assert.Equal(t, strconv.FormatInt(t0.Add(time.Minute).Unix(), 10), r.Header.Get("X-RateLimit-Reset"))
}
