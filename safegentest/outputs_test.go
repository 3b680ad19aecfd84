package safegentest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// succeeded creates a generation with body and moves clk past its
// processing; it returns the generation as GET shows it.
func succeeded(t *testing.T, c *http.Client, srv *Server, clk *ManualClock, body string) map[string]any {
	t.Helper()
	r := create(t, c, srv, "", body)
	require.Contains(t, []int{200, 201, 202}, r.Status, "%s", r.Body)
	id := decode(t, r)["id"].(string)
	clk.Advance(time.Second)
	g := decode(t, get(t, c, srv, "/v1/generations/"+id))
	require.Equal(t, "succeeded", g["status"])
	return g
}

func outputOf(t *testing.T, g map[string]any) map[string]any {
	t.Helper()
	o, ok := g["output"].(map[string]any)
	require.True(t, ok, "output: %v", g["output"])
	return o
}

// fetch GETs a URL with no credentials and reads the whole answer.
func fetch(t *testing.T, c *http.Client, u string, hdr ...string) (result, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

func mustFetch(t *testing.T, c *http.Client, u string, hdr ...string) result {
	t.Helper()
	r, err := fetch(t, c, u, hdr...)
	require.NoError(t, err)
	return r
}

func allBytes(t *testing.T, id string, size int64) []byte {
	t.Helper()
	b, err := io.ReadAll(OutputBytes(id, size))
	require.NoError(t, err)
	require.Len(t, b, int(size))
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestOutputServed(t *testing.T) {
	tests := []struct {
		name, body, ctype string
		size              int64
		opts              []Option
	}{
		{"default 64 KiB image", `{"model":"img-2","prompt":"p"}`, "image/png", 64 << 10, nil},
		{"video, odd size", bodyA, "video/mp4", 300_001, []Option{WithOutputSize(300_001)}},
		{"empty", `{"model":"img-2","prompt":"p"}`, "image/png", 0, []Option{WithOutputSize(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			srv := NewServer(t, append([]Option{WithClock(clk)}, tt.opts...)...)
			c := client(t)
			g := succeeded(t, c, srv, clk, tt.body)
			id := g["id"].(string)
			o := outputOf(t, g)
			want := allBytes(t, id, tt.size)
			assert.Equal(t, float64(tt.size), o["size"])
			assert.Equal(t, sum(want), o["sha256"])
			assert.Equal(t, tt.ctype, o["content_type"])
			assert.Equal(t, clk.Now().Add(time.Hour).Format(time.RFC3339), o["expires_at"])
			u, err := url.Parse(o["url"].(string))
			require.NoError(t, err)
			assert.Equal(t, srv.URL, u.Scheme+"://"+u.Host, "on the fake server itself")
			assert.Equal(t, "/v1/outputs/"+id, u.Path)
			assert.NotEmpty(t, u.Query().Get("sig"))

			r := mustFetch(t, c, o["url"].(string)) // no Authorization
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			assert.True(t, bytes.Equal(want, r.Body), "the bytes OutputBytes says")
			assert.Equal(t, strconv.FormatInt(tt.size, 10), r.Header.Get("Content-Length"))
			assert.Equal(t, "bytes", r.Header.Get("Accept-Ranges"))
			assert.Equal(t, `"`+sum(want)+`"`, r.Header.Get("ETag"))
			assert.Equal(t, tt.ctype, r.Header.Get("Content-Type"))
			assert.NotEmpty(t, r.Header.Get("X-Request-Id"))

			last := srv.Requests()[len(srv.Requests())-1]
			assert.Equal(t, "/v1/outputs/"+id, last.Path)
			assert.Equal(t, http.StatusOK, last.Status)
			assert.Equal(t, tt.size, last.ResponseBytes)
			assert.Empty(t, last.APIKey)
			assert.Equal(t, 1, srv.Ledger().Total(), "downloads are free")
		})
	}
}

func TestOutputBytesDeterministic(t *testing.T) {
	a := allBytes(t, "gen_a", 200_000)
	assert.Equal(t, a, allBytes(t, "gen_a", 200_000))
	assert.NotEqual(t, a, allBytes(t, "gen_b", 200_000))
	assert.Equal(t, a[:1000], allBytes(t, "gen_a", 1000), "a prefix does not depend on the size")
	assert.NotEqual(t, a[:outputBlock], a[outputBlock:2*outputBlock], "blocks differ")
}

func TestOutputRanges(t *testing.T) {
	const size = 200_000
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithOutputSize(size))
	c := client(t)
	g := succeeded(t, c, srv, clk, bodyA)
	u := outputOf(t, g)["url"].(string)
	all := allBytes(t, g["id"].(string), size)
	etag := `"` + sum(all) + `"`

	tests := []struct {
		name     string
		hdr      []string
		status   int
		from, to int64 // the body is all[from:to]
		crange   string
	}{
		{"open range", []string{"Range", "bytes=1000-"}, 206, 1000, size, "bytes 1000-199999/200000"},
		{"closed range", []string{"Range", "bytes=10-19"}, 206, 10, 20, "bytes 10-19/200000"},
		{"range past the end is clipped", []string{"Range", "bytes=199990-300000"}, 206, 199990, size, "bytes 199990-199999/200000"},
		{"suffix", []string{"Range", "bytes=-100"}, 206, size - 100, size, "bytes 199900-199999/200000"},
		{"across a block boundary", []string{"Range", "bytes=65530-65545"}, 206, 65530, 65546, "bytes 65530-65545/200000"},
		{"If-Range matches", []string{"Range", "bytes=5-", "If-Range", etag}, 206, 5, size, "bytes 5-199999/200000"},
		{"If-Range stale tag", []string{"Range", "bytes=5-", "If-Range", `"0000"`}, 200, 0, size, ""},
		{"If-Range weak tag", []string{"Range", "bytes=5-", "If-Range", "W/" + etag}, 200, 0, size, ""},
		{"If-Range date", []string{"Range", "bytes=5-", "If-Range", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, 0, size, ""},
		{"malformed range ignored", []string{"Range", "bytes=x-"}, 200, 0, size, ""},
		{"other unit ignored", []string{"Range", "items=1-"}, 200, 0, size, ""},
		{"several ranges ignored", []string{"Range", "bytes=1-2,5-6"}, 200, 0, size, ""},
		{"backwards range ignored", []string{"Range", "bytes=9-2"}, 200, 0, size, ""},
		{"unsatisfiable", []string{"Range", "bytes=200000-"}, 416, 0, 0, "bytes */200000"},
		{"unsatisfiable with If-Range", []string{"Range", "bytes=300000-", "If-Range", etag}, 416, 0, 0, "bytes */200000"},
		{"empty suffix", []string{"Range", "bytes=-0"}, 416, 0, 0, "bytes */200000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustFetch(t, c, u, tt.hdr...)
			require.Equal(t, tt.status, r.Status, "%s", r.Body)
			assert.Equal(t, tt.crange, r.Header.Get("Content-Range"))
			assert.Equal(t, etag, r.Header.Get("ETag"))
			if tt.status == 416 {
				assert.Equal(t, "range_not_satisfiable", errCode(t, r))
				return
			}
			assert.True(t, bytes.Equal(all[tt.from:tt.to], r.Body), "bytes %d-%d", tt.from, tt.to)
			assert.Equal(t, strconv.FormatInt(tt.to-tt.from, 10), r.Header.Get("Content-Length"))
		})
	}
}

func TestOutputURLExpiresAndRefreshes(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithOutputTTL(10*time.Minute))
	c := client(t)
	g := succeeded(t, c, srv, clk, bodyA)
	id := g["id"].(string)
	o := outputOf(t, g)
	old := o["url"].(string)
	assert.Equal(t, clk.Now().Add(10*time.Minute).Format(time.RFC3339), o["expires_at"])

	clk.Advance(10*time.Minute - time.Second)
	require.Equal(t, http.StatusOK, mustFetch(t, c, old).Status, "valid until expires_at")
	clk.Advance(time.Second)
	r := mustFetch(t, c, old)
	require.Equal(t, http.StatusForbidden, r.Status)
	assert.Equal(t, "url_expired", errCode(t, r))

	fresh := outputOf(t, decode(t, get(t, c, srv, "/v1/generations/"+id)))
	assert.NotEqual(t, old, fresh["url"])
	assert.Equal(t, o["sha256"], fresh["sha256"], "same bytes")
	r = mustFetch(t, c, fresh["url"].(string))
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, o["sha256"], sum(r.Body))

	// Tampering with the link breaks its signature.
	pu, err := url.Parse(fresh["url"].(string))
	require.NoError(t, err)
	q := pu.Query()
	q.Set("exp", strconv.FormatInt(clk.Now().Add(24*time.Hour).Unix(), 10))
	pu.RawQuery = q.Encode()
	for name, u := range map[string]string{
		"later exp":    pu.String(),
		"no signature": srv.URL + "/v1/outputs/" + id,
		"other id":     strings.Replace(fresh["url"].(string), id, "gen_other", 1),
	} {
		r := mustFetch(t, c, u)
		assert.Equal(t, http.StatusForbidden, r.Status, name)
		assert.Equal(t, "invalid_signature", errCode(t, r), name)
	}
	req, err := http.NewRequest(http.MethodPost, fresh["url"].(string), nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	req, err = http.NewRequest(http.MethodHead, fresh["url"].(string), nil)
	require.NoError(t, err)
	resp, err = c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, int64(64<<10), resp.ContentLength)
}

func TestOutputFaults(t *testing.T) {
	const size = 100_000
	tests := []struct {
		name  string
		fault Fault
		hdr   []string
		check func(t *testing.T, r result, err error, all []byte, rec RecordedRequest)
	}{
		{"cut after 1000 bytes", Fault{Kind: FaultCut, CutAfter: 1000}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				assert.Equal(t, int64(1000), rec.ResponseBytes)
				assert.Equal(t, 200, rec.Status)
			}},
		{"cut mid-body by default", Fault{Kind: FaultCut}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				assert.Equal(t, int64(size/2), rec.ResponseBytes)
			}},
		{"cut a range", Fault{Kind: FaultCut, CutAfter: 10}, []string{"Range", "bytes=99000-"},
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				assert.Equal(t, int64(10), rec.ResponseBytes)
				assert.Equal(t, 206, rec.Status)
			}},
		{"corrupt", Fault{Kind: FaultCorrupt, CutAfter: 7}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.NoError(t, err)
				require.Equal(t, 200, r.Status)
				require.Len(t, r.Body, size)
				assert.Equal(t, `"`+sum(all)+`"`, r.Header.Get("ETag"), "the ETag of the true bytes")
				diff := 0
				for i := range r.Body {
					if r.Body[i] != all[i] {
						diff++
						assert.Equal(t, 7, i)
					}
				}
				assert.Equal(t, 1, diff)
			}},
		{"trickle", Fault{Kind: FaultTrickle, ChunkBytes: 10_000, Latency: time.Millisecond}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.NoError(t, err)
				assert.True(t, bytes.Equal(all, r.Body))
			}},
		{"ignore range", Fault{Kind: FaultIgnoreRange}, []string{"Range", "bytes=10-"},
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.NoError(t, err)
				assert.Equal(t, 200, r.Status)
				assert.True(t, bytes.Equal(all, r.Body))
				assert.Empty(t, r.Header.Get("Content-Range"))
			}},
		{"503", Fault{Kind: FaultStatus, Status: 503}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.NoError(t, err)
				assert.Equal(t, 503, r.Status)
				assert.Equal(t, "service_unavailable", errCode(t, r))
			}},
		{"reset", Fault{Kind: FaultReset}, nil,
			func(t *testing.T, r result, err error, all []byte, rec RecordedRequest) {
				require.Error(t, err)
				assert.Equal(t, 0, rec.Status)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			srv := NewServer(t, WithClock(clk), WithOutputSize(size))
			c := client(t)
			g := succeeded(t, c, srv, clk, bodyA)
			id := g["id"].(string)
			f := tt.fault
			f.Path = "/v1/outputs/" + id
			srv.InjectFaults(f)
			r, err := fetch(t, c, outputOf(t, g)["url"].(string), tt.hdr...)
			reqs := srv.Requests()
			rec := reqs[len(reqs)-1]
			assert.Equal(t, tt.fault.Kind, rec.Fault)
			tt.check(t, r, err, allBytes(t, id, size), rec)
			// The fault is spent: the next download is whole.
			r = mustFetch(t, c, outputOf(t, g)["url"].(string))
			assert.Equal(t, 200, r.Status)
			assert.Equal(t, sum(allBytes(t, id, size)), sum(r.Body))
		})
	}
}

func TestOutputTrickleStopsWhenClientLeaves(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk))
	c := client(t)
	g := succeeded(t, c, srv, clk, bodyA)
	srv.InjectFaults(Fault{Kind: FaultTrickle, Latency: time.Hour, Path: "/v1/outputs/" + g["id"].(string)})
	c.Timeout = 50 * time.Millisecond
	start := time.Now()
	_, err := fetch(t, c, outputOf(t, g)["url"].(string))
	require.Error(t, err)
	// Close waits for the handler; it must not sleep its hour.
	srv.Close()
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestOutputRandomFaultsSeeded(t *testing.T) {
	kinds := func(seed int64) []FaultKind {
		clk := NewManualClock(t0)
		srv := NewServer(t, WithClock(clk), WithRateLimit(0, 0), WithFaultRates(FaultRates{
			DownloadCut: 0.25, Download503: 0.2, DownloadReset: 0.2, DownloadTrickle: 0.1, TrickleDelay: time.Microsecond,
		}, seed))
		c := client(t)
		g := succeeded(t, c, srv, clk, bodyA)
		u := outputOf(t, g)["url"].(string)
		var out []FaultKind
		for range 40 {
			_, _ = fetch(t, c, u)
			reqs := srv.Requests()
			out = append(out, reqs[len(reqs)-1].Fault)
		}
		for _, r := range srv.Requests() {
			if !strings.HasPrefix(r.Path, "/v1/outputs/") {
				assert.Equal(t, FaultNone, r.Fault, "download rates never hit %s %s", r.Method, r.Path)
			}
		}
		return out
	}
	a := kinds(7)
	assert.Equal(t, a, kinds(7), "same seed, same faults")
	seen := map[FaultKind]int{}
	for _, k := range a {
		seen[k]++
	}
	for _, k := range []FaultKind{FaultNone, FaultCut, FaultStatus, FaultReset, FaultTrickle} {
		assert.Positive(t, seen[k], "%q drawn in 40 downloads", k)
	}
}

// TestOutputStreamed: a 64 MiB download does not build a 64 MiB slice.
func TestOutputStreamed(t *testing.T) {
	const size = 64 << 20
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithOutputSize(size))
	c := client(t)
	g := succeeded(t, c, srv, clk, bodyA) // hashes the output once
	u := outputOf(t, g)["url"].(string)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, err := c.Get(u)
	require.NoError(t, err)
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 32<<10))
	resp.Body.Close()
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	require.Equal(t, int64(size), n)
	assert.Equal(t, outputOf(t, g)["sha256"], hex.EncodeToString(h.Sum(nil)))
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB to serve and read 64 MiB", alloc>>10)
	assert.Less(t, alloc, uint64(4<<20))
}

func TestPollHint(t *testing.T) {
	tests := []struct {
		name    string
		opts    []Option
		advance time.Duration
		want    string // "" for none
	}{
		{"queued: seconds to processing, rounded down", []Option{WithGenerationTiming(90*time.Second, time.Minute)}, 0, "90"},
		{"queued part-way", []Option{WithGenerationTiming(90*time.Second, time.Minute)}, 500 * time.Millisecond, "89"},
		{"processing: seconds to the end", []Option{WithGenerationTiming(90*time.Second, time.Minute)}, 100 * time.Second, "50"},
		{"sub-second phases say 0", nil, 0, "0"},
		{"fixed hint, rounded up", []Option{WithGenerationTiming(time.Hour, time.Hour), WithPollHint(6500 * time.Millisecond)}, 0, "7"},
		{"terminal: no hint", nil, time.Second, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			srv := NewServer(t, append([]Option{WithClock(clk)}, tt.opts...)...)
			c := client(t)
			id := decode(t, create(t, c, srv, "", bodyA))["id"].(string)
			clk.Advance(tt.advance)
			r := get(t, c, srv, "/v1/generations/"+id)
			require.Equal(t, http.StatusOK, r.Status)
			v, ok := r.Header["Retry-After"]
			if tt.want == "" {
				assert.False(t, ok, "Retry-After %v", v)
				return
			}
			assert.Equal(t, []string{tt.want}, v)
		})
	}
}

func TestCancel(t *testing.T) {
	const cost = 12 // bodyA
	tests := []struct {
		name       string
		advance    time.Duration // from creation, timing 1 min queued + 1 min processing
		body       string
		wantStatus int
		wantCode   string
		refunded   bool
	}{
		{"queued: refunded", 0, bodyA, 200, "", true},
		{"processing: charged", 90 * time.Second, bodyA, 200, "", false},
		{"succeeded: terminal", 3 * time.Minute, bodyA, 409, "generation_terminal", false},
		{"failed: terminal", 3 * time.Minute, `{"model":"veo-3-1-fast","prompt":"[fail]"}`, 409, "generation_terminal", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			srv := NewServer(t, WithClock(clk), WithGenerationTiming(time.Minute, time.Minute), WithCredits(100))
			c := client(t)
			id := decode(t, create(t, c, srv, "k", tt.body))["id"].(string)
			clk.Advance(tt.advance)
			auth := []string{"Authorization", "Bearer " + srv.APIKey}
			r := must(t, c, srv, http.MethodPost, "/v1/generations/"+id+"/cancel", "", auth...)
			require.Equal(t, tt.wantStatus, r.Status, "%s", r.Body)
			if tt.wantCode != "" {
				assert.Equal(t, tt.wantCode, errCode(t, r))
			} else {
				g := decode(t, r)
				assert.Equal(t, "canceled", g["status"])
				assert.Nil(t, g["output"])
				// Repeating is harmless: the same answer, no second refund.
				again := must(t, c, srv, http.MethodPost, "/v1/generations/"+id+"/cancel", "", auth...)
				require.Equal(t, 200, again.Status)
				assert.Equal(t, g, decode(t, again))
				// It stays canceled when its processing would have ended.
				clk.Advance(time.Hour)
				after := get(t, c, srv, "/v1/generations/"+id)
				assert.Equal(t, "canceled", decode(t, after)["status"])
				assert.Empty(t, after.Header.Get("Retry-After"), "terminal: no poll hint")
			}
			l := srv.Ledger()
			assert.Equal(t, 1, l.Total(), "the charge stays in the ledger")
			acct := decode(t, get(t, c, srv, "/v1/account"))["credits"]
			g := decode(t, get(t, c, srv, "/v1/generations/"+id))
			if tt.refunded {
				require.Len(t, l.Refunds, 1)
				assert.Equal(t, Refund{APIKey: srv.APIKey, GenerationID: id, Credits: cost, At: t0}, l.Refunds[0])
				assert.Equal(t, int64(cost), l.Refunded(srv.APIKey))
				assert.Equal(t, int64(0), l.NetCredits(srv.APIKey))
				assert.Equal(t, float64(100), acct, "credits back")
				assert.Equal(t, float64(0), g["cost"])
			} else {
				assert.Empty(t, l.Refunds)
				assert.Equal(t, int64(cost), l.NetCredits(srv.APIKey))
				assert.Equal(t, float64(100-cost), acct)
				assert.Equal(t, float64(cost), g["cost"])
			}
		})
	}
}

func TestCancelRefusals(t *testing.T) {
	clk := NewManualClock(t0)
	srv := NewServer(t, WithClock(clk), WithGenerationTiming(time.Minute, time.Minute))
	c := client(t)
	id := decode(t, create(t, c, srv, "", bodyA))["id"].(string)
	readKey := srv.NewAPIKey(ScopeRead)
	other := srv.NewAPIKey()
	tests := []struct {
		name, method, path, auth string
		status                   int
		code                     string
	}{
		{"no key", "POST", "/v1/generations/" + id + "/cancel", "", 401, "invalid_api_key"},
		{"read scope", "POST", "/v1/generations/" + id + "/cancel", "Bearer " + readKey, 403, "insufficient_scope"},
		{"another account's generation", "POST", "/v1/generations/" + id + "/cancel", "Bearer " + other, 404, "not_found"},
		{"unknown", "POST", "/v1/generations/gen_nope/cancel", "Bearer " + srv.APIKey, 404, "not_found"},
		{"GET", "GET", "/v1/generations/" + id + "/cancel", "Bearer " + srv.APIKey, 405, "method_not_allowed"},
		{"empty id", "POST", "/v1/generations//cancel", "Bearer " + srv.APIKey, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := must(t, c, srv, tt.method, tt.path, "", "Authorization", tt.auth)
			assert.Equal(t, tt.status, r.Status, "%s", r.Body)
			assert.Equal(t, tt.code, errCode(t, r))
		})
	}
	assert.Equal(t, "queued", decode(t, get(t, c, srv, "/v1/generations/"+id))["status"])
	assert.Empty(t, srv.Ledger().Refunds)
}

// TestOutputsInEveryDialect: downloads take no credentials in any dialect;
// cancel takes the dialect's auth header.
func TestOutputsInEveryDialect(t *testing.T) {
	for _, d := range []Dialect{DialectDefault, DialectRimp, DialectRealm, DialectRelaystation, DialectClipia, DialectPatomic} {
		t.Run(string(d), func(t *testing.T) {
			clk := NewManualClock(t0)
			srv := NewServer(t, WithClock(clk), WithDialect(d))
			c := client(t)
			auth := []string{"Authorization", "Bearer " + srv.APIKey, "Content-Type", "application/json"}
			if d == DialectRealm {
				auth = []string{"X-API-Key", srv.APIKey, "Content-Type", "application/json"}
			}
			r := must(t, c, srv, http.MethodPost, "/v1/generations", bodyA, auth...)
			id := decode(t, r)["id"].(string)
			clk.Advance(time.Second)
			g := decode(t, must(t, c, srv, http.MethodGet, "/v1/generations/"+id, "", auth...))
			o := outputOf(t, g)
			dl := mustFetch(t, c, o["url"].(string))
			require.Equal(t, 200, dl.Status)
			assert.Equal(t, o["sha256"], sum(dl.Body))

			id2 := decode(t, must(t, c, srv, http.MethodPost, "/v1/generations", bodyB, auth...))["id"].(string)
			cr := must(t, c, srv, http.MethodPost, "/v1/generations/"+id2+"/cancel", "", auth...)
			assert.Equal(t, 200, cr.Status, "%s", cr.Body)
			cr = must(t, c, srv, http.MethodPost, "/v1/generations/"+id+"/cancel", "", auth...)
			assert.Equal(t, 409, cr.Status)
		})
	}
}

// FuzzParseRange: any Range header gives a range inside the output, or is
// ignored or unsatisfiable; never a panic.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=5-9", "bytes=-5", "bytes=-0", "bytes=9-5", "bytes=1-2,3-4",
		"bytes=99999999999999999999-", "bytes=+1-", "items=0-", "bytes= 1 - 2 ", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			size = -size
		}
		from, to, ok, satisfiable := parseRange(v, size)
		if ok && satisfiable && (from < 0 || to > size || from >= to) {
			t.Fatalf("parseRange(%q, %d) = [%d, %d)", v, size, from, to)
		}
	})
}
