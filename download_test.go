package safegen_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

// dlServer is a fake API whose generations succeed at once, with outputs of
// size bytes; its clock stands still unless a test moves it.
func dlServer(t *testing.T, size int64, opts ...safegentest.Option) (*safegentest.Server, *safegentest.ManualClock) {
	t.Helper()
	clk := safegentest.NewManualClock(time.Now())
	all := append([]safegentest.Option{safegentest.WithClock(clk), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(0, 0), safegentest.WithOutputSize(size)}, opts...)
	return safegentest.NewServer(t, all...), clk
}

// succeededGen creates a generation and reads it back, succeeded.
func succeededGen(t *testing.T, c *safegen.Client) *safegen.Generation {
	t.Helper()
	ctx := context.Background()
	g, err := c.Generations.Create(ctx, params)
	require.NoError(t, err)
	g, err = c.Generations.Get(ctx, g.ID)
	require.NoError(t, err)
	require.Equal(t, safegen.StatusSucceeded, g.Status)
	require.NotNil(t, g.Output)
	return g
}

// want returns the bytes of g's output and their hex SHA-256.
func want(t *testing.T, g *safegen.Generation) ([]byte, string) {
	t.Helper()
	b, err := io.ReadAll(safegentest.OutputBytes(g.ID, g.Output.Size))
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// downloads returns the output requests the server saw.
func downloads(srv *safegentest.Server) []safegentest.RecordedRequest {
	var out []safegentest.RecordedRequest
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r.Path, "/v1/outputs/") {
			out = append(out, r)
		}
	}
	return out
}

func sentBytes(srv *safegentest.Server) int64 {
	var n int64
	for _, r := range downloads(srv) {
		n += r.ResponseBytes
	}
	return n
}

// assertOnlyFile checks that dir holds the file name and nothing else (no
// partial, no record).
func assertOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{name}, names)
}

func assertNoCredentials(t *testing.T, srv *safegentest.Server) {
	t.Helper()
	for _, r := range downloads(srv) {
		assert.Empty(t, r.Header.Get("Authorization"), "no Authorization to the output URL")
		assert.Empty(t, r.Header.Get("X-Api-Key"), "no X-API-Key to the output URL")
		assert.Empty(t, r.Header.Get("Idempotency-Key"))
		assert.Equal(t, "identity", r.Header.Get("Accept-Encoding"))
		assert.NotEmpty(t, r.Header.Get("User-Agent"))
	}
}

func TestDownload(t *testing.T) {
	for _, size := range []int64{1, 64 << 10, 1<<20 + 3} {
		t.Run(byteSize(size), func(t *testing.T) {
			srv, _ := dlServer(t, size)
			c := newClient(t, srv)
			g := succeededGen(t, c)
			body, sum := want(t, g)
			dir := t.TempDir()
			path := filepath.Join(dir, "fox.mp4")
			var mu sync.Mutex
			var seen [][2]int64
			res, err := c.Generations.Download(context.Background(), g, path, safegen.WithProgress(func(done, total int64) {
				mu.Lock()
				seen = append(seen, [2]int64{done, total})
				mu.Unlock()
			}))
			require.NoError(t, err)
			assert.Equal(t, &safegen.DownloadResult{Path: path, Size: size, SHA256: sum, ContentType: "video/mp4",
				Fetched: size, Reused: 0, Attempts: 1}, res)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(body, got))
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			assertOnlyFile(t, dir, "fox.mp4")

			dl := downloads(srv)
			require.Len(t, dl, 1)
			assert.Empty(t, dl[0].Header.Get("Range"), "a fresh download asks for everything")
			assert.Equal(t, "1", dl[0].Header.Get(safegen.AttemptHeader))
			assertNoCredentials(t, srv)

			require.NotEmpty(t, seen)
			assert.Equal(t, [2]int64{0, size}, seen[0])
			assert.Equal(t, [2]int64{size, size}, seen[len(seen)-1])
			for i := 1; i < len(seen); i++ {
				assert.GreaterOrEqual(t, seen[i][0], seen[i-1][0], "progress never goes back here")
			}
		})
	}
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return "MiB"
	case n >= 1<<10:
		return "KiB"
	}
	return "B"
}

func TestDownloadResumesAfterCut(t *testing.T) {
	const size = 1 << 20
	srv, _ := dlServer(t, size)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	body, sum := want(t, g)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 300_000, Path: "/v1/outputs/" + g.ID})
	path := filepath.Join(t.TempDir(), "out.mp4")
	var infos []safegen.AttemptInfo
	res, err := c.Generations.Download(context.Background(), g, path,
		safegen.WithAttemptHook(func(i safegen.AttemptInfo) { infos = append(infos, i) }))
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts)
	assert.Equal(t, int64(size), res.Fetched, "the cut bytes were kept, not fetched again")
	assert.Equal(t, int64(0), res.Reused)
	assert.Equal(t, sum, res.SHA256)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(body, got))

	dl := downloads(srv)
	require.Len(t, dl, 2)
	assert.Equal(t, "bytes=300000-", dl[1].Header.Get("Range"))
	assert.Equal(t, `"`+sum+`"`, dl[1].Header.Get("If-Range"))
	assert.Equal(t, http.StatusPartialContent, dl[1].Status)
	assert.Equal(t, int64(size), sentBytes(srv), "the server sent each byte once")
	require.Len(t, infos, 2, "the hook hears of every attempt: the cut one, then the one that finished")
	assert.True(t, infos[0].Retry)
	assert.Equal(t, "transport", infos[0].Cause)
	assert.NotContains(t, infos[0].Path, "sig=", "the signature is never reported")
	assert.Equal(t, safegen.AttemptInfo{Operation: safegen.OpDownload, Method: http.MethodGet, Path: infos[0].Path,
		Attempt: 2, StatusCode: http.StatusPartialContent, Cause: "ok", Reason: "done"}, infos[1])
}

func TestDownloadResumesAcrossCalls(t *testing.T) {
	const size, cut = 1 << 20, 300_000
	srv, _ := dlServer(t, size)
	first := newClient(t, srv, safegen.WithMaxRetries(0))
	g := succeededGen(t, first)
	body, sum := want(t, g)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: cut, Path: "/v1/outputs/" + g.ID})
	dir := t.TempDir()
	path := filepath.Join(dir, "out.mp4")

	_, err := first.Generations.Download(context.Background(), g, path)
	require.Error(t, err)
	var de *safegen.DownloadError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 1, de.Attempts)
	assert.Equal(t, int64(cut), de.Fetched)
	assert.NotContains(t, err.Error(), "sig=", "the signed URL is a credential")
	assert.NotContains(t, err.Error(), srv.APIKey)
	_, err = os.Stat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing at path before it is verified")
	fi, err := os.Stat(path + ".partial")
	require.NoError(t, err)
	assert.Equal(t, int64(cut), fi.Size())
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Another client, as another process would be, picks the partial up.
	second := newClient(t, srv)
	res, err := second.Generations.Download(context.Background(), g, path)
	require.NoError(t, err)
	assert.Equal(t, int64(cut), res.Reused)
	assert.Equal(t, int64(size-cut), res.Fetched)
	assert.Equal(t, 1, res.Attempts)
	assert.LessOrEqual(t, res.Fetched+de.Fetched, int64(size), "no byte fetched twice over both calls")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(body, got))
	assertOnlyFile(t, dir, "out.mp4")
	dl := downloads(srv)
	require.Len(t, dl, 2)
	assert.Equal(t, "bytes=300000-", dl[1].Header.Get("Range"))
	assert.Equal(t, `"`+sum+`"`, dl[1].Header.Get("If-Range"))
	assert.Equal(t, int64(size), sentBytes(srv))
}

// TestDownloadWholeBodyInsteadOfRange: a server that ignores the range
// sends everything; the download starts over from zero and is still right.
func TestDownloadWholeBodyInsteadOfRange(t *testing.T) {
	const size = 1 << 20
	srv, _ := dlServer(t, size)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	body, _ := want(t, g)
	p := "/v1/outputs/" + g.ID
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 300_000, Path: p},
		safegentest.Fault{Kind: safegentest.FaultIgnoreRange, Path: p})
	path := filepath.Join(t.TempDir(), "out.mp4")
	var progress []int64
	res, err := c.Generations.Download(context.Background(), g, path,
		safegen.WithProgress(func(done, _ int64) { progress = append(progress, done) }))
	require.NoError(t, err)
	assert.Equal(t, 2, res.Attempts)
	assert.Equal(t, int64(300_000+size), res.Fetched)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(body, got))
	dl := downloads(srv)
	require.Len(t, dl, 2)
	assert.Equal(t, "bytes=300000-", dl[1].Header.Get("Range"))
	assert.Equal(t, http.StatusOK, dl[1].Status)
	assert.Contains(t, progress, int64(0), "progress says the download started over")
}

func TestDownloadRefreshesExpiredURL(t *testing.T) {
	tests := []struct {
		name string
		// expire makes g's URL expired, by the server's clock or ours.
		expire        func(clk *safegentest.ManualClock, g *safegen.Generation)
		wantAttempts  int
		wantOutputsTo []int // statuses of the output requests
	}{
		{"server says url_expired", func(clk *safegentest.ManualClock, _ *safegen.Generation) { clk.Advance(2 * time.Hour) },
			2, []int{403, 200}},
		{"expires_at passed by our clock", func(_ *safegentest.ManualClock, g *safegen.Generation) {
			g.Output.ExpiresAt = time.Now().Add(-time.Minute)
		}, 1, []int{200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, clk := dlServer(t, 100_000)
			c := newClient(t, srv)
			g := succeededGen(t, c)
			oldURL := g.Output.URL
			tt.expire(clk, g)
			path := filepath.Join(t.TempDir(), "out.png")
			before := len(srv.Requests())
			res, err := c.Generations.Download(context.Background(), g, path)
			require.NoError(t, err)
			assert.Equal(t, 1, res.URLRefreshes)
			assert.Equal(t, tt.wantAttempts, res.Attempts)
			assert.Equal(t, oldURL, g.Output.URL, "the caller's generation is not changed")
			var statuses []int
			var gets int
			for _, r := range srv.Requests()[before:] {
				switch {
				case strings.HasPrefix(r.Path, "/v1/outputs/"):
					statuses = append(statuses, r.Status)
				case r.Method == http.MethodGet && r.Path == "/v1/generations/"+g.ID:
					gets++
					assert.Equal(t, "Bearer "+srv.APIKey, r.Header.Get("Authorization"), "the refresh is an API call")
				}
			}
			assert.Equal(t, tt.wantOutputsTo, statuses)
			assert.Equal(t, 1, gets)
			_, sum := want(t, g)
			assert.Equal(t, sum, res.SHA256)
		})
	}
}

func TestDownloadCorrupt(t *testing.T) {
	srv, _ := dlServer(t, 200_000)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCorrupt, Path: "/v1/outputs/" + g.ID})
	dir := t.TempDir()
	path := filepath.Join(dir, "out.mp4")
	_, err := c.Generations.Download(context.Background(), g, path)
	require.ErrorIs(t, err, safegen.ErrOutputCorrupt)
	var de *safegen.DownloadError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, g.ID, de.GenerationID)
	assert.Contains(t, err.Error(), "sha256")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "no file at path, no partial left")
	assert.Len(t, downloads(srv), 1, "a mismatch is not retried")

	// An older file at path stays as it was.
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCorrupt, Path: "/v1/outputs/" + g.ID})
	_, err = c.Generations.Download(context.Background(), g, path)
	require.ErrorIs(t, err, safegen.ErrOutputCorrupt)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "old", string(got))
	assertOnlyFile(t, dir, "out.mp4")
}

// TestDownloadSizeMismatch: a server that sends another size than the
// generation says is sending other bytes: corrupt, nothing kept.
func TestDownloadSizeMismatch(t *testing.T) {
	for _, delta := range []int64{-1, 1} {
		srv, _ := dlServer(t, 200_000)
		c := newClient(t, srv)
		g := succeededGen(t, c)
		g.Output.Size += delta
		dir := t.TempDir()
		_, err := c.Generations.Download(context.Background(), g, filepath.Join(dir, "out.mp4"))
		require.ErrorIs(t, err, safegen.ErrOutputCorrupt)
		assert.Contains(t, err.Error(), "the server sends 200000 bytes")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		assert.Empty(t, entries, "no file, no partial, no record")
		assert.Len(t, downloads(srv), 1)
	}
}

func TestDownloadRetriesServerErrors(t *testing.T) {
	tests := []struct {
		name         string
		faults       []safegentest.Fault
		retries      int
		wantErr      error
		wantAttempts int
	}{
		{"503 then fine", []safegentest.Fault{{Kind: safegentest.FaultStatus, Status: 503}, {Kind: safegentest.FaultStatus, Status: 503}}, 3, nil, 3},
		// net/http itself re-sends a GET once when a reused connection is
		// reset, so two resets make sure the client's own retry runs.
		{"resets then fine", []safegentest.Fault{{Kind: safegentest.FaultReset}, {Kind: safegentest.FaultReset}}, 3, nil, 3},
		{"429 then fine", []safegentest.Fault{{Kind: safegentest.FaultRateLimit}}, 3, nil, 2},
		{"503 past the retries", []safegentest.Fault{{Kind: safegentest.FaultStatus, Status: 503}, {Kind: safegentest.FaultStatus, Status: 503}}, 1, safegen.ErrServer, 2},
		{"504 then fine", []safegentest.Fault{{Kind: safegentest.FaultStatus, Status: 504}}, 3, nil, 2},
		{"a long Retry-After is handed back", []safegentest.Fault{{Kind: safegentest.FaultRateLimit, RetryAfter: "3600"}}, 3, safegen.ErrRetryAfterTooLong, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := dlServer(t, 100_000)
			c := newClient(t, srv, safegen.WithMaxRetries(tt.retries))
			g := succeededGen(t, c)
			for i := range tt.faults {
				tt.faults[i].Path = "/v1/outputs/" + g.ID
			}
			srv.InjectFaults(tt.faults...)
			path := filepath.Join(t.TempDir(), "out.png")
			res, err := c.Generations.Download(context.Background(), g, path)
			assert.Len(t, downloads(srv), tt.wantAttempts)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var de *safegen.DownloadError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, tt.wantAttempts, de.Attempts)
				_, serr := os.Stat(path)
				assert.ErrorIs(t, serr, os.ErrNotExist)
				return
			}
			require.NoError(t, err)
			if tt.faults[0].Kind == safegentest.FaultReset {
				assert.GreaterOrEqual(t, res.Attempts, 2)
			} else {
				assert.Equal(t, tt.wantAttempts, res.Attempts)
			}
			_, sum := want(t, g)
			assert.Equal(t, sum, res.SHA256)
		})
	}
}

func TestDownloadRefusedIsFinal(t *testing.T) {
	srv, _ := dlServer(t, 1000)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	g.Output.URL = strings.Replace(g.Output.URL, "sig=", "sig=00", 1)
	_, err := c.Generations.Download(context.Background(), g, filepath.Join(t.TempDir(), "x"))
	var apiErr *safegen.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusForbidden, apiErr.StatusCode)
	assert.Equal(t, "invalid_signature", apiErr.Code)
	assert.NotContains(t, apiErr.Path, "sig")
	assert.Len(t, downloads(srv), 1)
}

func TestDownloadCancellation(t *testing.T) {
	const size = 256 << 10
	srv, _ := dlServer(t, size)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultTrickle, ChunkBytes: 8 << 10, Latency: 20 * time.Millisecond,
		Path: "/v1/outputs/" + g.ID})
	path := filepath.Join(t.TempDir(), "out.mp4")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var canceledAt atomic.Int64
	_, err := c.Generations.Download(ctx, g, path, safegen.WithProgress(func(done, _ int64) {
		if done >= 16<<10 && canceledAt.Load() == 0 {
			canceledAt.Store(time.Now().UnixNano())
			cancel()
		}
	}))
	elapsed := time.Since(time.Unix(0, canceledAt.Load()))
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, elapsed, 50*time.Millisecond, "cancellation ends the transfer at once")
	fi, err := os.Stat(path + ".partial")
	require.NoError(t, err, "the partial is kept for a later call")
	kept := fi.Size()
	assert.GreaterOrEqual(t, kept, int64(16<<10))

	res, err := c.Generations.Download(context.Background(), g, path)
	require.NoError(t, err)
	assert.Equal(t, kept, res.Reused)
	assert.Equal(t, size-kept, res.Fetched)
}

func TestDownloadIdleTimeout(t *testing.T) {
	stall := safegentest.Fault{Kind: safegentest.FaultTrickle, Latency: time.Hour}
	t.Run("a stalled attempt is cut and retried", func(t *testing.T) {
		srv, _ := dlServer(t, 100_000)
		c := newClient(t, srv, safegen.WithIdleTimeout(200*time.Millisecond))
		g := succeededGen(t, c)
		f := stall
		f.Path = "/v1/outputs/" + g.ID
		srv.InjectFaults(f)
		var infos []safegen.AttemptInfo
		start := time.Now()
		res, err := c.Generations.Download(context.Background(), g, filepath.Join(t.TempDir(), "x"),
			safegen.WithAttemptHook(func(i safegen.AttemptInfo) { infos = append(infos, i) }))
		require.NoError(t, err)
		assert.Equal(t, 2, res.Attempts)
		require.Len(t, infos, 2)
		assert.Equal(t, "timeout", infos[0].Cause)
		assert.Equal(t, "ok", infos[1].Cause)
		assert.ErrorIs(t, infos[0].Err, safegen.ErrIdleTimeout)
		assert.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("out of retries", func(t *testing.T) {
		srv, _ := dlServer(t, 100_000)
		c := newClient(t, srv, safegen.WithIdleTimeout(30*time.Millisecond), safegen.WithMaxRetries(0))
		g := succeededGen(t, c)
		f := stall
		f.Path = "/v1/outputs/" + g.ID
		srv.InjectFaults(f)
		_, err := c.Generations.Download(context.Background(), g, filepath.Join(t.TempDir(), "x"))
		require.ErrorIs(t, err, safegen.ErrIdleTimeout)
	})
	t.Run("a slow transfer that keeps moving is not cut", func(t *testing.T) {
		srv, _ := dlServer(t, 256<<10)
		c := newClient(t, srv, safegen.WithIdleTimeout(time.Second))
		g := succeededGen(t, c)
		srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultTrickle, ChunkBytes: 16 << 10, Latency: 5 * time.Millisecond,
			Path: "/v1/outputs/" + g.ID})
		start := time.Now()
		// 16 pieces 5 ms apart: four times the attempt timeout in all.
		res, err := c.Generations.Download(context.Background(), g, filepath.Join(t.TempDir(), "x"),
			safegen.WithAttemptTimeout(20*time.Millisecond))
		require.NoError(t, err)
		assert.Equal(t, 1, res.Attempts)
		assert.Greater(t, time.Since(start), 20*time.Millisecond, "longer than the attempt timeout")
	})
}

func TestDownloadAlreadyThere(t *testing.T) {
	srv, _ := dlServer(t, 100_000)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	path := filepath.Join(t.TempDir(), "out.mp4")
	_, err := c.Generations.Download(context.Background(), g, path)
	require.NoError(t, err)
	res, err := c.Generations.Download(context.Background(), g, path)
	require.NoError(t, err)
	assert.Equal(t, 0, res.Attempts)
	assert.Equal(t, int64(0), res.Fetched)
	assert.Equal(t, int64(100_000), res.Reused)
	assert.Len(t, downloads(srv), 1, "a verified file is not fetched again")

	// A different file at path is replaced.
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("x"), 100_000), 0o600))
	res, err = c.Generations.Download(context.Background(), g, path)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Attempts)
	body, _ := want(t, g)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(body, got))
}

// TestDownloadPartialOfAnotherOutput: a partial left by another generation
// at the same path is not mixed in.
func TestDownloadPartialOfAnotherOutput(t *testing.T) {
	srv, _ := dlServer(t, 200_000)
	c := newClient(t, srv, safegen.WithMaxRetries(0))
	a, b := succeededGen(t, c), succeededGen(t, c)
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 100_000, Path: "/v1/outputs/" + a.ID})
	path := filepath.Join(t.TempDir(), "out.mp4")
	_, err := c.Generations.Download(context.Background(), a, path)
	require.Error(t, err)
	res, err := c.Generations.Download(context.Background(), b, path)
	require.NoError(t, err)
	assert.Equal(t, int64(0), res.Reused)
	assert.Equal(t, int64(200_000), res.Fetched)
	_, sum := want(t, b)
	assert.Equal(t, sum, res.SHA256)
	dl := downloads(srv)
	assert.Empty(t, dl[len(dl)-1].Header.Get("Range"))
}

// TestDownloadManyOutputsWithCuts: with one download in ten cut mid-body,
// resuming keeps the bytes fetched close to the bytes of output.
func TestDownloadManyOutputsWithCuts(t *testing.T) {
	const n, size = 40, 256 << 10
	srv, _ := dlServer(t, size, safegentest.WithFaultRates(safegentest.FaultRates{DownloadCut: 0.1}, 42))
	c := newClient(t, srv)
	gens := make([]*safegen.Generation, n)
	for i := range gens {
		gens[i] = succeededGen(t, c)
	}
	dir := t.TempDir()
	var fetched, attempts atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := c.Generations.Download(context.Background(), g, filepath.Join(dir, g.ID+".mp4"))
			if !assert.NoError(t, err, "output %d", i) {
				return
			}
			_, sum := want(t, g)
			assert.Equal(t, sum, res.SHA256)
			fetched.Add(res.Fetched)
			attempts.Add(int64(res.Attempts))
		}()
	}
	wg.Wait()
	cuts := 0
	for _, r := range downloads(srv) {
		if r.Fault == safegentest.FaultCut {
			cuts++
		}
	}
	total := int64(n * size)
	t.Logf("%d downloads, %d cut, %d attempts, fetched %d of %d bytes (%.3f×), server sent %d",
		n, cuts, attempts.Load(), fetched.Load(), total, float64(fetched.Load())/float64(total), sentBytes(srv))
	assert.Positive(t, cuts, "the seed cuts some downloads")
	assert.Equal(t, int64(n+cuts), attempts.Load(), "one extra attempt per cut")
	assert.LessOrEqual(t, fetched.Load(), total*5/4)
	assert.LessOrEqual(t, sentBytes(srv), total*5/4, "what the server sent")
}

func TestDownloadBadInput(t *testing.T) {
	srv, _ := dlServer(t, 1000)
	c := newClient(t, srv)
	good := succeededGen(t, c)
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "adir"), 0o700))
	with := func(f func(g *safegen.Generation)) *safegen.Generation {
		g := *good
		o := *good.Output
		g.Output = &o
		f(&g)
		return &g
	}
	tests := []struct {
		name string
		gen  *safegen.Generation
		path string
		opts []safegen.RequestOption
		want string
	}{
		{"nil generation", nil, "x", nil, "nil generation"},
		{"queued", with(func(g *safegen.Generation) { g.Status = safegen.StatusQueued }), "x", nil, "not succeeded"},
		{"failed", with(func(g *safegen.Generation) { g.Status = safegen.StatusFailed }), "x", nil, "not succeeded"},
		{"no output", with(func(g *safegen.Generation) { g.Output = nil }), "x", nil, "no output URL"},
		{"empty URL", with(func(g *safegen.Generation) { g.Output.URL = "" }), "x", nil, "no output URL"},
		{"empty path", good, "", nil, "empty path"},
		{"directory at path", good, filepath.Join(dir, "adir"), nil, "is a directory"},
		{"ftp URL", with(func(g *safegen.Generation) { g.Output.URL = "ftp://example.com/x" }), "x", nil, "not http(s)"},
		{"file URL", with(func(g *safegen.Generation) { g.Output.URL = "file:///etc/passwd" }), "x", nil, "not http(s)"},
		{"plain http to another host", with(func(g *safegen.Generation) { g.Output.URL = "http://cdn.example.com/x" }), "x", nil, "plain http"},
		{"credentials in URL", with(func(g *safegen.Generation) { g.Output.URL = "https://u:p@cdn.example.com/x" }), "x", nil, "credentials"},
		{"no host", with(func(g *safegen.Generation) { g.Output.URL = "https:///x" }), "x", nil, "no host"},
		{"unreadable URL", with(func(g *safegen.Generation) { g.Output.URL = "https://%zz" }), "x", nil, "unreadable"},
		{"bad sha256", with(func(g *safegen.Generation) { g.Output.SHA256 = "abc" }), "x", nil, "64 hex"},
		{"negative size", with(func(g *safegen.Generation) { g.Output.Size = -1 }), "x", nil, "negative"},
		{"intent id", good, "x", []safegen.RequestOption{safegen.WithIntentID("i")}, "no idempotency key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Generations.Download(context.Background(), tt.gen, tt.path, tt.opts...)
			require.ErrorIs(t, err, safegen.ErrInvalidRequest)
			assert.Contains(t, err.Error(), tt.want)
			assert.Nil(t, res)
		})
	}
	var nilCtx context.Context // a nil context is bad input too
	_, err := c.Generations.Download(nilCtx, good, "x")
	require.Error(t, err)
	_, err = c.Generations.Download(context.Background(), good, "x", safegen.WithIdleTimeout(-time.Second))
	require.Error(t, err)
	_, err = safegen.NewClient("sk", safegen.WithBaseURL(srv.URL), safegen.WithProgress(func(int64, int64) {}))
	require.Error(t, err, "WithProgress is per call")
	assert.Empty(t, downloads(srv), "nothing was fetched")
	_, err = os.Stat("x.partial")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestDownloadRedirects: a redirect to another host is followed without
// credentials; one to a scheme the rules refuse is not.
func TestDownloadRedirects(t *testing.T) {
	srv, _ := dlServer(t, 50_000)
	c := newClient(t, srv)
	g := succeededGen(t, c)
	var target atomic.Value
	var sawAuth atomic.Bool
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Api-Key") != "" {
			sawAuth.Store(true)
		}
		http.Redirect(w, r, target.Load().(string), http.StatusFound)
	}))
	defer cdn.Close()

	target.Store(strings.Replace(g.Output.URL, "127.0.0.1", "localhost", 1)) // another host name
	redirected := *g
	o := *g.Output
	o.URL = cdn.URL + "/signed/x?sig=abc"
	redirected.Output = &o
	res, err := c.Generations.Download(context.Background(), &redirected, filepath.Join(t.TempDir(), "x"))
	require.NoError(t, err)
	_, sum := want(t, g)
	assert.Equal(t, sum, res.SHA256)
	assert.False(t, sawAuth.Load())
	assertNoCredentials(t, srv)

	target.Store("ftp://example.com/x")
	_, err = c.Generations.Download(context.Background(), &redirected, filepath.Join(t.TempDir(), "y"))
	require.ErrorIs(t, err, safegen.ErrInvalidRequest)
	var de *safegen.DownloadError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 1, de.Attempts, "not retried")
	assert.NotContains(t, err.Error(), "sig=abc")
}

// TestDownloadAndCancelInEveryDialect: the whole path in each vendor's
// dialect, on both sides.
func TestDownloadAndCancelInEveryDialect(t *testing.T) {
	for _, d := range safegen.Dialects() {
		t.Run(string(d), func(t *testing.T) {
			clk := safegentest.NewManualClock(time.Now())
			srv := safegentest.NewServer(t, safegentest.WithClock(clk), safegentest.WithRateLimit(0, 0),
				safegentest.WithDialect(safegentest.Dialect(d)), safegentest.WithGenerationTiming(time.Minute, time.Minute),
				safegentest.WithOutputSize(300_000))
			c := newClient(t, srv, safegen.WithDialect(d), safegen.WithPollInterval(time.Millisecond, time.Millisecond))
			ctx := context.Background()
			g, err := c.Generations.Create(ctx, params)
			require.NoError(t, err)
			other, err := c.Generations.Create(ctx, params, safegen.WithIdempotencyKey("other-"+string(d)))
			require.NoError(t, err)
			clk.Advance(3 * time.Minute)
			done, err := c.Generations.Wait(ctx, g.ID)
			require.NoError(t, err)
			require.Equal(t, safegen.StatusSucceeded, done.Status)
			srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 100_000, Path: "/v1/outputs/" + g.ID})
			res, err := c.Generations.Download(ctx, done, filepath.Join(t.TempDir(), "out.mp4"))
			require.NoError(t, err)
			_, sum := want(t, done)
			assert.Equal(t, sum, res.SHA256)
			assert.Equal(t, 2, res.Attempts)
			assertNoCredentials(t, srv)

			_, err = c.Generations.Cancel(ctx, other.ID)
			require.ErrorIs(t, err, safegen.ErrGenerationTerminal)
			for _, r := range srv.Requests() {
				if strings.HasSuffix(r.Path, "/cancel") {
					assert.Empty(t, r.IdempotencyKey)
					if d == safegen.DialectRealm {
						assert.Equal(t, srv.APIKey, r.Header.Get("X-Api-Key"))
					} else {
						assert.Equal(t, "Bearer "+srv.APIKey, r.Header.Get("Authorization"))
					}
				}
			}
		})
	}
}

// TestDownloadResendCounted: net/http re-sends a download's GET on its own
// when the reused connection it went out on is reset; the re-send is
// counted as an attempt, so the result, the hook and the server agree.
func TestDownloadResendCounted(t *testing.T) {
	srv, _ := dlServer(t, 100_000)
	var infos []safegen.AttemptInfo
	c := newClient(t, srv, safegen.WithAttemptHook(func(i safegen.AttemptInfo) { infos = append(infos, i) }))
	g := succeededGen(t, c) // leaves a keep-alive connection in the pool
	infos = nil
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultReset, Path: "/v1/outputs/" + g.ID})
	res, err := c.Generations.Download(context.Background(), g, filepath.Join(t.TempDir(), "x"))
	require.NoError(t, err)
	dl := downloads(srv)
	require.Len(t, dl, 2, "the server got the GET twice")
	assert.Equal(t, safegentest.FaultReset, dl[0].Fault)
	assert.Equal(t, 2, res.Attempts)
	require.Len(t, infos, 2)
	assert.Equal(t, "transport", infos[0].Cause)
	assert.Equal(t, "sent again by net/http", infos[0].Reason)
	assert.Equal(t, "ok", infos[1].Cause)
	assert.Equal(t, 2, infos[1].Attempt)
}
