package safegen_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// Tests written for gaps a mutation run found (issue #18): each fails on a
// planted bug that the older tests let through. scripts/mutate.sh plants
// them again on demand; docs/mutation.md lists them.

// gapCtx bounds a test's calls, so a bug that makes the client wait fails
// the test in seconds instead of hanging the package.
func gapCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// stoppedClock is a Clock whose time moves only when the client sleeps.
type stoppedClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func (c *stoppedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stoppedClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

// billingServer is a minimal API server that sees through the client: it
// records every request, answers each key's first attempts from a script,
// then bills the key once and replays that answer to every later attempt.
type billingServer struct {
	*httptest.Server
	// fail answers attempt n (from 1) of a key, or returns false to let it
	// through to billing.
	fail func(key string, n int, w http.ResponseWriter) bool

	mu      sync.Mutex
	seen    map[string][]string // key -> the bodies, one per attempt
	charges map[string]int
}

func newBillingServer(t *testing.T, fail func(key string, n int, w http.ResponseWriter) bool) *billingServer {
	s := &billingServer{fail: fail, seen: map[string][]string{}, charges: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		s.mu.Lock()
		s.seen[key] = append(s.seen[key], string(body))
		n := len(s.seen[key])
		s.mu.Unlock()
		if s.fail != nil && s.fail(key, n, w) {
			return
		}
		s.mu.Lock()
		s.charges[key]++
		replayed := s.charges[key] > 1
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"gen_%s","status":"queued","model":"img-2"}`, key)
	}))
	t.Cleanup(s.Close)
	return s
}

// Seen returns the bodies the server got under key, one per attempt.
func (s *billingServer) Seen(key string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen[key]...)
}

// Keys returns how many keys the server saw, and how many requests in all.
func (s *billingServer) Keys() (keys, requests int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.seen {
		requests += len(b)
	}
	return len(s.seen), requests
}

// completion is one Complete call a recordingJournal saw.
type completion struct {
	Key     string
	Status  int
	Expired bool
}

// recordingJournal wraps a KeyJournal and records what the client asked
// of it: the intents it began and the keys it completed.
type recordingJournal struct {
	safegen.KeyJournal
	mu        sync.Mutex
	begun     []safegen.Intent
	completed []completion
}

func (r *recordingJournal) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	r.mu.Lock()
	r.begun = append(r.begun, in)
	r.mu.Unlock()
	return r.KeyJournal.Begin(ctx, in)
}

func (r *recordingJournal) Complete(ctx context.Context, key string, out safegen.Outcome) error {
	r.mu.Lock()
	r.completed = append(r.completed, completion{Key: key, Status: out.StatusCode, Expired: out.Expired})
	r.mu.Unlock()
	return r.KeyJournal.Complete(ctx, key, out)
}

func (r *recordingJournal) Completed() []completion {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]completion(nil), r.completed...)
}

func (r *recordingJournal) Begun() []safegen.Intent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]safegen.Intent(nil), r.begun...)
}

func pendingKeys(t *testing.T, j safegen.KeyJournal) []string {
	t.Helper()
	p, err := j.Pending(context.Background())
	require.NoError(t, err)
	keys := []string{}
	for _, in := range p {
		keys = append(keys, in.Key)
	}
	return keys
}

func gapIntent(i int, created time.Time) safegen.Intent {
	return safegen.Intent{
		ID: fmt.Sprintf("job-%02d", i), Key: fmt.Sprintf("key-%02d", i), Method: http.MethodPost, Path: "/v1/generations",
		Body: []byte(fmt.Sprintf(`{"model":"img-2","prompt":"intent %d"}`, i)), CreatedAt: created,
	}
}

// TestResumeDrivesEveryPendingIntent: Resume re-sends every pending intent,
// however many more there are than it drives at once (4): each key reaches
// the server with its own bytes, is billed once, and is completed.
func TestResumeDrivesEveryPendingIntent(t *testing.T) {
	const n = 25
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	j := &recordingJournal{KeyJournal: journal.NewMemory()}
	ctx := gapCtx(t)
	now := time.Now()
	want := map[string]string{}
	for i := range n {
		in := gapIntent(i, now.Add(-time.Duration(n-i)*time.Second))
		_, err := j.KeyJournal.Begin(ctx, in)
		require.NoError(t, err)
		want[in.Key] = string(in.Body)
	}
	c := newClient(t, srv, safegen.WithJournal(j))
	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	assert.Len(t, rep.Completed, n)
	assert.Empty(t, rep.Failed)
	assert.Empty(t, rep.Expired)

	byKey := srv.Ledger().ByIdempotencyKey()
	assert.Len(t, byKey, n)
	for key := range want {
		assert.Equal(t, 1, byKey[key], "%s billed once", key)
	}
	for _, r := range billableAttempts(srv) {
		assert.Equal(t, want[r.IdempotencyKey], string(r.Body), "%s re-sent with its own bytes", r.IdempotencyKey)
	}
	completed := map[string]bool{}
	for _, cp := range j.Completed() {
		completed[cp.Key] = true
	}
	assert.Len(t, completed, n)
	assert.Empty(t, pendingKeys(t, j))
}

// TestRetriesRunOutLeavesIntentPending: a 429 or a 409 request_in_progress
// (or a 503) still there when the retries run out is not an outcome: the
// intent stays pending, nothing is completed, and a later Resume re-sends it
// under its key with its bytes, and it is billed once.
func TestRetriesRunOutLeavesIntentPending(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter)
		want   error
	}{
		{"429", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"type":"rate_limit_error","code":"rate_limit_exceeded","message":"slow down"}}`)
		}, safegen.ErrRateLimited},
		{"409 request_in_progress", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":{"type":"idempotency_error","code":"request_in_progress","message":"still working"}}`)
		}, safegen.ErrRequestInProgress},
		{"503", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"type":"api_error","code":"service_unavailable","message":"later"}}`)
		}, safegen.ErrServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const failures = 3 // the first call's three attempts
			srv := newBillingServer(t, func(key string, n int, w http.ResponseWriter) bool {
				if n <= failures {
					tt.answer(w)
					return true
				}
				return false
			})
			j := &recordingJournal{KeyJournal: journal.NewMemory()}
			clk := &stoppedClock{now: time.Now()}
			c, err := safegen.NewClient("sk_test_gaps", safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
				safegen.WithClock(clk), safegen.WithMaxRetries(2))
			require.NoError(t, err)
			defer c.Close()
			ctx := gapCtx(t)

			_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a lighthouse"},
				safegen.WithIdempotencyKey("order-17"))
			require.ErrorIs(t, err, tt.want)
			require.Len(t, srv.Seen("order-17"), failures)
			assert.Empty(t, j.Completed(), "no outcome recorded")
			assert.Equal(t, []string{"order-17"}, pendingKeys(t, j), "the intent stays pending")

			rep, err := c.Resume(ctx)
			require.NoError(t, err)
			require.Len(t, rep.Completed, 1)
			assert.Equal(t, "order-17", rep.Completed[0].Meta.IdempotencyKey)
			seen := srv.Seen("order-17")
			require.Len(t, seen, failures+1, "Resume re-sent it")
			for _, b := range seen {
				assert.Equal(t, seen[0], b, "same bytes on every attempt")
			}
			assert.Equal(t, []completion{{Key: "order-17", Status: http.StatusAccepted}}, j.Completed())
			assert.Empty(t, pendingKeys(t, j))
			keys, _ := srv.Keys()
			assert.Equal(t, 1, keys)
		})
	}
}

// TestCompleteUsesTheIntentsKey: every Complete names the key the server
// saw, which is the intent's key: the journal's when it already held the
// intent, never the fresh key the call would have used.
func TestCompleteUsesTheIntentsKey(t *testing.T) {
	ctx := gapCtx(t)
	params := &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a lighthouse"}
	srv := newBillingServer(t, func(key string, n int, w http.ResponseWriter) bool {
		if n == 1 && len(key) == 36 { // a fresh key's first attempt: the connection dies
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return true
		}
		if key == "key-declined" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusPaymentRequired)
			_, _ = io.WriteString(w, `{"error":{"type":"billing_error","code":"insufficient_credits","message":"top up"}}`)
			return true
		}
		return false
	})
	j := &recordingJournal{KeyJournal: journal.NewMemory()}
	clk := &stoppedClock{now: time.Now()}
	c, err := safegen.NewClient("sk_test_gaps", safegen.WithBaseURL(srv.URL), safegen.WithJournal(j), safegen.WithClock(clk))
	require.NoError(t, err)
	defer c.Close()

	// 1. A fresh key, no retries: the call fails in transit and stays pending.
	_, err = c.Generations.Create(ctx, params, safegen.WithIntentID("job-1"), safegen.WithMaxRetries(0))
	require.Error(t, err)
	require.Len(t, j.Begun(), 1)
	k1 := j.Begun()[0].Key
	require.Empty(t, j.Completed())

	// 2. The same intent again: the journal's key goes out, not the fresh
	// key this call proposed, and the outcome is recorded under it.
	g, err := c.Generations.Create(ctx, params, safegen.WithIntentID("job-1"))
	require.NoError(t, err)
	require.Len(t, j.Begun(), 2)
	assert.NotEqual(t, k1, j.Begun()[1].Key, "the second call proposed a key of its own")
	assert.Equal(t, k1, g.Meta.IdempotencyKey)
	assert.Len(t, srv.Seen(k1), 2)
	assert.Empty(t, srv.Seen(j.Begun()[1].Key), "the proposed key never went out")

	// 3. A caller's own key, and a definitive refusal.
	_, err = c.Generations.Create(ctx, params, safegen.WithIdempotencyKey("key-mine"))
	require.NoError(t, err)
	_, err = c.Generations.Create(ctx, params, safegen.WithIdempotencyKey("key-declined"))
	require.ErrorIs(t, err, safegen.ErrInsufficientCredits)

	// 4. Resume: an intent named apart from its key, and an expired one.
	_, err = j.KeyJournal.Begin(ctx, safegen.Intent{ID: "job-9", Key: "key-9", Method: http.MethodPost, Path: "/v1/generations",
		Body: []byte(`{"model":"img-2","prompt":"nine"}`), CreatedAt: clk.Now().Add(-time.Hour)})
	require.NoError(t, err)
	_, err = j.KeyJournal.Begin(ctx, safegen.Intent{ID: "job-old", Key: "key-old", Method: http.MethodPost, Path: "/v1/generations",
		Body: []byte(`{"model":"img-2","prompt":"old"}`), CreatedAt: clk.Now().Add(-30 * time.Hour)})
	require.NoError(t, err)
	rep, err := c.Resume(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Completed, 1)
	require.Len(t, rep.Expired, 1)
	assert.Len(t, srv.Seen("key-9"), 1)
	assert.Empty(t, srv.Seen("key-old"))
	assert.Empty(t, srv.Seen("job-9"), "an intent id is never sent as a key")

	assert.Equal(t, []completion{
		{Key: k1, Status: http.StatusAccepted},
		{Key: "key-mine", Status: http.StatusAccepted},
		{Key: "key-declined", Status: http.StatusPaymentRequired},
		{Key: "key-old", Expired: true},
		{Key: "key-9", Status: http.StatusAccepted},
	}, j.Completed())
	assert.Empty(t, pendingKeys(t, j))
}

// TestResumeExpiryMargin: on a stopped clock, an intent created exactly
// window minus margin ago, or just after, is re-sent; one created just
// before is expired and never sent.
func TestResumeExpiryMargin(t *testing.T) {
	for _, w := range []struct {
		name           string
		window, margin time.Duration
		opts           []safegen.Option
	}{
		{"defaults: 24h, 1h", 24 * time.Hour, time.Hour, nil},
		{"2h, 30m", 2 * time.Hour, 30 * time.Minute, []safegen.Option{safegen.WithKeyWindow(2*time.Hour, 30*time.Minute)}},
	} {
		t.Run(w.name, func(t *testing.T) {
			ctx := gapCtx(t)
			srv := newBillingServer(t, nil)
			j := journal.NewMemory()
			clk := &stoppedClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			cutoff := clk.Now().Add(-(w.window - w.margin))
			ages := map[string]time.Time{
				"key-at":      cutoff,
				"key-inside":  cutoff.Add(time.Nanosecond),
				"key-outside": cutoff.Add(-time.Nanosecond),
				"key-margin":  clk.Now().Add(-w.window + time.Nanosecond), // inside the window, not the margin
			}
			for key, created := range ages {
				_, err := j.Begin(ctx, safegen.Intent{ID: key, Key: key, Method: http.MethodPost, Path: "/v1/generations",
					Body: []byte(`{"model":"img-2","prompt":"x"}`), CreatedAt: created})
				require.NoError(t, err)
			}
			opts := append([]safegen.Option{safegen.WithBaseURL(srv.URL), safegen.WithJournal(j), safegen.WithClock(clk)}, w.opts...)
			c, err := safegen.NewClient("sk_test_gaps", opts...)
			require.NoError(t, err)
			defer c.Close()
			rep, err := c.Resume(ctx)
			require.NoError(t, err)
			var expired, completed []string
			for _, in := range rep.Expired {
				expired = append(expired, in.Key)
			}
			for _, r := range rep.Completed {
				completed = append(completed, r.Intent.Key)
			}
			assert.ElementsMatch(t, []string{"key-outside", "key-margin"}, expired)
			assert.ElementsMatch(t, []string{"key-at", "key-inside"}, completed)
			assert.Len(t, srv.Seen("key-at"), 1)
			assert.Len(t, srv.Seen("key-inside"), 1)
			assert.Empty(t, srv.Seen("key-outside"), "never re-sent")
			assert.Empty(t, srv.Seen("key-margin"), "never re-sent")
			assert.Empty(t, pendingKeys(t, j))
		})
	}
}

// TestValidateIdempotencyKeyEdges: the edges of a valid key, byte by byte.
func TestValidateIdempotencyKeyEdges(t *testing.T) {
	tests := []struct {
		name    string
		dialect safegen.Dialect
		key     string
		ok      bool
	}{
		{"one byte", safegen.DialectDefault, "k", true},
		{"255 bytes", safegen.DialectDefault, strings.Repeat("k", 255), true},
		{"256 bytes", safegen.DialectDefault, strings.Repeat("k", 256), false},
		{"rimp: 200 bytes", safegen.DialectRimp, strings.Repeat("k", 200), true},
		{"rimp: 201 bytes", safegen.DialectRimp, strings.Repeat("k", 201), false},
		{"empty", safegen.DialectDefault, "", false},
		{"every printable byte", safegen.DialectDefault, "!" + printableASCII() + "~", true},
		{"inner space", safegen.DialectDefault, "order 17", true},
		{"DEL", safegen.DialectDefault, "order\x7f17", false},
		{"unit separator", safegen.DialectDefault, "order\x1f17", false},
		{"byte 0x80", safegen.DialectDefault, "order\x8017", false},
		{"leading space", safegen.DialectDefault, " order-17", false},
		{"trailing space", safegen.DialectDefault, "order-17 ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := safegen.ValidateIdempotencyKey(tt.dialect, tt.key)
			if tt.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, safegen.ErrInvalidIdempotencyKey)
			}
		})
	}
}

func printableASCII() string {
	var b strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		b.WriteByte(c)
	}
	return b.String()
}
