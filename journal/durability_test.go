package journal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

// eventLog is the order in which things happened, across goroutines: the
// journal's syncs, the first byte the server read, the requests it served.
type eventLog struct {
	mu     sync.Mutex
	events []string
	syncs  int
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
}

func (l *eventLog) Events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func (l *eventLog) Syncs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncs
}

// syncHook returns a sync function for journal.WithSyncFunc that logs each
// sync with whether the journal's bytes on disk (what was written before
// the sync began) hold needle, then syncs for real, or fails with failWith.
func (l *eventLog) syncHook(path, needle string, failWith error) func(f *os.File) error {
	return func(f *os.File) error {
		data, err := os.ReadFile(f.Name())
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.syncs++
		l.events = append(l.events, fmt.Sprintf("sync %s holding %s=%t", filepath.Base(f.Name()), needle, bytes.Contains(data, []byte(needle))))
		l.mu.Unlock()
		if failWith != nil {
			return failWith
		}
		return f.Sync()
	}
}

// existingJournal returns the path of a new, empty journal already written
// (its version header synced), so a test's sync hook sees only what its own
// calls write.
func existingJournal(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := journal.Open(path)
	require.NoError(t, err)
	require.NoError(t, j.Close())
	return path
}

// TestBeginSyncedBeforeItReturns: Begin writes its record, then syncs it,
// then returns; a failed sync fails Begin and every later call.
func TestBeginSyncedBeforeItReturns(t *testing.T) {
	ctx := context.Background()
	t.Run("order", func(t *testing.T) {
		path := existingJournal(t)
		log := &eventLog{}
		j := openFile(t, path, journal.WithSyncFunc(log.syncHook(path, "key-1", nil)), journal.WithFlushInterval(time.Hour))
		_, err := j.Begin(ctx, newIntent(1))
		require.NoError(t, err)
		log.add("Begin returned")
		assert.Equal(t, []string{"sync journal holding key-1=true", "Begin returned"}, log.Events(),
			"the record is written, then synced, then Begin returns")

		// A Complete is not synced on its own: Close carries it.
		require.NoError(t, j.Complete(ctx, "key-1", safegen.Outcome{StatusCode: 201}))
		assert.Equal(t, 1, log.Syncs())
		require.NoError(t, j.Close())
		assert.Equal(t, 2, log.Syncs())
	})
	t.Run("sync fails", func(t *testing.T) {
		path := existingJournal(t)
		log := &eventLog{}
		eio := errors.New("input/output error")
		j := openFile(t, path, journal.WithSyncFunc(log.syncHook(path, "key-1", eio)))
		_, err := j.Begin(ctx, newIntent(1))
		require.ErrorIs(t, err, eio, "an intent whose sync failed is not recorded")
		assert.Equal(t, 1, log.Syncs())
		// The file's tail is now unknown: the journal refuses to go on.
		_, err = j.Begin(ctx, newIntent(2))
		require.ErrorIs(t, err, eio)
		_, err = j.Pending(ctx)
		require.ErrorIs(t, err, eio)
	})
}

// firstByteListener logs the first byte the server reads on any connection.
type firstByteListener struct {
	net.Listener
	log  *eventLog
	once sync.Once
}

func (l *firstByteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &firstByteConn{Conn: c, l: l}, nil
}

type firstByteConn struct {
	net.Conn
	l *firstByteListener
}

func (c *firstByteConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.once.Do(func() { c.l.log.add("first request byte") })
	}
	return n, err
}

// TestCreateSendsNothingBeforeBeginIsSynced: through the client, the order
// is: the intent's record is written, it is synced, and only then does the
// server read the first byte of the request. A failed sync sends nothing.
func TestCreateSendsNothingBeforeBeginIsSynced(t *testing.T) {
	const key = "order-17-key"
	for _, tc := range []struct {
		name     string
		failWith error
		want     []string
	}{
		{"synced", nil, []string{
			"sync journal holding " + key + "=true",
			"first request byte",
			"request " + key + ": syncs=1, record on disk=true",
		}},
		{"sync fails", errors.New("input/output error"), []string{
			"sync journal holding " + key + "=true",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := existingJournal(t)
			log := &eventLog{}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				k := r.Header.Get("Idempotency-Key")
				data, _ := os.ReadFile(path)
				log.add("request %s: syncs=%d, record on disk=%t", k, log.Syncs(), bytes.Contains(data, []byte(k)))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				_, _ = w.Write([]byte(`{"id":"gen_1","status":"queued","model":"img-2"}`))
			}))
			srv.Listener = &firstByteListener{Listener: srv.Listener, log: log}
			srv.Start()
			defer srv.Close()

			j := openFile(t, path, journal.WithSyncFunc(log.syncHook(path, key, tc.failWith)), journal.WithFlushInterval(time.Hour))
			c, err := safegen.NewClient("sk_test_durability", safegen.WithBaseURL(srv.URL), safegen.WithJournal(j))
			require.NoError(t, err)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: "a lighthouse"},
				safegen.WithIdempotencyKey(key))
			if tc.failWith != nil {
				require.ErrorIs(t, err, tc.failWith)
				require.ErrorContains(t, err, "nothing sent")
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, log.Events())
		})
	}
}

// TestCompactionSyncsBeforeRename: the compacted copy is synced while the
// journal still holds its old bytes (before the rename makes the copy the
// journal); if that sync fails, the old journal stays as it was.
func TestCompactionSyncsBeforeRename(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		failWith error
	}{
		{"synced", nil},
		{"sync fails", errors.New("input/output error")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			clock := newClock()
			var mu sync.Mutex
			var compactSyncs []string
			var fail bool
			var old []byte
			hook := func(f *os.File) error {
				if filepath.Base(f.Name()) != "journal.compact" {
					return f.Sync()
				}
				cur, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				compactSyncs = append(compactSyncs, fmt.Sprintf("journal unchanged while its copy syncs: %t", bytes.Equal(cur, old)))
				if fail {
					return tc.failWith
				}
				return f.Sync()
			}
			opts := []journal.Option{journal.WithSyncFunc(hook), journal.WithClock(clock.Now), journal.WithRetention(time.Hour), journal.WithCompactThreshold(0)}
			j := openFile(t, path, opts...)
			for i := range 20 {
				begin(t, j, newIntent(i))
			}
			for i := range 10 {
				require.NoError(t, j.Complete(ctx, newIntent(i).Key, safegen.Outcome{StatusCode: 201}))
			}
			clock.Advance(2 * time.Hour)
			require.NoError(t, j.Close())
			j = openFile(t, path, opts...)
			var err error
			old, err = os.ReadFile(path)
			require.NoError(t, err)
			fail = tc.failWith != nil

			err = j.Compact()
			mu.Lock()
			assert.Equal(t, []string{"journal unchanged while its copy syncs: true"}, compactSyncs)
			mu.Unlock()
			after, rerr := os.ReadFile(path)
			require.NoError(t, rerr)
			if tc.failWith != nil {
				require.ErrorIs(t, err, tc.failWith)
				assert.Equal(t, old, after, "a failed compaction leaves the journal as it was")
				_, serr := os.Stat(path + ".compact")
				assert.ErrorIs(t, serr, os.ErrNotExist)
			} else {
				require.NoError(t, err)
				assert.Less(t, len(after), len(old), "compaction dropped the completed intents")
			}
			require.Len(t, pendingIDs(t, j), 10)
			require.NoError(t, j.Close())
			j = openFile(t, path, journal.WithStrict())
			require.Len(t, pendingIDs(t, j), 10, "the pending intents survive either way")
		})
	}
}

// TestAutoCompactionOnlyWhenHalfDead: past the threshold, a File rewrites
// itself only once at least half of it is dead. A file of pending intents
// is never rewritten (a rewrite on every commit would copy the whole file
// each time); once its intents are completed and past retention, the next
// commit compacts it, once, and it shrinks under the threshold.
func TestAutoCompactionOnlyWhenHalfDead(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal")
	clock := newClock()
	var mu sync.Mutex
	compactions := 0
	hook := func(f *os.File) error {
		if filepath.Base(f.Name()) == "journal.compact" {
			mu.Lock()
			compactions++
			mu.Unlock()
		}
		return f.Sync()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return compactions
	}
	const threshold = 8 << 10
	j := openFile(t, path, journal.WithSyncFunc(hook), journal.WithClock(clock.Now), journal.WithRetention(time.Hour),
		journal.WithCompactThreshold(threshold), journal.WithFlushInterval(time.Hour))
	n := 0
	for fileSize(t, path) < 3*threshold {
		begin(t, j, newIntent(n))
		n++
	}
	require.Zero(t, count(), "a file of pending intents is never rewritten")

	for i := range n {
		require.NoError(t, j.Complete(ctx, newIntent(i).Key, safegen.Outcome{StatusCode: 201}))
	}
	clock.Advance(2 * time.Hour)
	begin(t, j, newIntent(n)) // its commit carries the Completes, then compacts
	require.Equal(t, 1, count())
	require.Less(t, fileSize(t, path), int64(threshold))
	require.Equal(t, []string{newIntent(n).ID}, pendingIDs(t, j))
}
