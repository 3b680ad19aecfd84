package safegen

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/safegentest"
)

// End to end: the fake server delivers signed events, with retries, to a
// WebhookHandler; fn fails on each event's first delivery, and each event is
// processed successfully exactly once however often it is delivered.
func TestWebhookEndToEnd(t *testing.T) {
	tests := []struct {
		name       string
		sdk        Dialect
		srv        safegentest.Dialect
		header     string
		notHeader  string
		generation int
	}{
		{"default", DialectDefault, safegentest.DialectDefault, "X-Signature", "X-Clipia-Signature", 3},
		{"clipia", DialectClipia, safegentest.DialectClipia, "X-Clipia-Signature", "X-Signature", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-secret-"+tt.name))

			var mu sync.Mutex
			attempts := map[string]int{}  // fn calls per event id
			processed := map[string]int{} // successful fn calls per event id
			hook := httptest.NewServer(WebhookHandler([]string{secret}, func(ctx context.Context, e *Event) error {
				mu.Lock()
				defer mu.Unlock()
				attempts[e.ID]++
				if attempts[e.ID] == 1 {
					return assert.AnError
				}
				processed[e.ID]++
				return nil
			}))
			defer hook.Close()

			srv := safegentest.NewServer(t, safegentest.WithDialect(tt.srv), safegentest.WithWebhookSecret(secret),
				safegentest.WithWebhookRetry(time.Millisecond, 6),
				safegentest.WithGenerationTiming(time.Millisecond, time.Millisecond), safegentest.WithRateLimit(0, 0))
			c, err := NewClient(srv.APIKey, WithBaseURL(srv.URL), WithDialect(tt.sdk))
			require.NoError(t, err)
			defer c.Close()

			genIDs := map[string]bool{}
			for range tt.generation {
				gen, err := c.Generations.Create(context.Background(),
					&GenerationCreateParams{Model: "img-2", Prompt: "x", WebhookURL: hook.URL})
				require.NoError(t, err)
				genIDs[gen.ID] = true
			}

			succeeded := func() map[string]safegentest.WebhookDelivery {
				ok := map[string]safegentest.WebhookDelivery{}
				for _, d := range srv.WebhookDeliveries() {
					if d.Status == http.StatusNoContent {
						ok[d.EventID] = d
					}
				}
				return ok
			}
			require.Eventually(t, func() bool { return len(succeeded()) == tt.generation }, 10*time.Second, time.Millisecond)

			byEvent := map[string][]safegentest.WebhookDelivery{}
			for _, d := range srv.WebhookDeliveries() {
				byEvent[d.EventID] = append(byEvent[d.EventID], d)
				assert.NotEmpty(t, d.Header.Get(tt.header))
				assert.Empty(t, d.Header.Get(tt.notHeader))
			}
			require.Len(t, byEvent, tt.generation)
			for id, ds := range byEvent {
				require.Len(t, ds, 2, "event %s: one failed and one successful delivery", id)
				assert.Equal(t, http.StatusInternalServerError, ds[0].Status)
				assert.Equal(t, http.StatusNoContent, ds[1].Status)
				assert.True(t, strings.HasPrefix(ds[0].Type, "generation."))
			}

			// The sender repeats deliveries (a lost 2xx, a second sender):
			// replay each recorded delivery, failed and successful, once more.
			for _, ds := range byEvent {
				for _, d := range ds {
					req, err := http.NewRequest(http.MethodPost, hook.URL, bytes.NewReader(d.Body))
					require.NoError(t, err)
					req.Header = d.Header.Clone()
					resp, err := hook.Client().Do(req)
					require.NoError(t, err)
					resp.Body.Close()
					assert.Equal(t, http.StatusNoContent, resp.StatusCode)
				}
			}
			hook.Client().CloseIdleConnections()

			mu.Lock()
			defer mu.Unlock()
			require.Len(t, processed, tt.generation)
			for id, n := range processed {
				assert.Equal(t, 1, n, "event %s processed once", id)
				assert.Equal(t, 2, attempts[id], "event %s: fn ran for the failed and the retried delivery only", id)
			}
			// Each event is about one of our generations.
			for _, ds := range byEvent {
				e, err := ParseEvent(ds[1].Header, ds[1].Body, []string{secret}, WithWebhookClock(func() time.Time { return ds[1].At }))
				require.NoError(t, err)
				assert.True(t, genIDs[e.Data.ID], "event for generation %s", e.Data.ID)
				assert.True(t, e.Data.Status.Terminal())
			}
		})
	}
}
