package safegen_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

// One key under two intent ids is a key reuse, whatever the journal calls it,
// and nothing is sent for the second intent.
func TestKeyUnderTwoIntentIDsIsKeyReuse(t *testing.T) {
	for name, j := range map[string]safegen.KeyJournal{"memory": journal.NewMemory(), "file": openFileJournal(t)} {
		t.Run(name, func(t *testing.T) {
			srv := safegentest.NewServer(t, safegentest.WithRateLimit(0, 0))
			c := newClient(t, srv, safegen.WithJournal(j))
			ctx := context.Background()
			_, err := c.Generations.Create(ctx, params, safegen.WithIdempotencyKey("order-key-1"), safegen.WithIntentID("order-1"))
			require.NoError(t, err)
			_, err = c.Generations.Create(ctx, params, safegen.WithIdempotencyKey("order-key-1"), safegen.WithIntentID("order-2"))
			require.ErrorIs(t, err, safegen.ErrIdempotencyKeyReuse)
			require.ErrorIs(t, err, safegen.ErrKeyInUse)
			require.ErrorIs(t, err, journal.ErrKeyInUse, "the journal's historical name still matches")
			assert.Len(t, billableAttempts(srv), 1, "nothing sent for the second intent")
			assert.Equal(t, 1, srv.Ledger().Total())
		})
	}
}

func openFileJournal(t *testing.T) *journal.File {
	t.Helper()
	j, err := journal.Open(t.TempDir() + "/journal")
	require.NoError(t, err)
	t.Cleanup(func() { j.Close() })
	return j
}
