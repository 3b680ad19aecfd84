package journal_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newIntent(i int) safegen.Intent {
	return safegen.Intent{
		ID: fmt.Sprintf("order-%d", i), Key: fmt.Sprintf("key-%d", i),
		Method: "POST", Path: "/v1/generations",
		Body:      []byte(fmt.Sprintf(`{"model":"veo-3-1-fast","prompt":"intent number %d"}`, i)),
		CreatedAt: t0.Add(time.Duration(i) * time.Second),
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t0.UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func begin(t *testing.T, j safegen.KeyJournal, ins ...safegen.Intent) {
	t.Helper()
	for _, in := range ins {
		got, err := j.Begin(context.Background(), in)
		require.NoError(t, err)
		require.Equal(t, in.Key, got.Key)
	}
}

// fileSize is the size of the journal's records at path (ContentSize).
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	n, err := journal.ContentSize(path)
	require.NoError(t, err)
	return n
}

func pendingIDs(t *testing.T, j safegen.KeyJournal) []string {
	t.Helper()
	p, err := j.Pending(context.Background())
	require.NoError(t, err)
	ids := []string{}
	for _, in := range p {
		ids = append(ids, in.ID)
	}
	return ids
}

// writeJournal writes n intents with a File and returns the file's bytes
// and the offset at which each record ends.
func writeJournal(t *testing.T, n int) (data []byte, ends []int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal")
	for i := range n {
		j, err := journal.Open(path)
		require.NoError(t, err)
		begin(t, j, newIntent(i))
		require.NoError(t, j.Close())
		ends = append(ends, fileSize(t, path))
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data, ends
}

func TestRecoverTornTailAtEveryOffset(t *testing.T) {
	data, ends := writeJournal(t, 3)
	last := ends[1]
	dir := t.TempDir()
	for cut := last; cut < int64(len(data)); cut++ {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d", cut))
		require.NoError(t, os.WriteFile(path, data[:cut], 0o600))
		j, err := journal.Open(path)
		require.NoError(t, err, "cut at %d", cut)
		require.Equal(t, []string{"order-0", "order-1"}, pendingIDs(t, j), "cut at %d", cut)
		rep := j.Recovery()
		if cut == last {
			require.Zero(t, rep, "a cut on a record boundary is no damage")
		} else {
			require.Equal(t, cut-last, rep.TruncatedBytes, "cut at %d", cut)
			require.Equal(t, 1, rep.SkippedRecords)
			require.Contains(t, rep.Reason, fmt.Sprintf("torn tail at offset %d", last))
		}
		require.Equal(t, last, fileSize(t, path), "truncated to the last intact record")
		// The journal goes on from there, and reopens clean.
		begin(t, j, newIntent(2))
		require.NoError(t, j.Close())
		j, err = journal.Open(path, journal.WithStrict())
		require.NoError(t, err)
		require.Equal(t, []string{"order-0", "order-1", "order-2"}, pendingIDs(t, j))
		require.NoError(t, j.Close())
		require.NoError(t, os.Remove(path))
	}
}

func TestRecoverBitFlipInMiddleRecord(t *testing.T) {
	data, ends := writeJournal(t, 3)
	dir := t.TempDir()
	for off := ends[0]; off < ends[1]; off++ {
		bit := byte(1) << (off % 8)
		path := filepath.Join(dir, fmt.Sprintf("flip-%d", off))
		flipped := bytes.Clone(data)
		flipped[off] ^= bit
		require.NoError(t, os.WriteFile(path, flipped, 0o600))

		_, err := journal.Open(path, journal.WithStrict())
		require.ErrorIs(t, err, journal.ErrCorrupt, "flip at %d", off)

		j, err := journal.Open(path)
		require.NoError(t, err, "flip at %d", off)
		require.Equal(t, []string{"order-0", "order-2"}, pendingIDs(t, j), "flip at %d: neighbours survive", off)
		rep := j.Recovery()
		require.Equal(t, ends[1]-ends[0], rep.TruncatedBytes, "flip at %d", off)
		require.Equal(t, 1, rep.SkippedRecords)
		require.Contains(t, rep.Reason, fmt.Sprintf("offset %d", ends[0]))
		require.NoError(t, j.Close())

		// The damage was cut out of the file, not just skipped.
		j, err = journal.Open(path, journal.WithStrict())
		require.NoError(t, err)
		require.Zero(t, j.Recovery())
		require.Equal(t, []string{"order-0", "order-2"}, pendingIDs(t, j))
		require.NoError(t, j.Close())
	}
}

func TestRecoverGarbage(t *testing.T) {
	good, _ := writeJournal(t, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		pending int
	}{
		{"magic soup", bytes.Repeat([]byte{0xff, 'S', 'G', 'J', 0xff, 0xff}, 500), 0},
		{"garbage before records", append(random(333), good...), 2},
		{"garbage after records", append(bytes.Clone(good), random(333)...), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			require.NoError(t, os.WriteFile(path, tc.data, 0o600))
			_, err := journal.Open(path, journal.WithStrict())
			require.ErrorIs(t, err, journal.ErrCorrupt)
			j, err := journal.Open(path)
			require.NoError(t, err)
			require.Positive(t, j.Recovery().SkippedRecords)
			require.Len(t, pendingIDs(t, j), tc.pending)
			begin(t, j, newIntent(7))
			require.NoError(t, j.Close())
			j, err = journal.Open(path, journal.WithStrict())
			require.NoError(t, err)
			require.Len(t, pendingIDs(t, j), tc.pending+1)
			require.NoError(t, j.Close())
		})
	}
}

// An open File writes zeros ahead of its records (a preallocation), so that a
// commit's fsync has no new size or block to record; a crash leaves them
// behind, as can a crash mid-append on ext4. They hold no record: Open takes
// them as free space, not damage (WithStrict opens the file, Recovery is
// zero), the next record goes right after the last one, and Close truncates
// them.
func TestPreallocatedZerosAfterRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithFlushInterval(time.Hour))
	big := func(i int) safegen.Intent {
		in := newIntent(i)
		in.Body = []byte(`{"prompt":"` + strings.Repeat("x", 20<<10) + `"}`)
		return in
	}
	for i := range 30 { // 600 KiB of records: the preallocation is extended more than once
		begin(t, j, big(i))
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	content := bytes.TrimRight(data, "\x00")
	require.Greater(t, len(data), len(content), "zeros are written ahead of the records")

	// A crash now leaves the zeros in the file.
	crashed := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(crashed, data, 0o600))
	c, err := journal.Open(crashed, journal.WithStrict())
	require.NoError(t, err)
	require.Zero(t, c.Recovery())
	require.Len(t, pendingIDs(t, c), 30)
	begin(t, c, newIntent(100))
	after, err := os.ReadFile(crashed)
	require.NoError(t, err)
	require.Len(t, after, len(data), "the record went into the zeros")
	require.Equal(t, content, after[:len(content)], "after the last record")
	require.Greater(t, len(bytes.TrimRight(after, "\x00")), len(content))
	require.NoError(t, c.Close())

	closed, err := os.ReadFile(crashed)
	require.NoError(t, err)
	require.Equal(t, bytes.TrimRight(after, "\x00"), closed, "Close leaves no zeros")
	c, err = journal.Open(crashed, journal.WithStrict())
	require.NoError(t, err)
	require.Len(t, pendingIDs(t, c), 31)
	require.NoError(t, c.Close())
	require.NoError(t, j.Close())
}

// A record torn by a crash inside the preallocation (its first bytes written, the
// rest still zeros) is damage: it is reported and cut off, and the records
// before it are kept.
func TestTornRecordInPreallocation(t *testing.T) {
	good, _ := writeJournal(t, 2)
	torn := append(bytes.Clone(good), good[:20]...) // a frame's header and 8 bytes of payload
	torn = append(torn, make([]byte, 4096)...)
	path := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(path, torn, 0o600))
	_, err := journal.Open(path, journal.WithStrict())
	require.ErrorIs(t, err, journal.ErrCorrupt)
	j, err := journal.Open(path)
	require.NoError(t, err)
	rep := j.Recovery()
	require.Equal(t, 1, rep.SkippedRecords)
	require.Equal(t, int64(20+4096), rep.TruncatedBytes)
	require.Contains(t, rep.Reason, fmt.Sprintf("torn tail at offset %d", len(good)))
	require.Len(t, pendingIDs(t, j), 2)
	require.NoError(t, j.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, good, data)
}

// A file that is not a journal (no record magic at its start and no intact
// record anywhere) is refused and keeps every byte: a mistyped --journal path
// must never truncate someone's notes.
func TestOpenRefusesNonJournal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"text", []byte("shopping list\n- eggs\n- milk\n")},
		{"json", []byte(`{"op":"begin","intent":{"id":"a"}}`)},
		{"random", random},
		{"zeros", make([]byte, 1000)},
		{"one byte", []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "notes.txt")
			require.NoError(t, os.WriteFile(path, tc.data, 0o644))
			for _, opts := range [][]journal.Option{nil, {journal.WithStrict()}, {journal.WithMustExist()}} {
				_, err := journal.Open(path, opts...)
				require.ErrorIs(t, err, journal.ErrNotJournal)
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, tc.data, got, "the file keeps its bytes")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 1, "nothing created beside it (no lock file)")
		})
	}
	t.Run("directory", func(t *testing.T) {
		_, err := journal.Open(t.TempDir())
		require.ErrorIs(t, err, journal.ErrNotJournal)
	})
}

func TestOpenMustExist(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "journal")
	_, err := journal.Open(path, journal.WithMustExist())
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(filepath.Join(dir, "sub"))
	require.ErrorIs(t, err, fs.ErrNotExist, "no parent directory created")
	// An empty file (a journal created and never written) opens.
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	j, err := journal.Open(path, journal.WithMustExist())
	require.NoError(t, err)
	require.NoError(t, j.Close())
}

// A real journal torn inside its very first record is still a journal: it is
// repaired, not refused.
func TestOpenTornFirstRecord(t *testing.T) {
	good, _ := writeJournal(t, 1)
	path := filepath.Join(t.TempDir(), "journal")
	for _, n := range []int{1, 3, 7, 20} {
		require.NoError(t, os.WriteFile(path, good[:n], 0o600))
		j, err := journal.Open(path)
		require.NoError(t, err, "cut at %d", n)
		require.Empty(t, pendingIDs(t, j))
		require.NoError(t, j.Close())
	}
}

func TestCompactKeepsLiveAndShrinks(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithClock(clock.Now), journal.WithRetention(time.Hour), journal.WithCompactThreshold(0))
	for i := range 100 {
		begin(t, j, newIntent(i))
	}
	// 0-49 completed two hours ago, 50-59 just now, 60-99 pending.
	for i := range 50 {
		require.NoError(t, j.Complete(ctx, newIntent(i).Key, safegen.Outcome{StatusCode: 201}))
	}
	clock.Advance(2 * time.Hour)
	for i := 50; i < 60; i++ {
		require.NoError(t, j.Complete(ctx, newIntent(i).Key, safegen.Outcome{StatusCode: 201, Body: []byte("kept")}))
	}
	require.NoError(t, j.Close())
	before := fileSize(t, path)

	j = openFile(t, path, journal.WithClock(clock.Now), journal.WithRetention(time.Hour), journal.WithCompactThreshold(0))
	require.NoError(t, j.Compact())
	after := fileSize(t, path)
	require.Less(t, after, before*6/10, "compaction shrinks the file")
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	_, err = os.Stat(path + ".compact")
	require.ErrorIs(t, err, os.ErrNotExist, "no temporary file is left behind")

	check := func(j safegen.KeyJournal) {
		t.Helper()
		var want []string
		for i := 60; i < 100; i++ {
			want = append(want, newIntent(i).ID)
		}
		require.Equal(t, want, pendingIDs(t, j), "pending intents are never dropped")
		for i := 50; i < 60; i++ {
			got, err := j.Begin(ctx, newIntent(i))
			require.NoError(t, err)
			require.NotNil(t, got.Outcome, "completed within retention: kept")
			require.Equal(t, "kept", string(got.Outcome.Body))
		}
		for i := range 50 {
			in := newIntent(i)
			in.Key = "fresh-" + in.Key
			got, err := j.Begin(ctx, in)
			require.NoError(t, err)
			require.Equal(t, in.Key, got.Key, "completed past retention: dropped, the id starts afresh")
		}
	}
	check(j)
	require.NoError(t, j.Close())
	j = openFile(t, path, journal.WithClock(clock.Now), journal.WithRetention(time.Hour))
	require.Zero(t, j.Recovery())
	require.Len(t, pendingIDs(t, j), 90)
}

func TestRetentionDropsOldCompleted(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	opts := []journal.Option{journal.WithClock(clock.Now), journal.WithRetention(25 * time.Hour)}
	j := openFile(t, path, opts...)
	begin(t, j, newIntent(1))
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201}))
	for _, tc := range []struct {
		advance time.Duration
		kept    bool
	}{
		{24 * time.Hour, true},
		{time.Hour - time.Nanosecond, true},
		{time.Nanosecond, false},
	} {
		clock.Advance(tc.advance)
		require.NoError(t, j.Close())
		j = openFile(t, path, opts...)
		require.NoError(t, j.Compact())
		in := newIntent(1)
		in.Key = "new-key"
		got, err := j.Begin(ctx, in)
		require.NoError(t, err)
		if tc.kept {
			require.Equal(t, "key-1", got.Key)
			require.NotNil(t, got.Outcome)
		} else {
			require.Equal(t, "new-key", got.Key)
			require.Nil(t, got.Outcome)
		}
	}
}

// Under a steady stream of calls that complete, the file stays bounded.
func TestFileSizeBoundedUnderLoad(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	const threshold = 32 << 10
	j := openFile(t, path, journal.WithClock(clock.Now), journal.WithRetention(time.Minute), journal.WithCompactThreshold(threshold))
	var largest int64
	for i := range 3000 {
		in := newIntent(i)
		begin(t, j, in)
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: in.Body}))
		clock.Advance(time.Second)
		largest = max(largest, fileSize(t, path))
	}
	require.Less(t, largest, int64(2*threshold))
	// 3000 begins and completes wrote some 30 times the bound.
	require.NoError(t, j.Close())
}

func TestLockSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := journal.Open(path)
	require.NoError(t, err)
	_, err = journal.Open(path)
	require.ErrorIs(t, err, journal.ErrLocked)
	require.NoError(t, j.Close())
	j, err = journal.Open(path)
	require.NoError(t, err, "Close releases the lock")
	require.NoError(t, j.Close())
}

func TestLockAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	child := func() (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lockChildEnv+"="+path)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	j, err := journal.Open(path)
	require.NoError(t, err)
	out, err := child()
	require.NoError(t, err, out)
	require.Contains(t, out, "locked:")
	require.NoError(t, j.Close())

	out, err = child()
	require.Error(t, err, "with the lock released, the child opens the journal")
	require.Contains(t, out, "opened")
}

func TestFileModes(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "journal")
	j := openFile(t, path)
	begin(t, j, newIntent(1))
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(base, "a"), 0o700 | os.ModeDir},
		{filepath.Join(base, "a", "b"), 0o700 | os.ModeDir},
		{path, 0o600},
		{path + ".lock", 0o600},
	} {
		fi, err := os.Stat(tc.path)
		require.NoError(t, err)
		require.Equal(t, tc.mode, fi.Mode(), tc.path)
	}
	entries, err := os.ReadDir(filepath.Join(base, "a", "b"))
	require.NoError(t, err)
	require.Len(t, entries, 2, "nothing but the journal and its lock")
}

// A Begin that returned is on disk: a copy of the file taken without Close
// (what a crash leaves) holds the intent.
func TestBeginDurableWithoutClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithFlushInterval(time.Hour))
	begin(t, j, newIntent(1), newIntent(2))
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201}))
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	crashed := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(crashed, data, 0o600))
	c := openFile(t, crashed, journal.WithStrict())
	for _, in := range []safegen.Intent{newIntent(1), newIntent(2)} {
		in.Key = "other"
		got, err := c.Begin(ctx, in)
		require.NoError(t, err)
		require.Equal(t, newIntent(in.CreatedAt.Second()).Key, got.Key)
	}
	// The unsynced Complete may be lost: intent 1 is then pending, and
	// replaying it under the same key is harmless.
	require.Subset(t, []string{"order-1", "order-2"}, pendingIDs(t, c))
}

func TestCompleteFlushedWithinInterval(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithFlushInterval(time.Millisecond))
	begin(t, j, newIntent(1))
	size := fileSize(t, path)
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201}))
	require.Eventually(t, func() bool { return fileSize(t, path) > size }, 5*time.Second, time.Millisecond)
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := journal.Open(path)
	require.NoError(t, err)
	begin(t, j, newIntent(1))
	require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201}))
	require.NoError(t, j.Close())
	_, err = j.Begin(ctx, newIntent(2))
	require.ErrorIs(t, err, journal.ErrClosed)
	require.ErrorIs(t, j.Complete(ctx, "key-1", safegen.Outcome{}), journal.ErrClosed)
	_, err = j.Pending(ctx)
	require.ErrorIs(t, err, journal.ErrClosed)
	require.ErrorIs(t, j.Advance(ctx, "key-1", safegen.Job{Step: safegen.JobStarted}), journal.ErrClosed)
	_, err = j.Unfinished(ctx)
	require.ErrorIs(t, err, journal.ErrClosed)
	require.ErrorIs(t, j.Compact(), journal.ErrClosed)
	require.ErrorIs(t, j.Close(), journal.ErrClosed)

	// Close flushed the Complete.
	j, err = journal.Open(path)
	require.NoError(t, err)
	require.Empty(t, pendingIDs(t, j))
	require.NoError(t, j.Close())
}

func TestBeginErrors(t *testing.T) {
	j := openFile(t, filepath.Join(t.TempDir(), "journal"))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	huge := newIntent(1)
	huge.Body = make([]byte, journal.MaxRecordSize)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		in   safegen.Intent
		want error
	}{
		{"cancelled", cancelled, newIntent(1), context.Canceled},
		{"too large", context.Background(), huge, journal.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Begin(tc.ctx, tc.in)
			require.ErrorIs(t, err, tc.want)
		})
	}
	require.Empty(t, pendingIDs(t, j))
}

func TestOptionsValidate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	for name, opt := range map[string]journal.Option{
		"negative retention": journal.WithRetention(-time.Second),
		"nil clock":          journal.WithClock(nil),
		"negative threshold": journal.WithCompactThreshold(-1),
		"zero interval":      journal.WithFlushInterval(0),
	} {
		_, err := journal.Open(path, opt)
		require.Error(t, err, name)
	}
	_, err := journal.Open("")
	require.Error(t, err)
}

func jobOf(step safegen.JobStep, status safegen.GenerationStatus) safegen.Job {
	return safegen.Job{Step: step, Path: "out/video.mp4", GenerationID: "gen_1", Status: status, UpdatedAt: t0}
}

func unfinishedIDs(t *testing.T, j safegen.JobJournal) []string {
	t.Helper()
	u, err := j.Unfinished(context.Background())
	require.NoError(t, err)
	ids := []string{}
	for _, in := range u {
		ids = append(ids, in.ID)
	}
	return ids
}

// An intent whose job is not done is never dropped, however old its
// outcome; once the job is done, the retention runs from then. Each check
// compacts and reopens, so it holds for the file, not only in memory.
func TestRetentionKeepsUnfinishedJobs(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	opts := []journal.Option{journal.WithClock(clock.Now), journal.WithRetention(time.Hour), journal.WithCompactThreshold(0)}
	j := openFile(t, path, opts...)
	video, plain, late := newIntent(1), newIntent(2), newIntent(3)
	started := jobOf(safegen.JobStarted, "")
	video.Job = &started
	begin(t, j, video, plain, late)
	for _, in := range []safegen.Intent{video, plain, late} {
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201}))
	}
	require.NoError(t, j.Advance(ctx, video.Key, jobOf(safegen.JobAccepted, safegen.StatusQueued)))
	// late gets a job half an hour after its outcome: the complete record
	// is past retention when the file is read again, its job record not.
	clock.Advance(30 * time.Minute)
	require.NoError(t, j.Advance(ctx, late.Key, started))

	kept := func(in safegen.Intent) bool {
		t.Helper()
		probe := in
		probe.Key = "probe-" + in.Key
		got, err := j.Begin(ctx, probe)
		require.NoError(t, err)
		return got.Key == in.Key
	}
	// Read every record again, then the compacted file.
	reopen := func() {
		t.Helper()
		require.NoError(t, j.Close())
		j = openFile(t, path, opts...)
		require.NoError(t, j.Compact())
		require.NoError(t, j.Close())
		j = openFile(t, path, opts...)
		require.Zero(t, j.Recovery())
	}
	for i, step := range []struct {
		advance    time.Duration
		job        *safegen.Job // advanced on video before the check
		videoKept  bool
		unfinished []string
	}{
		{100 * time.Hour, nil, true, []string{"order-1", "order-3"}},
		{time.Minute, &safegen.Job{Step: safegen.JobTerminal, Status: safegen.StatusSucceeded, UpdatedAt: t0}, true, []string{"order-1", "order-3"}},
		{time.Minute, &safegen.Job{Step: safegen.JobDownloaded, Status: safegen.StatusSucceeded, Size: 7, UpdatedAt: t0}, true, []string{"order-3"}},
		{time.Hour - time.Nanosecond, nil, true, []string{"order-3"}},
		{time.Nanosecond, nil, false, []string{"order-3"}},
	} {
		clock.Advance(step.advance)
		if step.job != nil {
			require.NoError(t, j.Advance(ctx, video.Key, *step.job))
		}
		reopen()
		require.Equal(t, step.unfinished, unfinishedIDs(t, j))
		require.Equal(t, step.videoKept, kept(video), "video after %v", step.advance)
		require.True(t, kept(late), "an unfinished job is never dropped")
		if i == 0 {
			require.False(t, kept(plain), "a plain call past retention is dropped")
		}
	}
}

// A job advanced again after it was done (a stale worker, a re-run) is
// unfinished again and kept past the retention.
func TestRetentionJobAdvancedAfterDone(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	opts := []journal.Option{journal.WithClock(clock.Now), journal.WithRetention(time.Hour), journal.WithCompactThreshold(0)}
	j := openFile(t, path, opts...)
	in := newIntent(1)
	begin(t, j, in)
	require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201}))
	require.NoError(t, j.Advance(ctx, in.Key, jobOf(safegen.JobDownloaded, safegen.StatusSucceeded)))
	clock.Advance(30 * time.Minute)
	require.NoError(t, j.Advance(ctx, in.Key, jobOf(safegen.JobTerminal, safegen.StatusSucceeded)))
	clock.Advance(2 * time.Hour)
	require.NoError(t, j.Compact())
	require.Equal(t, []string{"order-1"}, unfinishedIDs(t, j))
	require.NoError(t, j.Close())
	j = openFile(t, path, opts...)
	require.Equal(t, []string{"order-1"}, unfinishedIDs(t, j))
	require.NoError(t, j.Advance(ctx, in.Key, jobOf(safegen.JobDownloaded, safegen.StatusSucceeded)))
	clock.Advance(time.Hour)
	require.NoError(t, j.Compact())
	require.Empty(t, unfinishedIDs(t, j))
	require.Empty(t, pendingIDs(t, j))
	fresh := in
	fresh.Key = "fresh"
	got, err := j.Begin(ctx, fresh)
	require.NoError(t, err)
	require.Equal(t, "fresh", got.Key, "dropped one retention after it was done again")
}

// Compaction keeps each intent's latest job in its one record, and the file
// reads back the same.
func TestCompactKeepsLatestJob(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithCompactThreshold(0))
	want := map[string]safegen.Job{}
	for i := range 20 {
		in := newIntent(i)
		begin(t, j, in)
		for s, step := range []safegen.JobStep{safegen.JobStarted, safegen.JobAccepted, safegen.JobTerminal} {
			job := safegen.Job{Step: step, Path: fmt.Sprintf("out/%d.mp4", i), GenerationID: fmt.Sprintf("gen_%d", i),
				Status: safegen.StatusProcessing, UpdatedAt: t0.Add(time.Duration(s) * time.Second)}
			if step == safegen.JobTerminal {
				job.Status = safegen.StatusSucceeded
			}
			require.NoError(t, j.Advance(ctx, in.Key, job))
			want[in.ID] = job
		}
		if i%2 == 0 {
			require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201}))
		}
	}
	require.NoError(t, j.Close())
	before := fileSize(t, path)
	j = openFile(t, path, journal.WithCompactThreshold(0))
	require.NoError(t, j.Compact())
	require.Less(t, fileSize(t, path), before, "three job records per intent become one")
	require.NoError(t, j.Close())
	j = openFile(t, path, journal.WithStrict())
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 20)
	for _, in := range u {
		require.Equal(t, want[in.ID], *in.Job, in.ID)
		require.Equal(t, newIntent(int(in.CreatedAt.Sub(t0)/time.Second)).Body, in.Body)
	}
	require.Len(t, pendingIDs(t, j), 10)
}

// Advance is batched like Complete: a copy of the file taken without Close
// may lack the latest step (the job resumes from the one before), Close
// writes it.
func TestAdvanceBatched(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithFlushInterval(time.Hour))
	in := newIntent(1)
	first := jobOf(safegen.JobStarted, "")
	in.Job = &first
	begin(t, j, in)
	size := fileSize(t, path)
	latest := jobOf(safegen.JobAccepted, safegen.StatusQueued)
	require.NoError(t, j.Advance(ctx, in.Key, latest))
	require.Equal(t, size, fileSize(t, path), "not written yet")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	crashed := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(crashed, data, 0o600))
	c := openFile(t, crashed, journal.WithStrict())
	u, err := c.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 1)
	require.Equal(t, first, *u[0].Job, "the Begin's job is durable")

	begin(t, j, newIntent(2)) // a Begin carries the queued Advance with it
	require.Greater(t, fileSize(t, path), size)
	require.NoError(t, j.Close())
	j = openFile(t, path, journal.WithStrict())
	u, err = j.Unfinished(ctx)
	require.NoError(t, err)
	require.Len(t, u, 1)
	require.Equal(t, latest, *u[0].Job)
}

func TestAdvanceFlushedWithinInterval(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithFlushInterval(time.Millisecond))
	begin(t, j, newIntent(1))
	size := fileSize(t, path)
	require.NoError(t, j.Advance(ctx, "key-1", jobOf(safegen.JobStarted, "")))
	require.Eventually(t, func() bool { return fileSize(t, path) > size }, 5*time.Second, time.Millisecond)
}

// Under a steady stream of whole jobs that complete, the file stays bounded
// by automatic compaction, and the few jobs left unfinished all survive it.
func TestFileSizeBoundedWithJobs(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	path := filepath.Join(t.TempDir(), "journal")
	const threshold = 32 << 10
	j := openFile(t, path, journal.WithClock(clock.Now), journal.WithRetention(10*time.Second), journal.WithCompactThreshold(threshold))
	var largest int64
	var unfinished []string
	for i := range 2000 {
		in := newIntent(i)
		job := jobOf(safegen.JobStarted, "")
		in.Job = &job
		begin(t, j, in)
		require.NoError(t, j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: in.Body}))
		require.NoError(t, j.Advance(ctx, in.Key, jobOf(safegen.JobAccepted, safegen.StatusQueued)))
		if i%100 == 0 {
			unfinished = append(unfinished, in.ID)
		} else {
			require.NoError(t, j.Advance(ctx, in.Key, jobOf(safegen.JobDownloaded, safegen.StatusSucceeded)))
		}
		clock.Advance(time.Second)
		largest = max(largest, fileSize(t, path))
	}
	require.Less(t, largest, int64(2*threshold))
	require.ElementsMatch(t, unfinished, unfinishedIDs(t, j))
	require.NoError(t, j.Close())
	j = openFile(t, path, journal.WithClock(clock.Now), journal.WithStrict())
	require.ElementsMatch(t, unfinished, unfinishedIDs(t, j))
}

// Advances, Completes and Begins race with compactions (automatic and
// explicit): every intent ends with its last job, in memory and on disk.
func TestConcurrentAdvanceAndCompact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	j := openFile(t, path, journal.WithCompactThreshold(4<<10), journal.WithFlushInterval(time.Millisecond))
	const workers, each = 8, 40
	last := func(i int) safegen.Job {
		if i%4 == 0 {
			return safegen.Job{Step: safegen.JobTerminal, Path: fmt.Sprint(i), GenerationID: fmt.Sprint("gen_", i), Status: safegen.StatusSucceeded, UpdatedAt: t0}
		}
		return safegen.Job{Step: safegen.JobDownloaded, Path: fmt.Sprint(i), GenerationID: fmt.Sprint("gen_", i), Status: safegen.StatusSucceeded, Size: int64(i), UpdatedAt: t0}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*4+1000)
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				i := w*each + k
				in := newIntent(i)
				job := safegen.Job{Step: safegen.JobStarted, Path: fmt.Sprint(i), UpdatedAt: t0}
				in.Job = &job
				if _, err := j.Begin(ctx, in); err != nil {
					errs <- err
					return
				}
				errs <- j.Advance(ctx, in.Key, safegen.Job{Step: safegen.JobAccepted, Path: fmt.Sprint(i), GenerationID: fmt.Sprint("gen_", i), UpdatedAt: t0})
				errs <- j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: in.Body})
				errs <- j.Advance(ctx, in.Key, last(i))
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
			_, err := j.Unfinished(ctx)
			errs <- err
		}
	}()
	wg.Wait()
	close(stop)
	compactor.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	check := func(j *journal.File) {
		t.Helper()
		var want []string
		for i := range workers * each {
			in := newIntent(i)
			probe := in
			probe.Key = "probe"
			got, err := j.Begin(ctx, probe)
			require.NoError(t, err)
			require.Equal(t, in.Key, got.Key)
			require.NotNil(t, got.Outcome)
			require.Equal(t, last(i), *got.Job, in.ID)
			if !got.Job.Done() {
				want = append(want, in.ID)
			}
		}
		require.ElementsMatch(t, want, unfinishedIDs(t, j))
		require.Empty(t, pendingIDs(t, j))
	}
	check(j)
	require.NoError(t, j.Close())
	j = openFile(t, path, journal.WithStrict())
	require.Zero(t, j.Recovery())
	check(j)
}
