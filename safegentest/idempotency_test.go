package safegentest

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIdempotencyReplay(t *testing.T) {
	srv := NewServer(t)
	c := client(t)

	first := create(t, c, srv, "key-1", bodyA)
	require.Equal(t, http.StatusAccepted, first.Status, "%s", first.Body)
	assert.Empty(t, first.Header.Get("Idempotent-Replayed"))

	second := create(t, c, srv, "key-1", bodyA)
	assert.Equal(t, first.Status, second.Status)
	assert.Equal(t, first.Body, second.Body, "replay must be byte for byte")
	assert.Equal(t, "true", second.Header.Get("Idempotent-Replayed"))
	assert.NotEmpty(t, second.Header.Get("X-Request-Id"))
	assert.NotEqual(t, first.Header.Get("X-Request-Id"), second.Header.Get("X-Request-Id"))

	l := srv.Ledger()
	assert.Equal(t, 1, l.Total())
	assert.Empty(t, l.Duplicates())
	assert.Equal(t, int64(12), l.Credits(srv.APIKey))

	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.False(t, reqs[0].Replayed)
	assert.True(t, reqs[1].Replayed)
	assert.Equal(t, "key-1", reqs[1].IdempotencyKey)
	assert.Equal(t, []byte(bodyA), reqs[1].Body)
}

func TestIdempotencyRules(t *testing.T) {
	tests := []struct {
		name        string
		firstKey    string
		firstBody   string
		secondKey   string
		secondBody  string
		otherAPIKey bool // second request under a second API key
		wantStatus  int
		wantCode    string // error code of the second answer, "" for success
		wantReplay  bool
		wantCharges int
	}{
		{name: "same key other body", firstKey: "k", firstBody: bodyA, secondKey: "k", secondBody: bodyB,
			wantStatus: http.StatusConflict, wantCode: "idempotency_key_reuse", wantCharges: 1},
		{name: "keys scoped per API key", firstKey: "k", firstBody: bodyA, secondKey: "k", secondBody: bodyA,
			otherAPIKey: true, wantStatus: http.StatusAccepted, wantCharges: 2},
		{name: "no key runs twice", firstBody: bodyA, secondBody: bodyA,
			wantStatus: http.StatusAccepted, wantCharges: 2},
		{name: "different keys run twice", firstKey: "k1", firstBody: bodyA, secondKey: "k2", secondBody: bodyA,
			wantStatus: http.StatusAccepted, wantCharges: 2},
		{name: "4xx stored and replayed", firstKey: "k", firstBody: `{"model":"nope","prompt":"x"}`,
			secondKey: "k", secondBody: `{"model":"nope","prompt":"x"}`,
			wantStatus: http.StatusUnprocessableEntity, wantCode: "model_input_invalid", wantReplay: true},
		{name: "400 stored and replayed", firstKey: "k", firstBody: `{"model":`,
			secondKey: "k", secondBody: `{"model":`,
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request", wantReplay: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(t)
			c := client(t)
			create(t, c, srv, tt.firstKey, tt.firstBody)
			apiKey := srv.APIKey
			if tt.otherAPIKey {
				apiKey = srv.NewAPIKey()
			}
			hdr := []string{"Authorization", "Bearer " + apiKey, "Content-Type", "application/json"}
			if tt.secondKey != "" {
				hdr = append(hdr, "Idempotency-Key", tt.secondKey)
			}
			r := must(t, c, srv, http.MethodPost, "/v1/generations", tt.secondBody, hdr...)
			assert.Equal(t, tt.wantStatus, r.Status, "%s", r.Body)
			if tt.wantCode != "" {
				assert.Equal(t, tt.wantCode, errCode(t, r))
			}
			assert.Equal(t, tt.wantReplay, r.Header.Get("Idempotent-Replayed") == "true")
			assert.Equal(t, tt.wantCharges, srv.Ledger().Total())
			assert.Empty(t, srv.Ledger().Duplicates())
		})
	}
}

func TestIdempotencyKeyValidation(t *testing.T) {
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"empty", "", false},
		{"one char", "a", true},
		{"255 chars", strings.Repeat("k", 255), true},
		{"256 chars", strings.Repeat("k", 256), false},
		{"space and symbols", "order 17 / ~!", true},
		{"tab", "a\tb", false},
		{"non-ASCII", "clé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(t)
			c := client(t)
			r := must(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
				"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", tt.key)
			if tt.ok {
				assert.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
				assert.Equal(t, 1, srv.Ledger().Total())
				return
			}
			assert.Equal(t, http.StatusBadRequest, r.Status)
			assert.Equal(t, "invalid_idempotency_key", errCode(t, r))
			assert.Equal(t, 0, srv.Ledger().Total(), "nothing is created")
			srv.mu.Lock()
			assert.Empty(t, srv.gens)
			srv.mu.Unlock()
		})
	}
}

func TestIdempotencyKeyOnGetIgnored(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	for range 2 {
		r := must(t, c, srv, http.MethodGet, "/v1/account", "",
			"Authorization", "Bearer "+srv.APIKey, "Idempotency-Key", "")
		assert.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
	}
}

func TestIdempotencyWindow(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithKeyWindow(24*time.Hour))
	c := client(t)

	first := create(t, c, srv, "k", bodyA)
	require.Equal(t, http.StatusAccepted, first.Status)

	clk.Advance(24*time.Hour - time.Second)
	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, first.Body, r.Body, "still inside the window")
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, 1, srv.Ledger().Total())

	clk.Advance(time.Second)
	r = create(t, c, srv, "k", bodyB)
	assert.Equal(t, http.StatusAccepted, r.Status, "past the window the key is new again, whatever the body")
	assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
	assert.NotEqual(t, first.Body, r.Body)
	assert.Equal(t, 2, srv.Ledger().Total())
}

// waitClaimed waits until the server holds an in-progress key.
func waitClaimed(t *testing.T, srv *Server) {
	t.Helper()
	require.Eventually(t, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for _, e := range srv.idem {
			if e.inProgress {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
}

func TestIdempotencyInProgress(t *testing.T) {
	srv := NewServer(t, WithWorkTime(300*time.Millisecond))
	c := client(t)

	done := make(chan result, 1)
	go func() {
		r, _ := send(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
			"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", "k")
		done <- r
	}()
	waitClaimed(t, srv)

	for _, body := range []string{bodyA, bodyB} {
		r := create(t, c, srv, "k", body)
		assert.Equal(t, http.StatusConflict, r.Status)
		assert.Equal(t, "request_in_progress", errCode(t, r))
	}

	first := <-done
	require.Equal(t, http.StatusAccepted, first.Status)
	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, first.Body, r.Body)
	assert.Equal(t, 1, srv.Ledger().Total())
}

func TestNotStoredResults(t *testing.T) {
	tests := []struct {
		name     string
		fault    Fault
		status   int
		ctype    string
		code     string
		retryAft string
	}{
		{"500 JSON", Fault{Kind: FaultStatus, Status: 500}, 500, "application/json", "internal_error", ""},
		{"502 HTML", Fault{Kind: FaultStatus, Status: 502, HTML: true}, 502, "text/html", "", ""},
		{"503 empty", Fault{Kind: FaultStatus, Status: 503, EmptyBody: true}, 503, "", "", ""},
		{"504 JSON", Fault{Kind: FaultStatus, Status: 504}, 504, "application/json", "gateway_timeout", ""},
		{"429", Fault{Kind: FaultRateLimit, RetryAfter: "2"}, 429, "application/json", "rate_limit_exceeded", "2"},
		{"429 rimp quota", Fault{Kind: FaultRateLimit, RetryAfter: "1800", Code: "quota_exceeded"}, 429, "application/json", "quota_exceeded", "1800"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(t)
			c := client(t)
			f := tt.fault
			f.Method, f.Path = http.MethodPost, "/v1/generations"
			srv.InjectFaults(f)

			r := create(t, c, srv, "k", bodyA)
			assert.Equal(t, tt.status, r.Status)
			assert.Equal(t, tt.ctype, r.Header.Get("Content-Type"))
			assert.NotEmpty(t, r.Header.Get("X-Request-Id"))
			switch {
			case tt.code != "":
				assert.Equal(t, tt.code, errCode(t, r))
			case tt.fault.HTML:
				assert.Contains(t, string(r.Body), "<html>")
			default:
				assert.Empty(t, r.Body)
			}
			if tt.retryAft != "" {
				assert.Equal(t, tt.retryAft, r.Header.Get("Retry-After"))
				assert.Equal(t, "0", r.Header.Get("RateLimit-Remaining"))
				assert.NotEmpty(t, r.Header.Get("RateLimit-Limit"))
			}
			assert.Equal(t, 0, srv.Ledger().Total())

			retry := create(t, c, srv, "k", bodyA)
			assert.Equal(t, http.StatusAccepted, retry.Status, "the key was not stored: the retry runs")
			assert.Empty(t, retry.Header.Get("Idempotent-Replayed"))
			replay := create(t, c, srv, "k", bodyA)
			assert.Equal(t, retry.Body, replay.Body)
			assert.Equal(t, 1, srv.Ledger().Total())

			reqs := srv.Requests()
			require.Len(t, reqs, 3)
			assert.Equal(t, f.Kind, reqs[0].Fault)
			assert.Equal(t, tt.status, reqs[0].Status)
			assert.Equal(t, FaultNone, reqs[1].Fault)
		})
	}
}

func TestDropAfterCommit(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	srv.InjectFaults(Fault{Kind: FaultDropAfterCommit, Method: http.MethodPost, Path: "/v1/generations"})

	_, err := send(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
		"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", "k")
	require.Error(t, err, "the response was dropped")
	assert.Equal(t, 1, srv.Ledger().Total(), "the work was committed")

	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, http.StatusAccepted, r.Status)
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	id, _ := decode(t, r)["id"].(string)
	assert.Equal(t, srv.Ledger().Charges[0].GenerationID, id)

	l := srv.Ledger()
	assert.Equal(t, 1, l.Total())
	assert.Equal(t, map[string]int{"k": 1}, l.ByIdempotencyKey())
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, FaultDropAfterCommit, reqs[0].Fault)
	assert.Equal(t, 0, reqs[0].Status)
	assert.True(t, reqs[1].Replayed)
}

func TestResetBeforeWork(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	srv.InjectFaults(Fault{Kind: FaultReset})

	_, err := send(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
		"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", "k")
	require.Error(t, err)
	assert.Equal(t, 0, srv.Ledger().Total())

	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, http.StatusAccepted, r.Status)
	assert.Empty(t, r.Header.Get("Idempotent-Replayed"), "nothing was stored by the reset request")
	assert.Equal(t, 1, srv.Ledger().Total())
	assert.Equal(t, FaultReset, srv.Requests()[0].Fault)
}

func TestLatencyFault(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	srv.InjectFaults(Fault{Kind: FaultLatency, Latency: 30 * time.Millisecond})
	start := time.Now()
	r := create(t, c, srv, "k", bodyA)
	assert.Equal(t, http.StatusAccepted, r.Status)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
	assert.Equal(t, FaultLatency, srv.Requests()[0].Fault)
}

func TestFaultFilterAndOrder(t *testing.T) {
	srv := NewServer(t)
	c := client(t)
	srv.InjectFaults(
		Fault{Kind: FaultStatus, Status: 503, Method: http.MethodPost, Path: "/v1/generations"},
		Fault{Kind: FaultStatus, Status: 500},
	)
	// The GET skips the first fault (filtered) and takes the second.
	assert.Equal(t, 500, get(t, c, srv, "/v1/account").Status)
	assert.Equal(t, 503, create(t, c, srv, "", bodyA).Status)
	assert.Equal(t, http.StatusAccepted, create(t, c, srv, "", bodyA).Status)
}

func TestFaultRatesDeterministic(t *testing.T) {
	run := func() []FaultKind {
		srv := NewServer(t, WithRateLimit(0, 0), WithFaultRates(FaultRates{Status500: 0.3, Status503: 0.2, RateLimit429: 0.2}, 42))
		c := client(t)
		var kinds []FaultKind
		for range 30 {
			create(t, c, srv, "", bodyA)
		}
		get(t, c, srv, "/v1/account") // not billable: never faulted
		for _, r := range srv.Requests() {
			kinds = append(kinds, r.Fault)
		}
		assert.Equal(t, FaultNone, kinds[len(kinds)-1])
		return kinds
	}
	a, b := run(), run()
	assert.Equal(t, a, b)
	assert.Contains(t, a, FaultStatus)
	assert.Contains(t, a, FaultRateLimit)
	assert.Contains(t, a, FaultNone)
}

func TestConcurrentSameKey(t *testing.T) {
	srv := NewServer(t, WithRateLimit(0, 0), WithWorkTime(20*time.Millisecond))
	c := client(t)
	const n = 50
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = send(t, c, srv, http.MethodPost, "/v1/generations", bodyA,
				"Authorization", "Bearer "+srv.APIKey, "Content-Type", "application/json", "Idempotency-Key", "same")
		}()
	}
	wg.Wait()

	assert.Equal(t, 1, srv.Ledger().Total(), "exactly one execution")
	var created []byte
	for _, r := range results {
		switch r.Status {
		case http.StatusAccepted:
			if created == nil {
				created = r.Body
			}
			assert.Equal(t, created, r.Body)
		case http.StatusConflict:
			assert.Equal(t, "request_in_progress", errCode(t, r))
		default:
			t.Errorf("unexpected status %d: %s", r.Status, r.Body)
		}
	}
	require.NotNil(t, created)
	var fresh int
	for _, r := range srv.Requests() {
		if r.Status == http.StatusAccepted && !r.Replayed {
			fresh++
		}
	}
	assert.Equal(t, 1, fresh)
}

// TestTruncatedBodyNotHandled: a request whose connection ends before its
// Content-Length bytes arrived (a proxy cutting the stream, a client
// crashing mid-send) is not a request. The server must not run it on the
// partial body and store that answer under the key: the client's retry with
// the full bytes would get 409 idempotency_key_reuse and the call would be
// lost.
func TestTruncatedBodyNotHandled(t *testing.T) {
	srv := NewServer(t, WithRateLimit(0, 0))
	const key = "cut-1"
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	head := "POST /v1/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + srv.APIKey +
		"\r\nContent-Type: application/json\r\nIdempotency-Key: " + key +
		"\r\nContent-Length: " + strconv.Itoa(len(bodyA)) + "\r\n\r\n"
	_, err = io.WriteString(conn, head+bodyA[:len(bodyA)/2])
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, _ := io.ReadAll(conn) // the server may answer or just close
	assert.NotContains(t, string(got), "HTTP/1.1 2", "a cut request must not succeed")

	r := create(t, client(t), srv, key, bodyA)
	assert.Equal(t, http.StatusAccepted, r.Status, "the full request under the same key: %s", r.Body)
	assert.Equal(t, 1, srv.Ledger().Total())
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, 0, reqs[0].Status, "the cut request got no answer")
}
