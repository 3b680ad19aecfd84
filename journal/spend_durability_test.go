package journal_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

// TestReserveSyncedBeforeItReturns: Reserve writes its record, then syncs
// it, then returns; a Settle at most what the key held waits for a later
// commit, one above it is synced before it returns; a failed sync fails
// Reserve and every later call.
func TestReserveSyncedBeforeItReturns(t *testing.T) {
	ctx := context.Background()
	t.Run("order", func(t *testing.T) {
		path := existingJournal(t)
		log := &eventLog{}
		j := openFile(t, path, journal.WithSyncFunc(log.syncHook(path, `"op":"reserve","key":"key-1"`, nil)),
			journal.WithFlushInterval(time.Hour))
		_, err := j.Reserve(ctx, "key-1", 12, 100)
		require.NoError(t, err)
		log.add("Reserve returned")
		assert.Equal(t, []string{`sync journal holding "op":"reserve","key":"key-1"=true`, "Reserve returned"}, log.Events(),
			"the record is written, then synced, then Reserve returns")

		_, err = j.Reserve(ctx, "key-1", 12, 100)
		require.NoError(t, err)
		_, err = j.Reserve(ctx, "key-2", 89, 100)
		require.ErrorIs(t, err, safegen.ErrSpendLimit)
		assert.Equal(t, 1, log.Syncs(), "a key already reserved and a refusal write nothing")

		_, err = j.Settle(ctx, "key-1", 12)
		require.NoError(t, err)
		assert.Equal(t, 1, log.Syncs(), "a charge within the reservation waits for a later commit")
		_, err = j.Settle(ctx, "key-1", 13)
		require.NoError(t, err)
		assert.Equal(t, 2, log.Syncs(), "a charge above it is synced before Settle returns")
		_, err = j.Settle(ctx, "key-1", 13)
		require.NoError(t, err)
		require.NoError(t, j.Close())
		assert.Equal(t, 2, log.Syncs(), "settling to the same charge writes nothing")
	})
	t.Run("sync fails", func(t *testing.T) {
		path := existingJournal(t)
		log := &eventLog{}
		eio := errors.New("input/output error")
		j := openFile(t, path, journal.WithSyncFunc(log.syncHook(path, "key-1", eio)))
		_, err := j.Reserve(ctx, "key-1", 12, 100)
		require.ErrorIs(t, err, eio)
		_, err = j.Reserve(ctx, "key-2", 1, 100)
		require.ErrorIs(t, err, eio)
		_, err = j.Settle(ctx, "key-1", 0)
		require.ErrorIs(t, err, eio)
		_, err = j.Spend(ctx)
		require.ErrorIs(t, err, eio)
	})
}
