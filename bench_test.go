package safegen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

// benchServer answers every create with a fixed 202 generation, as cheaply
// as a server can, so the benchmarks measure the client.
func benchServer(b testing.TB) *httptest.Server {
	body := []byte(`{"id":"gen_1","request_id":"req_1","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["X-Request-Id"] = []string{"req_1"}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return srv
}

var benchParams = &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: "a red fox running through snow", DurationS: 4}

// benchCreates runs creates through a Client made with opts until the
// benchmark is done.
func benchCreates(b *testing.B, opts ...safegen.Option) {
	benchCreatesCtx(b, context.Background(), opts...)
}

// benchCreatesCtx is benchCreates under ctx.
func benchCreatesCtx(b *testing.B, ctx context.Context, opts ...safegen.Option) {
	c, err := safegen.NewClient("sk_bench", opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Generations.Create(ctx, benchParams); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate compares one Generations.Create, against the same local
// server, with:
//   - impl=hand: the hand-written equivalent: the same UUID key, the very
//     headers the SDK sends (captured from it) and the same decode into
//     Generation, with net/http and encoding/json;
//   - impl=bare: a bare POST of the same bytes that reads the answer and
//     throws it away (no key, no decode);
//   - impl=floor: the least a create can do and still be one: the
//     contract's headers only (content type, credential, a fresh UUID v4
//     key), the parameters encoded, the answer decoded with the SDK's own
//     reflection-free decoder; no retry loop, no timeout, nothing else;
//   - impl=floor+sdkheaders: the floor, plus the three headers the SDK
//     also sends (accept, user agent, X-Safegen-Attempt);
//   - impl=retryablehttp: a default go-retryablehttp client doing the hand
//     call's work;
//   - the SDK without its attempt timeout, and through the file journal.
//
// Compare with benchstat -col /impl (BENCHMARKS.md, section 1).
func BenchmarkCreate(b *testing.B) {
	srv := benchServer(b)
	ctx := context.Background()
	hdr := sdkHeaders(b)

	b.Run("impl=safegen", func(b *testing.B) { benchCreates(b, safegen.WithBaseURL(srv.URL)) })

	// The same without the per-attempt timeout, to show what that safety net
	// costs on the happy path.
	b.Run("impl=safegen-noattempttimeout", func(b *testing.B) {
		benchCreates(b, safegen.WithBaseURL(srv.URL), safegen.WithAttemptTimeout(0))
	})

	// Under a context that can be canceled (a service's request context):
	// each attempt then has a context of its own, watched by the Client's
	// timer (attempt_timeout.go).
	b.Run("impl=safegen-cancelablectx", func(b *testing.B) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		benchCreatesCtx(b, cctx, safegen.WithBaseURL(srv.URL))
	})

	b.Run("impl=hand", func(b *testing.B) {
		hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		defer hc.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := handCreateHeaders(ctx, hc, srv.URL, hdr); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("impl=bare", func(b *testing.B) {
		hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		defer hc.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			if err := barePost(ctx, hc, srv.URL); err != nil {
				b.Fatal(err)
			}
		}
	})

	floor := func(hdr http.Header) func(b *testing.B) {
		return func(b *testing.B) {
			hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
			defer hc.CloseIdleConnections()
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := floorCreate(ctx, hc, srv.URL, hdr, buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("impl=floor", floor(http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer sk_bench"}}))
	b.Run("impl=floor+sdkheaders", floor(hdr))

	b.Run("impl=retryablehttp", func(b *testing.B) {
		rc := retryablehttp.NewClient()
		rc.Logger = nil
		b.ReportAllocs()
		for b.Loop() {
			body, _ := json.Marshal(benchParams)
			req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/generations", body)
			if err != nil {
				b.Fatal(err)
			}
			key, err := safegen.NewIdempotencyKey()
			if err != nil {
				b.Fatal(err)
			}
			req.Header = hdr.Clone()
			req.Header["Idempotency-Key"] = []string{key}
			resp, err := rc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var g safegen.Generation
			err = json.NewDecoder(resp.Body).Decode(&g)
			resp.Body.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("impl=safegen+filejournal", func(b *testing.B) {
		j, err := journal.Open(filepath.Join(b.TempDir(), "bench.journal"))
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		benchCreates(b, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j))
	})
}

// sdkHeaders returns the headers a default Client sends with a create,
// less the idempotency key, as a server saw them: the hand-written
// baselines send the same ones.
func sdkHeaders(tb testing.TB) http.Header {
	tb.Helper()
	var seen http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(memBody)
	}))
	defer srv.Close()
	c, err := safegen.NewClient("sk_bench", safegen.WithBaseURL(srv.URL))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Generations.Create(context.Background(), benchParams); err != nil {
		tb.Fatal(err)
	}
	h := http.Header{}
	for k, v := range seen {
		switch k {
		case "Idempotency-Key", "Content-Length", "Accept-Encoding": // per call, or set by net/http itself
			continue
		}
		h[k] = v
	}
	return h
}

// createRequest is a create's request written by hand: the parameters
// encoded with encoding/json, hdr, and a fresh UUID v4 key.
func createRequest(ctx context.Context, base string, hdr http.Header) (*http.Request, error) {
	body, err := json.Marshal(benchParams)
	if err != nil {
		return nil, err
	}
	key, err := safegen.NewIdempotencyKey()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/generations", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header["Idempotency-Key"] = []string{key}
	return req, nil
}

// postCreate sends createRequest's request with hc and returns the answer,
// which must be a 202.
func postCreate(ctx context.Context, hc *http.Client, base string, hdr http.Header) (*http.Response, error) {
	req, err := createRequest(ctx, base, hdr)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusAccepted {
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp, nil
}

// handCreateHeaders is the hand-written equivalent of a create: it encodes
// the same parameters, mints the same UUID v4 key, sends hdr plus the key,
// and decodes the answer into Generation.
func handCreateHeaders(ctx context.Context, hc *http.Client, base string, hdr http.Header) (*safegen.Generation, error) {
	resp, err := postCreate(ctx, hc, base, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var g safegen.Generation
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		return nil, err
	}
	return &g, nil
}

// floorCreate is the least a create can do: hdr plus a fresh UUID v4 key,
// the parameters encoded, the answer read into buf (which must hold it)
// and decoded without reflection.
func floorCreate(ctx context.Context, hc *http.Client, base string, hdr http.Header, buf []byte) (*safegen.Generation, error) {
	resp, err := postCreate(ctx, hc, base, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength < 0 || resp.ContentLength > int64(len(buf)) {
		return nil, fmt.Errorf("answer of length %d", resp.ContentLength)
	}
	n, err := io.ReadFull(resp.Body, buf[:resp.ContentLength])
	if err != nil {
		return nil, err
	}
	var g safegen.Generation
	if !safegen.DecodeGenerationFast(buf[:n], &g) {
		return nil, fmt.Errorf("answer not in the fast decoder's shape: %s", buf[:n])
	}
	return &g, nil
}

// barePostBody is what every create sends.
var barePostBody, _ = json.Marshal(benchParams)

// barePost is the least a POST can do: the same bytes, a content type and
// a credential; the answer is read and thrown away.
func barePost(ctx context.Context, hc *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/generations", bytes.NewReader(barePostBody))
	if err != nil {
		return err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["Authorization"] = []string{"Bearer sk_bench"}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusAccepted {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// memTransport answers every request at once from memory, so
// BenchmarkCreateCPU measures the client's own work without the network's
// noise.
type memTransport struct{}

var memBody = []byte(`{"id":"gen_1","request_id":"req_1","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`)

func (memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusAccepted, Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_1"}},
		Body: io.NopCloser(bytes.NewReader(memBody)), ContentLength: int64(len(memBody)), Request: r}, nil
}

// BenchmarkCreateCPU compares the client's own CPU work per create with the
// hand-written call, both over an in-memory transport.
func BenchmarkCreateCPU(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=safegen", func(b *testing.B) {
		benchCreates(b, safegen.WithBaseURL("http://127.0.0.1:1"), safegen.WithHTTPClient(&http.Client{Transport: memTransport{}}))
	})
	// With an Observer that does nothing: what the hooks themselves cost.
	b.Run("impl=safegen+nopobserver", func(b *testing.B) {
		benchCreates(b, safegen.WithBaseURL("http://127.0.0.1:1"), safegen.WithHTTPClient(&http.Client{Transport: memTransport{}}),
			safegen.WithObserver(safegen.NopObserver{}))
	})
	hdr := sdkHeaders(b)
	b.Run("impl=bare", func(b *testing.B) {
		hc := &http.Client{Transport: memTransport{}}
		b.ReportAllocs()
		for b.Loop() {
			if err := barePost(ctx, hc, "http://127.0.0.1:1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=hand", func(b *testing.B) {
		hc := &http.Client{Transport: memTransport{}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := handCreateHeaders(ctx, hc, "http://127.0.0.1:1", hdr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateSpendGuard is the spend guard's cost on the happy path: a
// create without a limit, with a limit and the caller's price (WithCost),
// and with a limit priced by the cached estimate.
func BenchmarkCreateSpendGuard(b *testing.B) {
	srv := benchServer(b)
	estimates := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/generations/estimate" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"credits":12}`))
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	b.Cleanup(estimates.Close)
	run := func(b *testing.B, url string, client []safegen.Option, call ...safegen.RequestOption) {
		c, err := safegen.NewClient("sk_bench", append([]safegen.Option{safegen.WithBaseURL(url)}, client...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Generations.Create(ctx, benchParams, call...); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("no-limit", func(b *testing.B) { run(b, srv.URL, nil, safegen.WithCost(12)) })
	b.Run("limit-with-cost", func(b *testing.B) {
		run(b, srv.URL, []safegen.Option{safegen.WithSpendLimit(1e12)}, safegen.WithCost(12))
	})
	b.Run("limit-estimated", func(b *testing.B) {
		run(b, estimates.URL, []safegen.Option{safegen.WithSpendLimit(1e12)})
	})
}

// BenchmarkCreateInFlight64 is a journaled create beside a plain one, 64
// calls in flight against a server that takes 10 ms per call: with group
// commit the journal's fsync hides behind the network (target: the
// journaled throughput at least 0.9 times the plain one).
func BenchmarkCreateInFlight64(b *testing.B) {
	body := []byte(`{"id":"gen_1","request_id":"req_1","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(10 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	run := func(b *testing.B, opts ...safegen.Option) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		c, err := safegen.NewClient("sk_bench", append([]safegen.Option{safegen.WithBaseURL(srv.URL),
			safegen.WithHTTPClient(&http.Client{Transport: tr})}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		defer tr.CloseIdleConnections()
		ctx := context.Background()
		b.SetParallelism(64 / max(1, runtime.GOMAXPROCS(0)))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Generations.Create(ctx, benchParams); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	}
	b.Run("journal=none", func(b *testing.B) { run(b) })
	b.Run("journal=file", func(b *testing.B) {
		j, err := journal.Open(filepath.Join(b.TempDir(), "bench.journal"))
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		run(b, safegen.WithJournal(j))
	})
}
