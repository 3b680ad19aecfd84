package pgjournal_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/pgjournal"
)

func TestAcquireAndRelease(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	a := open(t, pool, pgjournal.WithNamespace(ns), pgjournal.WithOwner("a"), pgjournal.WithLease(time.Minute))
	b := open(t, pool, pgjournal.WithNamespace(ns), pgjournal.WithOwner("b"), pgjournal.WithLease(time.Minute))

	// Not recorded yet: nobody needs a lease (Begin will take it).
	l, err := b.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.Equal(t, pgjournal.Lease{Held: true}, l)

	in := intent(1)
	in.Job = &safegen.Job{Step: safegen.JobStarted, Path: "out/1"}
	begin(t, a, in)
	// a holds it: b is told who and for how long.
	l, err = b.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.False(t, l.Held)
	assert.Equal(t, "a", l.Owner)
	assert.InDelta(t, float64(time.Minute), float64(l.Left), float64(5*time.Second))
	// a may acquire its own again.
	l, err = a.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.True(t, l.Held)

	// b's Release of a's lease does nothing; a's own Release frees it.
	require.NoError(t, b.Release(ctx, "job-1"))
	l, err = b.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.False(t, l.Held)
	require.NoError(t, a.Release(ctx, "job-1"))
	l, err = b.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.True(t, l.Held)
	// Now b holds it: a's claims skip it, b's renewer keeps it.
	unfinished, err := a.Unfinished(ctx)
	require.NoError(t, err)
	assert.Empty(t, unfinished)
	n, err := b.Renew(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)

	// A finished job needs no lease.
	require.NoError(t, b.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 202, CompletedAt: t0}))
	require.NoError(t, b.Advance(ctx, in.Key, safegen.Job{Step: safegen.JobDownloaded, Path: "out/1", Status: safegen.StatusSucceeded}))
	l, err = a.Acquire(ctx, "job-1")
	require.NoError(t, err)
	assert.Equal(t, pgjournal.Lease{Held: true}, l)
	unfinished, err = a.Unfinished(ctx)
	require.NoError(t, err)
	assert.Empty(t, unfinished, "Acquire of a finished job leases nothing")
	require.NoError(t, a.Release(ctx, "job-unknown"))
}

func TestAcquireTakesOverAnExpiredLease(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	ns := freshNamespace(t)
	dead := open(t, pool, pgjournal.WithNamespace(ns), pgjournal.WithOwner("dead"), pgjournal.WithLease(50*time.Millisecond))
	live := open(t, pool, pgjournal.WithNamespace(ns), pgjournal.WithOwner("live"))
	begin(t, dead, intent(2))
	require.NoError(t, dead.Close()) // stops renewing: the lease runs out
	require.Eventually(t, func() bool {
		l, err := live.Acquire(ctx, "job-2")
		return err == nil && l.Held
	}, 5*time.Second, 10*time.Millisecond)
	pending, err := live.Pending(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"job-2"}, ids(pending))
	_, err = dead.Acquire(ctx, "job-2")
	require.ErrorIs(t, err, safegen.ErrJournalClosed)
	require.ErrorIs(t, dead.Release(ctx, "job-2"), safegen.ErrJournalClosed)
}
