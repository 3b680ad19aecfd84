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
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/safegentest"
)

// BenchmarkDownload compares Generations.Download of a 64 MiB output over
// loopback with io.Copy of the same URL into a file, from the same fake
// server in the same process: impl=safegen streams, hashes (SHA-256),
// syncs, renames and syncs the directory; impl=io.Copy only copies;
// impl=io.Copy+Sync also syncs the file, as Download does. Each reports
// MB/s (b.SetBytes) and the peak live heap of the whole process (server
// included) while it ran.
func BenchmarkDownload(b *testing.B) {
	const size = 64 << 20
	srv := safegentest.Start(safegentest.WithClock(safegentest.NewManualClock(time.Now())), safegentest.WithRateLimit(0, 0),
		safegentest.WithGenerationTiming(0, 0), safegentest.WithOutputSize(size))
	defer srv.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	g, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if g, err = c.Generations.Get(ctx, g.ID); err != nil || g.Output == nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "out.mp4")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	run := func(name string, once func(b *testing.B)) { runDownload(b, name, path, size, true, once) }
	run("safegen", func(b *testing.B) {
		res, err := c.Generations.Download(ctx, g, path)
		if err != nil {
			b.Fatal(err)
		}
		if res.Fetched != size || res.Attempts != 1 {
			b.Fatalf("fetched %d in %d attempts", res.Fetched, res.Attempts)
		}
	})
	run("io.Copy", func(b *testing.B) { copyURL(b, hc, g.Output.URL, path, size, false) })
	run("io.Copy+Sync", func(b *testing.B) { copyURL(b, hc, g.Output.URL, path, size, true) })
}

// runDownload runs once, which writes size bytes at path, as the
// sub-benchmark impl=name, removing path after each run (untimed); with
// heap it also reports the peak live heap (sampleHeap).
func runDownload(b *testing.B, name, path string, size int64, heap bool, once func(b *testing.B)) {
	b.Run("impl="+name, func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		stop := func() {}
		if heap {
			stop = sampleHeap(b)
		}
		for b.Loop() {
			once(b)
			b.StopTimer()
			if err := os.Remove(path); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		stop()
	})
}

// sampleHeap samples the live heap every millisecond until stop, which
// reports the peak in MiB.
func sampleHeap(b *testing.B) (stop func()) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			mu.Lock()
			peak = max(peak, sample[0].Value.Uint64())
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	}
}

// BenchmarkDownloadStatic is BenchmarkDownload against a server that serves
// a prepared 64 MiB output from memory (http.ServeContent: Range and ETag),
// as a CDN on another machine would, so the server's own CPU (the fake
// generating its bytes) does not compete with the client's on this 2-core
// machine: the comparison isolates what Download adds on the client side.
func BenchmarkDownloadStatic(b *testing.B) {
	const size = 64 << 20
	data, err := io.ReadAll(safegentest.OutputBytes("gen_static", size))
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	c, err := safegen.NewClient("sk_bench", safegen.WithBaseURL(srv.URL))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	g := &safegen.Generation{ID: "gen_static", Status: safegen.StatusSucceeded, Output: &safegen.GenerationOutput{
		URL: srv.URL + "/out.mp4", Size: size, SHA256: hex.EncodeToString(sum[:]), ContentType: "video/mp4"}}
	hc := srv.Client()
	ctx := context.Background()
	run := func(b *testing.B, path, name string, once func(b *testing.B)) {
		runDownload(b, name, path, size, false, once)
	}
	// dir=disk is the test's temporary directory, where the fsync that
	// Download must do costs what the disk takes; dir=tmpfs (/dev/shm,
	// where there is one) is memory, where a sync costs nothing, so what
	// is left is the SDK's own work: the hash, the checks, the rename.
	dirs := []struct{ name, dir string }{{"disk", b.TempDir()}}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if shm, err := os.MkdirTemp("/dev/shm", "safegen-bench-"); err == nil {
			defer os.RemoveAll(shm)
			dirs = append(dirs, struct{ name, dir string }{"tmpfs", shm})
		}
	}
	for _, d := range dirs {
		b.Run("dir="+d.name, func(b *testing.B) {
			path := filepath.Join(d.dir, "out.mp4")
			run(b, path, "safegen", func(b *testing.B) {
				if _, err := c.Generations.Download(ctx, g, path); err != nil {
					b.Fatal(err)
				}
			})
			run(b, path, "io.Copy", func(b *testing.B) { copyURL(b, hc, g.Output.URL, path, size, false) })
			run(b, path, "io.Copy+Sync", func(b *testing.B) { copyURL(b, hc, g.Output.URL, path, size, true) })
			// The ceiling for any download that must be durable: the same
			// bytes written from memory, no network at all, then synced.
			run(b, path, "write+Sync", func(b *testing.B) { writeSynced(b, path, data) })
		})
	}
}

// writeSynced writes data to a new file at path and syncs it: what a
// durable file of that size costs on this disk, with no network.
func writeSynced(b *testing.B, path string, data []byte) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// copyURL is the baseline the download benchmarks compare with: io.Copy of
// url's body into a new file at path (size bytes), then File.Sync if sync.
func copyURL(b *testing.B, hc *http.Client, url, path string, size int64, sync bool) {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if n, err := io.Copy(f, resp.Body); err != nil || n != size {
		b.Fatalf("copied %d: %v", n, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
