package safegen_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// countingJournal counts the intents begun.
type countingJournal struct {
	safegen.KeyJournal
	begun atomic.Int64
}

func (j *countingJournal) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	j.begun.Add(1)
	return j.KeyJournal.Begin(ctx, in)
}

// cancels returns the cancel requests the server saw.
func cancels(srv *safegentest.Server) []safegentest.RecordedRequest {
	var out []safegentest.RecordedRequest
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, "/cancel") {
			out = append(out, r)
		}
	}
	return out
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name     string
		advance  time.Duration // after creation; 1 min queued, 1 min processing
		wantErr  error
		refunded bool
	}{
		{"queued: refunded", 0, nil, true},
		{"processing: charged", 90 * time.Second, nil, false},
		{"succeeded: nothing to cancel", 3 * time.Minute, safegen.ErrGenerationTerminal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := safegentest.NewManualClock(time.Now())
			srv := safegentest.NewServer(t, safegentest.WithClock(clk), safegentest.WithRateLimit(0, 0),
				safegentest.WithGenerationTiming(time.Minute, time.Minute))
			j := &countingJournal{KeyJournal: journal.NewMemory()}
			c := newClient(t, srv, safegen.WithJournal(j))
			ctx := context.Background()
			g, err := c.Generations.Create(ctx, params)
			require.NoError(t, err)
			clk.Advance(tt.advance)

			got, err := c.Generations.Cancel(ctx, g.ID)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var apiErr *safegen.APIError
				require.ErrorAs(t, err, &apiErr)
				assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
				assert.Equal(t, 1, apiErr.Attempts, "a terminal answer is not retried")
				assert.Nil(t, got)
			} else {
				require.NoError(t, err)
				assert.Equal(t, safegen.StatusCanceled, got.Status)
				assert.Equal(t, g.ID, got.ID)
				again, err := c.Generations.Cancel(ctx, g.ID)
				require.NoError(t, err, "repeating a cancel is harmless")
				assert.Equal(t, safegen.StatusCanceled, again.Status)
				done, err := c.Generations.Wait(ctx, g.ID)
				require.NoError(t, err)
				assert.Equal(t, safegen.StatusCanceled, done.Status)
			}
			l := srv.Ledger()
			assert.Equal(t, 1, l.Total())
			if tt.refunded {
				require.Len(t, l.Refunds, 1)
				assert.Equal(t, g.ID, l.Refunds[0].GenerationID)
				assert.Equal(t, int64(g.Cost), l.Refunded(srv.APIKey))
				assert.Equal(t, int64(0), l.NetCredits(srv.APIKey))
				assert.Equal(t, 0.0, got.Cost)
			} else {
				assert.Empty(t, l.Refunds)
				assert.Equal(t, int64(g.Cost), l.NetCredits(srv.APIKey))
			}
			for _, r := range cancels(srv) {
				assert.Equal(t, http.MethodPost, r.Method)
				assert.Empty(t, r.IdempotencyKey, "cancel carries no key")
				assert.Empty(t, r.Body)
			}
			assert.Equal(t, int64(1), j.begun.Load(), "only the create went through the journal")
			pending, err := j.Pending(ctx)
			require.NoError(t, err)
			assert.Empty(t, pending)
		})
	}
}

func TestCancelRetried(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(time.Hour, time.Hour))
	c := newClient(t, srv)
	ctx := context.Background()
	g, err := c.Generations.Create(ctx, params)
	require.NoError(t, err)
	p := "/v1/generations/" + g.ID + "/cancel"
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Path: p},
		safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Path: p})
	got, err := c.Generations.Cancel(ctx, g.ID)
	require.NoError(t, err)
	assert.Equal(t, safegen.StatusCanceled, got.Status)
	assert.Equal(t, 3, got.Meta.Attempts)
	reqs := cancels(srv)
	require.Len(t, reqs, 3)
	assert.Equal(t, "3", reqs[2].Header.Get(safegen.AttemptHeader))
	assert.Len(t, srv.Ledger().Refunds, 1, "a cancel committed twice refunds once")
}

func TestCancelBadInput(t *testing.T) {
	srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
	c := newClient(t, srv)
	ctx := context.Background()
	_, err := c.Generations.Cancel(ctx, "")
	require.ErrorIs(t, err, safegen.ErrInvalidRequest)
	_, err = c.Generations.Cancel(ctx, "gen_nope")
	require.ErrorIs(t, err, safegen.ErrNotFound)
	_, err = c.Generations.Cancel(ctx, "gen_x", safegen.WithIntentID("i"))
	require.Error(t, err, "cancel takes no intent")
	_, err = c.Generations.Cancel(ctx, "a/b")
	require.ErrorIs(t, err, safegen.ErrNotFound, "the id is escaped into one path segment")
	assert.Len(t, cancels(srv), 2, "the empty id and the intent were refused before sending")
}

// signalClock is a Clock whose Sleep lasts until its context ends (a poll
// interval never passes by itself) and says when one starts.
type signalClock struct{ sleeping chan time.Duration }

func (signalClock) Now() time.Time { return time.Now() }

func (c signalClock) Sleep(ctx context.Context, d time.Duration) error {
	c.sleeping <- d
	<-ctx.Done()
	return ctx.Err()
}

// TestWebhookEventEndsWait: a real delivery from the fake server, verified
// by WebhookHandler and handed to Notify, ends a Wait that is sleeping out
// a 10 s poll interval.
func TestWebhookEventEndsWait(t *testing.T) {
	var c *safegen.Client
	var notified atomic.Int64
	srvClk := safegentest.NewManualClock(time.Now())
	srv := safegentest.NewServer(t, safegentest.WithClock(srvClk), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(time.Minute, time.Minute))
	recv := httptest.NewServer(safegen.WebhookHandler([]string{srv.WebhookSecret}, func(_ context.Context, e *safegen.Event) error {
		notified.Add(1) // before Notify, which may end the Wait the test then checks
		c.Generations.Notify(e)
		return nil
	}))
	defer recv.Close()
	clk := signalClock{sleeping: make(chan time.Duration, 10)}
	c = newClient(t, srv, safegen.WithClock(clk), safegen.WithPollInterval(10*time.Second, 10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := *params
	p.WebhookURL = recv.URL
	g, err := c.Generations.Create(ctx, &p)
	require.NoError(t, err)
	type result struct {
		g   *safegen.Generation
		err error
	}
	done := make(chan result, 1)
	go func() {
		g, err := c.Generations.Wait(ctx, g.ID)
		done <- result{g, err}
	}()
	assert.GreaterOrEqual(t, <-clk.sleeping, 10*time.Second, "polled once, now sleeping 10 s or more")
	start := time.Now()
	srvClk.Advance(3 * time.Minute) // the generation finishes; the server sends its event
	r := <-done
	require.NoError(t, r.err, "the event, not the poll, ends the wait")
	t.Logf("Wait returned %v after the generation finished", time.Since(start))
	assert.Equal(t, safegen.StatusSucceeded, r.g.Status)
	assert.Equal(t, g.ID, r.g.ID)
	require.NotNil(t, r.g.Output)
	assert.NotEmpty(t, r.g.Output.SHA256)
	assert.Equal(t, int64(1), notified.Load())
	gets := 0
	for _, rr := range srv.Requests() {
		if rr.Method == http.MethodGet && rr.Path == "/v1/generations/"+g.ID {
			gets++
		}
	}
	assert.Equal(t, 1, gets, "one poll, then the event")
}
