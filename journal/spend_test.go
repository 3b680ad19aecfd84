package journal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// spendClock is a clock the spend tests move by hand.
type spendClock struct{ ns atomic.Int64 }

func (c *spendClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *spendClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newSpendClock() *spendClock {
	c := &spendClock{}
	c.ns.Store(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func spendIntent(i int, at time.Time) safegen.Intent {
	return safegen.Intent{ID: fmt.Sprintf("order-%d", i), Key: fmt.Sprintf("key-%d", i), Method: "POST",
		Path: "/v1/generations", Body: []byte(fmt.Sprintf(`{"prompt":"spend %d"}`, i)), CreatedAt: at}
}

func requireTotals(t *testing.T, j *File, spent, reserved float64) {
	t.Helper()
	rep, err := j.Spend(context.Background())
	require.NoError(t, err)
	require.InDelta(t, spent, rep.Spent, 1e-9, "spent")
	require.InDelta(t, reserved, rep.Reserved, 1e-9, "reserved")
}

func opsOf(recs []record) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[r.Op]++
	}
	return n
}

// A Reserve that returned is on disk: a copy of the file taken without
// Close (what a crash leaves) holds it. A Settle that lowers a charge may be
// lost: the key is then still reserved, which only holds credits back. A
// Settle that charges more than the key held is on disk when it returns.
func TestReserveDurableWithoutClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := Open(path, WithFlushInterval(time.Hour))
	require.NoError(t, err)
	defer j.Close()
	for _, k := range []string{"key-a", "key-b"} {
		_, err := j.Reserve(ctx, k, 30, 100)
		require.NoError(t, err)
	}
	_, err = j.Settle(ctx, "key-c", 5) // never reserved: durable
	require.NoError(t, err)
	_, err = j.Settle(ctx, "key-b", 35) // above its reservation: durable
	require.NoError(t, err)
	_, err = j.Settle(ctx, "key-a", 10) // below: batched
	require.NoError(t, err)
	requireTotals(t, j, 50, 0)
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	crashed := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(crashed, data, 0o600))
	c, err := Open(crashed, WithStrict())
	require.NoError(t, err)
	defer c.Close()
	requireTotals(t, c, 40, 30)
	_, err = c.Reserve(ctx, "key-d", 31, 100)
	require.ErrorIs(t, err, safegen.ErrSpendLimit, "the restarted process counts what the crash left reserved")
}

// The first spend record that would go into a version 1 file rewrites it as
// version 2 first, keeping every intent; a Reserve refused by the limit
// writes nothing and upgrades nothing.
func TestV1UpgradedByFirstSpend(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		spend func(j *File) error
		want  safegen.SpendReport
	}{
		{"Reserve", func(j *File) error { _, err := j.Reserve(ctx, "v1-key-big", 12, 100); return err }, safegen.SpendReport{Reserved: 12}},
		{"Settle", func(j *File) error { _, err := j.Settle(ctx, "v1-key-done", 7); return err }, safegen.SpendReport{Spent: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, original, golden := copyV1(t)
			j, err := Open(path, WithClock(v1Clock))
			require.NoError(t, err)
			_, err = j.Reserve(ctx, "too-much", 12, 10)
			require.ErrorIs(t, err, safegen.ErrSpendLimit)
			require.Equal(t, 1, j.version)
			now, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, original, now, "a refused Reserve writes nothing")

			require.NoError(t, tc.spend(j))
			require.Equal(t, FormatVersion, j.version)
			require.NoError(t, j.Close())
			recs := records(t, path)
			require.Equal(t, record{Op: opHeader, Version: FormatVersion}, recs[0])

			j, err = Open(path, WithClock(v1Clock), WithStrict())
			require.NoError(t, err)
			defer j.Close()
			require.Zero(t, j.Recovery())
			requireTotals(t, j, tc.want.Spent, tc.want.Reserved)
			p, err := j.Pending(ctx)
			require.NoError(t, err)
			requireGolden(t, golden.Pending, p)
		})
	}
}

// Compaction keeps the totals: reserved keys as reserve records, settled
// keys of kept intents as settle records, and the charges of the others
// folded into one spent record. Intents dropped by retention take their
// keys' entries with them; their charges stay in Spent.
func TestSpendSurvivesCompactionAndRetention(t *testing.T) {
	ctx := context.Background()
	clock := newSpendClock()
	path := filepath.Join(t.TempDir(), "journal")
	opts := []Option{WithClock(clock.Now), WithRetention(time.Hour), WithCompactThreshold(0)}
	j, err := Open(path, opts...)
	require.NoError(t, err)
	defer func() { j.Close() }()
	// 0-9 charged 10, 10-19 refunded (0), 20-21 pending with their outcome
	// unknown, and a key settled without any intent.
	for i := range 22 {
		in := spendIntent(i, clock.Now())
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
		_, err = j.Reserve(ctx, in.Key, 10, 1000)
		require.NoError(t, err)
		if i >= 20 {
			continue
		}
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201}))
		charged := 10.0
		if i >= 10 {
			charged = 0
		}
		_, err = j.Settle(ctx, in.Key, charged)
		require.NoError(t, err)
	}
	_, err = j.Settle(ctx, "orphan", 2.5)
	require.NoError(t, err)
	requireTotals(t, j, 102.5, 20)

	require.NoError(t, j.Compact())
	requireTotals(t, j, 102.5, 20)
	ops := opsOf(records(t, path))
	require.Equal(t, 20, ops[opSettle], "the settled keys of kept intents")
	require.Equal(t, 2, ops[opReserve])
	require.Equal(t, 1, ops[opSpent], "the orphan's charge, folded")
	require.Len(t, j.spend.Entries(), 22)

	clock.Advance(2 * time.Hour)
	require.NoError(t, j.Compact())
	requireTotals(t, j, 102.5, 20)
	recs := records(t, path)
	ops = opsOf(recs)
	require.Zero(t, ops[opSettle], "their intents are past retention")
	require.Equal(t, 2, ops[opReserve], "unknown outcomes stay reserved")
	require.Equal(t, 1, ops[opSpent])
	require.Equal(t, 2, ops[opBegin], "the two pending intents")
	require.Len(t, j.spend.Entries(), 2, "the ledger forgets what the journal forgot")
	for _, r := range recs[1:] {
		require.NotEqual(t, opHeader, r.Op)
	}

	require.NoError(t, j.Close())
	j, err = Open(path, append(opts, WithStrict())...)
	require.NoError(t, err)
	requireTotals(t, j, 102.5, 20)
	_, err = j.Reserve(ctx, "key-new", 877.5, 1000)
	require.NoError(t, err, "exactly what is left")
	_, err = j.Reserve(ctx, "key-more", 0.5, 1000)
	require.ErrorIs(t, err, safegen.ErrSpendLimit)
	// A key whose intent was forgotten is a new call if it comes back.
	_, err = j.Settle(ctx, "key-3", 1)
	require.NoError(t, err)
	requireTotals(t, j, 103.5, 897.5)
}

// Under a steady stream of journaled, reserved and settled calls, the file
// and the ledger stay bounded and the totals stay exact, across reopening.
func TestSpendBoundedUnderLoad(t *testing.T) {
	ctx := context.Background()
	clock := newSpendClock()
	path := filepath.Join(t.TempDir(), "journal")
	const threshold = 32 << 10
	opts := []Option{WithClock(clock.Now), WithRetention(time.Minute), WithCompactThreshold(threshold)}
	j, err := Open(path, opts...)
	require.NoError(t, err)
	defer func() { j.Close() }()
	var largest int64
	var spent float64
	for i := range 3000 {
		in := spendIntent(i, clock.Now())
		_, err := j.Begin(ctx, in)
		require.NoError(t, err)
		_, err = j.Reserve(ctx, in.Key, 4, -1)
		require.NoError(t, err)
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: in.Body}))
		charged := float64(i % 4)
		_, err = j.Settle(ctx, in.Key, charged)
		require.NoError(t, err)
		spent += charged
		clock.Advance(time.Second)
		size, err := ContentSize(path)
		require.NoError(t, err)
		largest = max(largest, size)
	}
	require.Less(t, largest, int64(2*threshold))
	require.Less(t, len(j.spend.Entries()), 200, "the ledger forgets with the intents")
	requireTotals(t, j, spent, 0)
	require.NoError(t, j.Close())
	j, err = Open(path, append(opts, WithStrict())...)
	require.NoError(t, err)
	requireTotals(t, j, spent, 0)
}

// Reserves and Settles racing with compactions lose nothing: the totals in
// memory and on disk are what the callers did.
func TestConcurrentSpendAndCompact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := Open(path, WithCompactThreshold(4<<10), WithFlushInterval(time.Millisecond), WithRetention(0))
	require.NoError(t, err)
	defer func() { j.Close() }()
	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*4+1000)
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				i := w*each + k
				in := spendIntent(i, time.Now())
				if _, err := j.Begin(ctx, in); err != nil {
					errs <- err
					return
				}
				_, err := j.Reserve(ctx, in.Key, 3, -1)
				errs <- err
				if i%3 == 0 {
					continue // unknown outcome
				}
				errs <- j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201})
				_, err = j.Settle(ctx, in.Key, float64(i%3))
				errs <- err
			}
		}()
	}
	var compactor sync.WaitGroup
	compactor.Add(1)
	go func() {
		defer compactor.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			errs <- j.Compact()
		}
	}()
	wg.Wait()
	close(stop)
	compactor.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var spent, reserved float64
	for i := range workers * each {
		if i%3 == 0 {
			reserved += 3
		} else {
			spent += float64(i % 3)
		}
	}
	requireTotals(t, j, spent, reserved)
	require.NoError(t, j.Close())
	j, err = Open(path, WithStrict())
	require.NoError(t, err)
	require.Zero(t, j.Recovery())
	requireTotals(t, j, spent, reserved)
}

// A record still waiting for its commit when a compaction takes its snapshot
// is in the snapshot, and is not written again after it: a settle written
// after the spent record that already folded its key in counted twice on
// the next Open (TestConcurrentSpendAndCompact failed about 1 run in 100
// under -race for it).
func TestCompactionSnapshotHoldsWaitingRecords(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	var j *File
	var armed atomic.Bool
	hook := func(f *os.File) error {
		if armed.CompareAndSwap(true, false) {
			// The commit's sync runs without the File's lock: this Settle
			// waits in buf for the next commit.
			if _, err := j.Settle(ctx, "key-1", 2); err != nil {
				return err
			}
		}
		return f.Sync()
	}
	j, err := Open(path, WithSyncFunc(hook), WithFlushInterval(time.Hour), WithRetention(0))
	require.NoError(t, err)
	in := spendIntent(1, time.Now())
	_, err = j.Begin(ctx, in)
	require.NoError(t, err)
	_, err = j.Reserve(ctx, in.Key, 3, -1)
	require.NoError(t, err)
	require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201}))
	armed.Store(true)
	// Compact commits the Complete (whose sync settles key-1), then drops
	// the finished intent and folds key-1's charge into the spent record.
	require.NoError(t, j.Compact())
	require.False(t, armed.Load(), "the Settle ran during the commit")
	requireTotals(t, j, 2, 0)
	require.NoError(t, j.Close())

	j, err = Open(path, WithStrict())
	require.NoError(t, err)
	requireTotals(t, j, 2, 0)
	require.NoError(t, j.Close())
}

func TestSpendClosed(t *testing.T) {
	ctx := context.Background()
	j, err := Open(filepath.Join(t.TempDir(), "journal"))
	require.NoError(t, err)
	require.NoError(t, j.Close())
	_, err = j.Reserve(ctx, "k", 1, 10)
	require.ErrorIs(t, err, ErrClosed)
	_, err = j.Settle(ctx, "k", 1)
	require.ErrorIs(t, err, ErrClosed)
	_, err = j.Spend(ctx)
	require.ErrorIs(t, err, ErrClosed)
}
