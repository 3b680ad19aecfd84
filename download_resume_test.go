package safegen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/safegentest"
)

// dlFixture is a fake API with outputs of size bytes, a client on a fake
// clock, and one succeeded generation.
type dlFixture struct {
	srv  *safegentest.Server
	c    *Client
	clk  *fakeClock
	gen  *Generation
	body []byte
}

func newDLFixture(t *testing.T, size int64, opts ...Option) *dlFixture {
	t.Helper()
	srv := safegentest.NewServer(t, safegentest.WithClock(safegentest.NewManualClock(time.Now())),
		safegentest.WithRateLimit(0, 0), safegentest.WithGenerationTiming(0, 0), safegentest.WithOutputSize(size))
	clk := newFakeClock()
	c, err := NewClient(srv.APIKey, append([]Option{WithBaseURL(srv.URL), WithClock(clk)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	g, err := c.Generations.Create(ctx, testParams)
	require.NoError(t, err)
	g, err = c.Generations.Get(ctx, g.ID)
	require.NoError(t, err)
	require.Equal(t, StatusSucceeded, g.Status)
	body, err := io.ReadAll(safegentest.OutputBytes(g.ID, size))
	require.NoError(t, err)
	return &dlFixture{srv: srv, c: c, clk: clk, gen: g, body: body}
}

// outputRequests returns the output requests the server saw.
func (f *dlFixture) outputRequests() []safegentest.RecordedRequest {
	var out []safegentest.RecordedRequest
	for _, r := range f.srv.Requests() {
		if strings.HasPrefix(r.Path, "/v1/outputs/") {
			out = append(out, r)
		}
	}
	return out
}

// leavePartial writes a partial file and its record as a crashed process
// would have left them.
func leavePartial(t *testing.T, path string, b []byte, rec partialRecord) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".partial", b, 0o600))
	rec.Version = 1
	j, err := json.Marshal(rec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path+".partial.meta", j, 0o600))
}

func (f *dlFixture) assertFile(t *testing.T, path string) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(f.body, got), "the output's bytes at path")
	_, err = os.Stat(path + ".partial")
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(path + ".partial.meta")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestDownloadIfRangeMismatch: the bytes on disk carry another ETag than
// the server's: the server sends everything and the download starts over.
func TestDownloadIfRangeMismatch(t *testing.T) {
	const size = 300_000
	f := newDLFixture(t, size)
	g := *f.gen
	out := *g.Output
	out.SHA256 = "" // no sha256: only the ETag says what the bytes are
	g.Output = &out
	path := filepath.Join(t.TempDir(), "out.mp4")
	leavePartial(t, path, bytes.Repeat([]byte{7}, 1000), partialRecord{GenerationID: g.ID, Size: size, ETag: `"stale"`})

	res, err := f.c.Generations.Download(context.Background(), &g, path)
	require.NoError(t, err)
	assert.Equal(t, int64(0), res.Reused)
	assert.Equal(t, int64(size), res.Fetched)
	assert.Equal(t, 1, res.Attempts)
	assert.Equal(t, f.gen.Output.SHA256, res.SHA256, "verified by the ETag")
	f.assertFile(t, path)
	reqs := f.outputRequests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "bytes=1000-", reqs[0].Header.Get("Range"))
	assert.Equal(t, `"stale"`, reqs[0].Header.Get("If-Range"))
	assert.Equal(t, http.StatusOK, reqs[0].Status)
}

// TestDownloadKeptBytesBad: kept bytes that are wrong (a torn write before
// a crash) make the sha256 check fail; the download starts over once
// instead of reporting corruption.
func TestDownloadKeptBytesBad(t *testing.T) {
	const size = 300_000
	f := newDLFixture(t, size)
	path := filepath.Join(t.TempDir(), "out.mp4")
	bad := append([]byte(nil), f.body[:100_000]...)
	bad[5] ^= 1
	leavePartial(t, path, bad, partialRecord{GenerationID: f.gen.ID, Size: size, SHA256: f.gen.Output.SHA256})
	res, err := f.c.Generations.Download(context.Background(), f.gen, path)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts)
	assert.Equal(t, int64(size-100_000+size), res.Fetched)
	assert.Equal(t, int64(0), res.Reused, "nothing kept in the end")
	f.assertFile(t, path)
}

// TestDownloadPartialRecords: which leftovers are kept.
func TestDownloadPartialRecords(t *testing.T) {
	const size = 300_000
	tests := []struct {
		name       string
		partial    int // bytes of the true output left on disk
		rec        *partialRecord
		wantReused int64
		wantReqs   int
	}{
		{"matching record", 100_000, &partialRecord{SHA256: "$sha", Size: size, GenerationID: "$id"}, 100_000, 1},
		{"complete: verified without a request", size, &partialRecord{SHA256: "$sha", Size: size, GenerationID: "$id"}, size, 0},
		{"record with the ETag only", 100_000, &partialRecord{ETag: `"$sha"`, Size: size, GenerationID: "$id"}, 100_000, 1},
		{"record with another ETag only", 100_000, &partialRecord{ETag: `"abc"`, Size: size, GenerationID: "$id"}, 0, 1},
		{"no record", 100_000, nil, 0, 1},
		{"other generation", 100_000, &partialRecord{SHA256: "$sha", Size: size, GenerationID: "gen_other"}, 0, 1},
		{"other sha256", 100_000, &partialRecord{SHA256: strings.Repeat("ab", 32), Size: size, GenerationID: "$id"}, 0, 1},
		{"other size", 100_000, &partialRecord{SHA256: "$sha", Size: size + 1, GenerationID: "$id"}, 0, 1},
		{"longer than the output", size + 10, &partialRecord{SHA256: "$sha", Size: size, GenerationID: "$id"}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDLFixture(t, size)
			path := filepath.Join(t.TempDir(), "out.mp4")
			b := append(append([]byte(nil), f.body...), make([]byte, 10)...)[:tt.partial]
			require.NoError(t, os.WriteFile(path+".partial", b, 0o600))
			if tt.rec != nil {
				rec := *tt.rec
				rec.SHA256 = strings.Replace(rec.SHA256, "$sha", f.gen.Output.SHA256, 1)
				rec.ETag = strings.Replace(rec.ETag, "$sha", f.gen.Output.SHA256, 1)
				rec.GenerationID = strings.Replace(rec.GenerationID, "$id", f.gen.ID, 1)
				leavePartial(t, path, b, rec)
			}
			res, err := f.c.Generations.Download(context.Background(), f.gen, path)
			require.NoError(t, err)
			assert.Equal(t, tt.wantReused, res.Reused)
			assert.Equal(t, size-tt.wantReused, res.Fetched)
			assert.Len(t, f.outputRequests(), tt.wantReqs)
			f.assertFile(t, path)
		})
	}
}

// TestDownload416: a complete partial of an output of unknown size gets a
// 416 for the range after it; the download starts over and verifies by the
// ETag.
func TestDownload416(t *testing.T) {
	const size = 100_000
	f := newDLFixture(t, size)
	g := *f.gen
	g.Output = &GenerationOutput{URL: f.gen.Output.URL} // no size, no sha256
	path := filepath.Join(t.TempDir(), "out.bin")
	leavePartial(t, path, bytes.Repeat([]byte{1}, size), partialRecord{GenerationID: g.ID, Size: -1, ETag: `"` + f.gen.Output.SHA256 + `"`})
	res, err := f.c.Generations.Download(context.Background(), &g, path)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts)
	assert.Equal(t, int64(size), res.Size)
	assert.Equal(t, f.gen.Output.SHA256, res.SHA256)
	f.assertFile(t, path)
	reqs := f.outputRequests()
	require.Len(t, reqs, 2)
	assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, reqs[0].Status)
	assert.Empty(t, reqs[1].Header.Get("Range"))
}

// TestDownloadWaits: retries wait on the Client's clock, by its backoff,
// never less than Retry-After, and stop when the budget is empty.
func TestDownloadWaits(t *testing.T) {
	t.Run("Retry-After and backoff", func(t *testing.T) {
		f := newDLFixture(t, 10_000, WithBackoff(time.Second, 2, 8*time.Second))
		p := "/v1/outputs/" + f.gen.ID
		f.srv.InjectFaults(
			safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "5", Path: p},
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Path: p},
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 500, Path: p},
		)
		res, err := f.c.Generations.Download(context.Background(), f.gen, filepath.Join(t.TempDir(), "x"))
		require.NoError(t, err)
		assert.Equal(t, 4, res.Attempts)
		sleeps := f.clk.Sleeps()
		require.Len(t, sleeps, 3)
		assert.Equal(t, 5*time.Second, sleeps[0], "Retry-After is longer than the first backoff")
		assert.LessOrEqual(t, sleeps[1], 2*time.Second, "full jitter under the second ceiling")
		assert.LessOrEqual(t, sleeps[2], 4*time.Second)
	})
	t.Run("empty budget", func(t *testing.T) {
		f := newDLFixture(t, 10_000, WithRetryBudget(5))
		p := "/v1/outputs/" + f.gen.ID
		f.srv.InjectFaults(
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Path: p},
			safegentest.Fault{Kind: safegentest.FaultStatus, Status: 503, Path: p},
		)
		_, err := f.c.Generations.Download(context.Background(), f.gen, filepath.Join(t.TempDir(), "x"))
		require.ErrorIs(t, err, ErrRetryBudgetExhausted)
		require.ErrorIs(t, err, ErrServer, "the server's answer stays reachable")
		assert.Len(t, f.outputRequests(), 2)
	})
	t.Run("deadline", func(t *testing.T) {
		f := newDLFixture(t, 10_000)
		f.srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultRateLimit, RetryAfter: "30", Path: "/v1/outputs/" + f.gen.ID})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := f.c.Generations.Download(ctx, f.gen, filepath.Join(t.TempDir(), "x"))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Empty(t, f.clk.Sleeps(), "a wait past the deadline is not started")
	})
	t.Run("expired three times", func(t *testing.T) {
		f := newDLFixture(t, 10_000)
		f.clk.mu.Lock()
		f.clk.now = f.clk.now.Add(48 * time.Hour) // every URL the server signs is already past by our clock
		f.clk.mu.Unlock()
		p := "/v1/outputs/" + f.gen.ID
		for range 4 {
			f.srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: 403, Code: "url_expired", Path: p})
		}
		_, err := f.c.Generations.Download(context.Background(), f.gen, filepath.Join(t.TempDir(), "x"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "still expired")
		assert.Len(t, f.outputRequests(), maxRefreshes, "the refreshed URL is tried whatever our clock says")
	})
}

func TestContentRange(t *testing.T) {
	tests := []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 5-9/*", 5, -1, true},
		{" bytes 100-199/1000 ", 100, 1000, true},
		{"bytes 5-4/10", 0, 0, false},
		{"bytes 5-10/10", 0, 0, false},
		{"bytes */10", 0, 0, false},
		{"items 0-9/10", 0, 0, false},
		{"bytes -1-9/10", 0, 0, false},
		{"bytes 0-9", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		start, total, ok := contentRange(tt.in)
		assert.Equal(t, tt.ok, ok, tt.in)
		if tt.ok {
			assert.Equal(t, tt.start, start, tt.in)
			assert.Equal(t, tt.total, total, tt.in)
		}
	}
}

func TestDownloadURLRules(t *testing.T) {
	tests := []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"https://cdn.example.com/x?sig=1", false, true},
		{"http://127.0.0.1:8080/x", false, true},
		{"http://localhost/x", false, true},
		{"http://[::1]/x", false, true},
		{"http://cdn.example.com/x", false, false},
		{"http://cdn.example.com/x", true, true},
		{"ftp://cdn.example.com/x", true, false},
		{"https://user:pw@cdn.example.com/x", false, false},
		{"//cdn.example.com/x", false, false},
		{"/relative", false, false},
	}
	for _, tt := range tests {
		_, err := outputURL(tt.url, tt.insecure)
		assert.Equal(t, tt.ok, err == nil, "%s insecure=%v: %v", tt.url, tt.insecure, err)
	}
	u, err := url.Parse("https://cdn.example.com/a/b.mp4?exp=1&sig=secret#frag")
	require.NoError(t, err)
	assert.Equal(t, "https://cdn.example.com/a/b.mp4", redact(u))
	assert.Equal(t, `"x"`, strongETag(` "x" `))
	assert.Equal(t, "", strongETag(`W/"x"`))
	assert.Equal(t, "", strongETag(`x`))
}

// TestDownloadUnwritable: a partial that cannot be created or written is
// a final error, not a retry loop.
func TestDownloadUnwritable(t *testing.T) {
	f := newDLFixture(t, 10_000)
	dirs := map[string]string{"missing directory": filepath.Join(t.TempDir(), "no", "such")}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := t.TempDir()
		require.NoError(t, os.Chmod(ro, 0o500))
		t.Cleanup(func() { os.Chmod(ro, 0o700) })
		dirs["read-only directory"] = ro
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			_, err := f.c.Generations.Download(context.Background(), f.gen, filepath.Join(dir, "x"))
			var de *DownloadError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "opening the partial file", de.Reason)
			if name == "missing directory" {
				require.ErrorIs(t, err, os.ErrNotExist, "the cause stays reachable")
			}
			assert.Empty(t, f.outputRequests())
		})
	}
}
