package safegen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

var params = &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox in snow", DurationS: 4}

// fastRetries keeps real waits in the millisecond range.
var fastRetries = safegen.WithBackoff(time.Millisecond, 2, 4*time.Millisecond)

func newClient(t *testing.T, srv *safegentest.Server, opts ...safegen.Option) *safegen.Client {
	t.Helper()
	all := append([]safegen.Option{safegen.WithBaseURL(srv.URL), fastRetries}, opts...)
	c, err := safegen.NewClient(srv.APIKey, all...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// billableAttempts returns the create requests the server saw.
func billableAttempts(srv *safegentest.Server) []safegentest.RecordedRequest {
	var out []safegentest.RecordedRequest
	for _, r := range srv.Requests() {
		if r.Method == http.MethodPost && r.Path == "/v1/generations" {
			out = append(out, r)
		}
	}
	return out
}

// assertOneLogicalCall checks what the server saw: every attempt carried
// the same key and the same bytes, and the ledger charged it exactly once.
func assertOneLogicalCall(t *testing.T, srv *safegentest.Server, key string, wantAttempts int) {
	t.Helper()
	reqs := billableAttempts(srv)
	require.Len(t, reqs, wantAttempts)
	for _, r := range reqs {
		assert.Equal(t, key, r.IdempotencyKey, "same key on every attempt")
		assert.Equal(t, reqs[0].Body, r.Body, "same bytes on every attempt")
	}
	l := srv.Ledger()
	assert.Equal(t, 1, l.Total(), "billed exactly once")
	assert.Equal(t, 1, l.ByIdempotencyKey()[key])
	assert.Empty(t, l.Duplicates())
}

func TestCreateSurvivesEachFault(t *testing.T) {
	faults := []struct {
		name string
		f    safegentest.Fault
	}{
		{"429 seconds", safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "0"}},
		{"429 HTTP date", safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: time.Now().Add(-time.Second).UTC().Format(http.TimeFormat)}},
		{"500", safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500}},
		{"502 HTML", safegentest.Fault{Kind: safegentest.FaultStatus, Status: 502, HTML: true}},
		{"503 empty", safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, EmptyBody: true}},
		{"connection reset", safegentest.Fault{Kind: safegentest.FaultReset}},
		{"drop after commit", safegentest.Fault{Kind: safegentest.FaultDropAfterCommit}},
	}
	for _, tt := range faults {
		t.Run(tt.name, func(t *testing.T) {
			srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
			f := tt.f
			f.Method, f.Path = http.MethodPost, "/v1/generations"
			srv.InjectFaults(f, f)
			c := newClient(t, srv)
			g, err := c.Generations.Create(context.Background(), params)
			require.NoError(t, err)
			assert.Equal(t, 3, g.Meta.Attempts)
			assert.NotEmpty(t, g.ID)
			assertOneLogicalCall(t, srv, g.Meta.IdempotencyKey, 3)
			if tt.f.Kind == safegentest.FaultDropAfterCommit {
				assert.True(t, g.Meta.Replayed, "the work was committed on the first attempt: the retry is a replay")
			}
		})
	}
}

func TestRequestInProgressThenReplay(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithWorkTime(60*time.Millisecond))
	c := newClient(t, srv, safegen.WithBackoff(20*time.Millisecond, 2, 40*time.Millisecond), safegen.WithMaxRetries(10))
	key, err := safegen.NewIdempotencyKey()
	require.NoError(t, err)
	var wg sync.WaitGroup
	gens := make([]*safegen.Generation, 2)
	errs := make([]error, 2)
	for i := range gens {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			gens[i], errs[i] = c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(key))
		}(i)
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	assert.Equal(t, gens[0].ID, gens[1].ID)
	assert.Equal(t, 1, srv.Ledger().Total())

	// With no retries the 409 comes back typed.
	srv.InjectFaults()
	key2, _ := safegen.NewIdempotencyKey()
	seenBefore := len(billableAttempts(srv))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(key2))
	}()
	require.Eventually(t, func() bool { return len(billableAttempts(srv)) > seenBefore }, 2*time.Second, time.Millisecond)
	_, err = c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(key2), safegen.WithMaxRetries(0))
	<-done
	require.ErrorIs(t, err, safegen.ErrRequestInProgress)
}

func TestKeyReuseWithOtherBody(t *testing.T) {
	for _, d := range []safegentest.Dialect{safegentest.DialectDefault, safegentest.DialectRelaystation, safegentest.DialectPatomic, safegentest.DialectClipia, safegentest.DialectRimp} {
		t.Run(string(d), func(t *testing.T) {
			srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithDialect(d))
			c := newClient(t, srv, safegen.WithDialect(safegen.Dialect(d)))
			_, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey("order-17"))
			require.NoError(t, err)
			other := *params
			other.Prompt = "something else"
			_, err = c.Generations.Create(context.Background(), &other, safegen.WithIdempotencyKey("order-17"))
			require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse)
			var apiErr *safegen.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, 409, apiErr.StatusCode)
			assert.Equal(t, "order-17", apiErr.IdempotencyKey)
			assert.Equal(t, 1, apiErr.Attempts)
			assert.Equal(t, 1, srv.Ledger().Total())
		})
	}
}

// TestDialects runs the same end-to-end scenario in every dialect: a create
// through a drop-after-commit and a 503, the replay, get, estimate, account.
func TestDialects(t *testing.T) {
	for _, d := range safegen.Dialects() {
		t.Run(string(d), func(t *testing.T) {
			srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithDialect(safegentest.Dialect(d)),
				safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond))
			srv.InjectFaults(
				safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"},
				safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Method: "POST", Path: "/v1/generations"},
			)
			c := newClient(t, srv, safegen.WithDialect(d), safegen.WithPollInterval(time.Millisecond, 2*time.Millisecond))
			ctx := context.Background()
			g, err := c.Generations.Create(ctx, params)
			require.NoError(t, err)
			assertOneLogicalCall(t, srv, g.Meta.IdempotencyKey, 3)
			assert.NotEmpty(t, g.Meta.RequestID)
			switch d {
			case safegen.DialectDefault, safegen.DialectRimp, safegen.DialectPatomic:
				assert.True(t, g.Meta.Replayed, "%s sends a replay header", d)
			default:
				assert.False(t, g.Meta.Replayed, "%s sends no replay header", d)
			}
			done, err := c.Generations.Wait(ctx, g.ID)
			require.NoError(t, err)
			assert.Equal(t, safegen.StatusSucceeded, done.Status)
			est, err := c.Generations.Estimate(ctx, params)
			require.NoError(t, err)
			assert.Equal(t, g.Cost, est.Credits)
			acct, err := c.Account(ctx)
			require.NoError(t, err)
			assert.Greater(t, acct.Credits, 0.0)
			for _, r := range srv.Requests() {
				if r.Method == http.MethodGet || strings.HasSuffix(r.Path, "/estimate") {
					assert.Empty(t, r.IdempotencyKey, "%s %s carries no key", r.Method, r.Path)
				}
				if d == safegen.DialectRealm {
					assert.Equal(t, srv.APIKey, r.Header.Get("X-Api-Key"))
					assert.Empty(t, r.Header.Get("Authorization"))
				} else {
					assert.Equal(t, "Bearer "+srv.APIKey, r.Header.Get("Authorization"))
				}
			}
			assert.Equal(t, 1, srv.Ledger().Total(), "estimate, get and account never charge")
		})
	}
}

func TestRimpKeyLength(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithDialect(safegentest.DialectRimp))
	c := newClient(t, srv, safegen.WithDialect(safegen.DialectRimp))
	_, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(strings.Repeat("k", 201)))
	require.ErrorIs(t, err, safegen.ErrInvalidIdempotencyKey)
	_, err = c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(strings.Repeat("k", 200)))
	require.NoError(t, err)
	assert.Len(t, billableAttempts(srv), 1, "the invalid key never left the client")
}

func TestInvalidKeysRejectedLocally(t *testing.T) {
	srv := safegentest.NewServer(t)
	c := newClient(t, srv)
	for _, k := range []string{strings.Repeat("a", 256), "tab\there", "é", " lead", "trail ", "new\nline"} {
		_, err := c.Generations.Create(context.Background(), params, safegen.WithIdempotencyKey(k))
		require.ErrorIs(t, err, safegen.ErrInvalidIdempotencyKey, "%q", k)
	}
	assert.Empty(t, srv.Requests())
}

// TestConcurrentCreatesWithFaults: one Client shared by 200 goroutines,
// with faults; the ledger shows exactly 200 charges, none twice.
func TestConcurrentCreatesWithFaults(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithFaultRates(safegentest.FaultRates{
		Status500: 0.05, Status502HTML: 0.05, Status503: 0.05, RateLimit429: 0.05, Reset: 0.05, DropAfterCommit: 0.1,
	}, 7))
	c := newClient(t, srv, safegen.WithMaxRetries(10))
	const n = 200
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g, err := c.Generations.Create(context.Background(), params)
			errs[i] = err
			if g != nil {
				ids[i] = g.ID
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range ids {
		require.NoError(t, errs[i])
		assert.False(t, seen[ids[i]], "generation returned twice")
		seen[ids[i]] = true
	}
	l := srv.Ledger()
	assert.Equal(t, n, l.Total())
	assert.Empty(t, l.Duplicates())
	assert.Greater(t, len(billableAttempts(srv)), n, "faults forced retries")
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name string
		key  string
		opts []safegen.Option
		want string
	}{
		{"empty key", "", []safegen.Option{safegen.WithBaseURL("https://api.example.com")}, "empty API key"},
		{"key with newline", "sk\n", []safegen.Option{safegen.WithBaseURL("https://api.example.com")}, "API key holds"},
		{"no base URL", "sk", nil, "no base URL"},
		{"bad scheme", "sk", []safegen.Option{safegen.WithBaseURL("ftp://x")}, "scheme"},
		{"unparsable", "sk", []safegen.Option{safegen.WithBaseURL("http://[::1")}, "bad base URL"},
		{"no host", "sk", []safegen.Option{safegen.WithBaseURL("https://")}, "no host"},
		{"credentials in URL", "sk", []safegen.Option{safegen.WithBaseURL("https://u:p@api.example.com")}, "credentials"},
		{"plain http to a remote host", "sk", []safegen.Option{safegen.WithBaseURL("http://api.example.com")}, "plain http"},
		{"negative retries", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithMaxRetries(-1)}, "negative"},
		{"bad backoff", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithBackoff(0, 2, time.Second)}, "WithBackoff"},
		{"bad dialect", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithDialect("nope")}, "unknown dialect"},
		{"nil HTTP client", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithHTTPClient(nil)}, "nil"},
		{"per-call option on client", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithIdempotencyKey("k")}, "per-call"},
		{"bad header", "sk", []safegen.Option{safegen.WithBaseURL("https://a.example"), safegen.WithHeader("Authorization", "x")}, "set by the client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := safegen.NewClient(tt.key, tt.opts...)
			require.Nil(t, c)
			require.ErrorContains(t, err, tt.want)
			if tt.key != "" {
				assert.NotContains(t, err.Error(), tt.key+"\n")
			}
		})
	}
	c, err := safegen.NewClient("sk", safegen.WithBaseURL("http://api.example.com"), safegen.WithInsecureHTTP())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	for _, u := range []string{"http://127.0.0.1:1", "http://localhost:8080/api/", "http://[::1]:9"} {
		c, err := safegen.NewClient("sk", safegen.WithBaseURL(u))
		require.NoError(t, err, u)
		c.Close()
	}
}

func TestClientOnlyOptionsRefusedPerCall(t *testing.T) {
	srv := safegentest.NewServer(t)
	c := newClient(t, srv)
	for _, o := range []safegen.Option{safegen.WithBaseURL("https://x.example"), safegen.WithDialect(safegen.DialectRealm), safegen.WithRetryBudget(1), safegen.WithJournal(nil)} {
		_, err := c.Generations.Create(context.Background(), params, o)
		require.ErrorContains(t, err, "client option")
	}
	assert.Empty(t, srv.Requests())
	_, err := c.Generations.Create(context.Background(), params, safegen.WithIntentID("job-1"))
	require.ErrorContains(t, err, "needs a journal")
}

func TestPerCallOptionsDoNotLeak(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv, safegen.WithHeader("X-Team", "video"))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503})
	_, err := c.Generations.Create(context.Background(), params, safegen.WithMaxRetries(0), safegen.WithHeader("X-Trace", "t1"))
	require.ErrorIs(t, err, safegen.ErrServer)
	_, err = c.Generations.Create(context.Background(), params)
	require.NoError(t, err)
	reqs := srv.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "t1", reqs[0].Header.Get("X-Trace"))
	assert.Equal(t, "video", reqs[0].Header.Get("X-Team"))
	assert.Empty(t, reqs[1].Header.Get("X-Trace"), "a call's header stays with the call")
	assert.Equal(t, "video", reqs[1].Header.Get("X-Team"))
	assert.NotEqual(t, reqs[0].IdempotencyKey, reqs[1].IdempotencyKey, "one fresh key per logical call")
	assert.Equal(t, "1", reqs[1].Header.Get(safegen.AttemptHeader))
	assert.Contains(t, reqs[1].Header.Get("User-Agent"), "safegen-go/")
}

func TestDoKeysNonSafeMethods(t *testing.T) {
	var mu sync.Mutex
	keys := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys[r.Method] = r.Header.Get("Idempotency-Key")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write([]byte(`{"ok":true,"method":"` + r.Method + `"}`))
	}))
	defer srv.Close()
	c, err := safegen.NewClient("sk_1", safegen.WithBaseURL(srv.URL))
	require.NoError(t, err)
	defer c.Close()
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"} {
		var out struct {
			OK     bool   `json:"ok"`
			Method string `json:"method"`
		}
		var meta safegen.ResponseMeta
		require.NoError(t, c.Do(context.Background(), m, "/v1/marketplace/listings?limit=5", map[string]any{"title": "x"}, &out, safegen.WithResponseMeta(&meta)), m)
		if m != "HEAD" {
			assert.Equal(t, m, out.Method)
		}
		switch m {
		case "GET", "HEAD", "OPTIONS":
			assert.Empty(t, keys[m], m)
			assert.Empty(t, meta.IdempotencyKey)
		default:
			assert.NotEmpty(t, keys[m], m)
			assert.Equal(t, keys[m], meta.IdempotencyKey)
		}
	}
	var raw []byte
	require.NoError(t, c.Do(context.Background(), "POST", "/v1/keys", []byte(`{"name":"ci"}`), &raw))
	assert.JSONEq(t, `{"ok":true,"method":"POST"}`, string(raw))
	require.ErrorIs(t, c.Do(context.Background(), "post", "/x", nil, nil), safegen.ErrInvalidRequest)
	require.ErrorIs(t, c.Do(context.Background(), "GET", "http://evil.example/x", nil, nil), safegen.ErrInvalidRequest)
	require.Error(t, c.Do(context.Background(), "GET", "/x", nil, nil, safegen.WithIdempotencyKey("k")), "a safe call takes no key")
}

func TestRedirectToAnotherHostNotFollowed(t *testing.T) {
	var leaked atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "" || r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		w.WriteHeader(200)
	}))
	defer evil.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	for _, d := range []safegen.Dialect{safegen.DialectDefault, safegen.DialectRealm} {
		c, err := safegen.NewClient("sk_secret", safegen.WithBaseURL(strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)), safegen.WithDialect(d))
		require.NoError(t, err)
		_, err = c.Generations.Get(context.Background(), "gen_1")
		var apiErr *safegen.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, 307, apiErr.StatusCode)
		assert.NotContains(t, err.Error(), "sk_secret")
		c.Close()
	}
	assert.Zero(t, leaked.Load(), "the key never reached another host")
}

// TestNoSecretInLogsOrErrors scans every log line and error of a failing run.
func TestNoSecretInLogsOrErrors(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClient(t, srv, safegen.WithLogger(logger), safegen.WithMaxRetries(2))
	srv.InjectFaults(
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 502, HTML: true},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500},
		safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503},
	)
	_, err := c.Generations.Create(context.Background(), params)
	require.Error(t, err)
	bad, err2 := safegen.NewClient("sk_wrong_secret", safegen.WithBaseURL(srv.URL), safegen.WithLogger(logger))
	require.NoError(t, err2)
	defer bad.Close()
	_, err3 := bad.Generations.Create(context.Background(), params)
	require.ErrorIs(t, err3, safegen.ErrAuthentication)
	for _, s := range []string{logs.String(), err.Error(), err3.Error()} {
		assert.NotContains(t, s, srv.APIKey)
		assert.NotContains(t, s, "sk_wrong_secret")
	}
	assert.Contains(t, logs.String(), "retrying")
}

func TestCreateValidatesParams(t *testing.T) {
	srv := safegentest.NewServer(t)
	c := newClient(t, srv)
	for _, p := range []*safegen.GenerationCreateParams{nil, {Prompt: "x"}, {Model: "m"}, {Model: "m", Prompt: "p", DurationS: -1}, {Model: "m", Prompt: "p", WebhookURL: "not a url"}} {
		_, err := c.Generations.Create(context.Background(), p)
		require.ErrorIs(t, err, safegen.ErrInvalidRequest)
	}
	assert.Empty(t, srv.Requests())
}

func TestMalformedSuccessBodies(t *testing.T) {
	bodies := map[string]string{"html": "<html>ok</html>", "empty": "", "cut": `{"id":"gen_1","sta`, "no id": `{"status":"queued"}`}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-Id", "req_9")
				w.WriteHeader(202)
				_, _ = w.Write([]byte(body))
			}))
			defer srv.Close()
			c, err := safegen.NewClient("sk", safegen.WithBaseURL(srv.URL))
			require.NoError(t, err)
			defer c.Close()
			g, err := c.Generations.Create(context.Background(), params)
			require.Nil(t, g)
			require.ErrorIs(t, err, safegen.ErrMalformedResponse)
			assert.Contains(t, err.Error(), "req_9", "the request id is kept to reconcile")
		})
	}
}

func TestResponseTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 2048))
	}))
	defer srv.Close()
	c, err := safegen.NewClient("sk", safegen.WithBaseURL(srv.URL), safegen.WithMaxResponseBytes(1024))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Generations.Get(context.Background(), "gen_1")
	require.ErrorIs(t, err, safegen.ErrResponseTooLarge)
}

func TestWaitHonorsContext(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	c := newClient(t, srv, safegen.WithPollInterval(time.Millisecond, 5*time.Millisecond))
	g, err := c.Generations.Create(context.Background(), params)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Generations.Wait(ctx, g.ID)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
}

func TestGenerationDecodesLeniently(t *testing.T) {
	var g safegen.Generation
	require.NoError(t, json.Unmarshal([]byte(`{"id":"gen_1","status":"queued","cost":1.5,"created_at":"yesterday"}`), &g))
	assert.Equal(t, "gen_1", g.ID)
	assert.True(t, g.CreatedAt.IsZero())
	assert.Equal(t, 1.5, g.Cost)
}
