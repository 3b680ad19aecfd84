package safegentest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pathOutputs prefixes output URLs: /v1/outputs/{generation id}?exp=…&sig=….
const pathOutputs = "/v1/outputs/"

// outputBlock is the unit the output bytes are generated in: block k of an
// output is a ChaCha8 stream seeded from the generation id and k, so any
// offset can be served without generating what comes before it.
const outputBlock = 64 << 10

var blockPool = sync.Pool{New: func() any {
	b := make([]byte, outputBlock)
	return &b
}}

// output is what a succeeded generation's bytes are.
type output struct {
	id          string
	seed        [32]byte
	size        int64
	sha256      string // hex
	contentType string
}

func (o *output) etag() string { return `"` + o.sha256 + `"` }

// outputSeed derives the seed of a generation's output bytes from its id.
func outputSeed(id string) [32]byte {
	return sha256.Sum256([]byte("safegentest output\x00" + id))
}

// fillBlock writes block k of the output with seed into buf (outputBlock bytes).
func fillBlock(buf []byte, seed [32]byte, k int64) {
	binary.LittleEndian.PutUint64(seed[:8], binary.LittleEndian.Uint64(seed[:8])^uint64(k))
	rng := rand.NewChaCha8(seed)
	_, _ = rng.Read(buf)
}

// OutputBytes returns a reader of the bytes the output of generation id
// holds when the server makes outputs of size bytes (WithOutputSize), so a
// test can compare a downloaded file without downloading it again.
func OutputBytes(id string, size int64) io.Reader {
	return &outputReader{seed: outputSeed(id), size: max(size, 0)}
}

// outputReader reads an output's bytes in order.
type outputReader struct {
	seed [32]byte
	size int64
	off  int64
	buf  []byte
	k    int64 // the block in buf, valid when buf != nil
}

func (r *outputReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	k := r.off / outputBlock
	if r.buf == nil || r.k != k {
		if r.buf == nil {
			r.buf = make([]byte, outputBlock)
		}
		fillBlock(r.buf, r.seed, k)
		r.k = k
	}
	end := min(int64(outputBlock), r.size-k*outputBlock)
	n := copy(p, r.buf[r.off-k*outputBlock:end])
	r.off += int64(n)
	return n, nil
}

// outputSHA256 hashes the output's bytes, generating them block by block.
func outputSHA256(seed [32]byte, size int64) string {
	h := sha256.New()
	bp := blockPool.Get().(*[]byte)
	defer blockPool.Put(bp)
	buf := *bp
	for k := int64(0); k*outputBlock < size; k++ {
		fillBlock(buf, seed, k)
		h.Write(buf[:min(int64(outputBlock), size-k*outputBlock)])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// outputLocked returns g's output, hashing it the first time. Called with
// s.mu held, on a succeeded generation.
func (s *Server) outputLocked(g *generation) *output {
	if g.out == nil {
		ct := "video/mp4"
		if g.durationS == 0 {
			ct = "image/png"
		}
		seed := outputSeed(g.id)
		g.out = &output{id: g.id, seed: seed, size: g.outSize, sha256: outputSHA256(seed, g.outSize), contentType: ct}
	}
	return g.out
}

// outputJSONLocked is the output field of a succeeded generation viewed at
// now: a URL signed until now plus the output TTL.
func (s *Server) outputJSONLocked(g *generation, now time.Time) *outputJSON {
	o := s.outputLocked(g)
	exp := now.Add(s.cfg.outputTTL).Unix()
	base := ""
	if s.Server != nil {
		base = s.Server.URL
	}
	return &outputJSON{
		URL:         base + pathOutputs + g.id + "?exp=" + strconv.FormatInt(exp, 10) + "&sig=" + s.sign(g.id, exp),
		Size:        o.size,
		SHA256:      o.sha256,
		ContentType: o.contentType,
		ExpiresAt:   time.Unix(exp, 0).UTC().Format(time.RFC3339),
	}
}

// sign is the URL signature of generation id's output until exp.
func (s *Server) sign(id string, exp int64) string {
	mac := hmac.New(sha256.New, s.outputKey)
	mac.Write([]byte(id + "\x00" + strconv.FormatInt(exp, 10)))
	return hex.EncodeToString(mac.Sum(nil))
}

// resolveOutput checks an output request's method, signature, expiry and
// generation; it returns the output, or the answer refusing the request.
func (s *Server) resolveOutput(r *http.Request) (*output, *response) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		resp := errorResponse(http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on an output")
		resp.header.Set("Allow", "GET, HEAD")
		return nil, resp
	}
	id := strings.TrimPrefix(r.URL.Path, pathOutputs)
	q := r.URL.Query()
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	if id == "" || strings.Contains(id, "/") || err != nil ||
		!hmac.Equal([]byte(q.Get("sig")), []byte(s.sign(id, exp))) {
		return nil, errorResponse(http.StatusForbidden, "invalid_signature", "the output URL's signature is not valid")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.clock.Now()
	if !now.Before(time.Unix(exp, 0)) {
		return nil, errorResponse(http.StatusForbidden, "url_expired",
			"the output URL expired; GET the generation for a fresh one")
	}
	g := s.gens[id]
	if g == nil || g.status(now, &s.cfg) != "succeeded" {
		return nil, errorResponse(http.StatusNotFound, "not_found", "no output for "+strconv.Quote(id))
	}
	return s.outputLocked(g), nil
}

// serveOutput answers a download: the whole output (200) or the range asked
// for (206), streamed block by block, with the download fault applied.
func (s *Server) serveOutput(w http.ResponseWriter, r *http.Request, idx int, f Fault) {
	o, refused := s.resolveOutput(r)
	if refused != nil {
		s.write(w, idx, refused)
		return
	}
	h := w.Header()
	h.Set("Content-Type", o.contentType)
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", o.etag())
	h.Set("X-Request-Id", newID("req_"))
	from, to, status := int64(0), o.size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && f.Kind != FaultIgnoreRange && ifRangeHolds(r.Header, o.etag()) {
		start, end, ok, satisfiable := parseRange(rg, o.size)
		switch {
		case ok && !satisfiable:
			resp := errorResponse(http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable",
				"the output has "+strconv.FormatInt(o.size, 10)+" bytes")
			resp.header.Set("Content-Range", "bytes */"+strconv.FormatInt(o.size, 10))
			resp.header.Set("ETag", o.etag())
			s.write(w, idx, resp)
			return
		case ok:
			from, to, status = start, end, http.StatusPartialContent
			h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end-1, 10)+"/"+strconv.FormatInt(o.size, 10))
		}
	}
	h.Set("Content-Length", strconv.FormatInt(to-from, 10))
	s.finish(idx, status, false, 0)
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if cut := s.streamOutput(w, r, idx, o, from, to, f); cut {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		hijackClose(w, false)
	}
}

// streamOutput writes bytes [from, to) of o, applying a cut, trickle or
// corrupt fault, and counts them in request idx's ResponseBytes before
// writing them, so a client never sees a byte not yet counted. It reports
// whether the connection must now be cut.
func (s *Server) streamOutput(w http.ResponseWriter, r *http.Request, idx int, o *output, from, to int64, f Fault) bool {
	length := to - from
	limit, flip := length, int64(-1)
	switch f.Kind {
	case FaultCut:
		limit = length / 2
		switch {
		case f.CutAfter > 0 && f.CutAfter < length:
			limit = f.CutAfter
		case f.at > 0:
			limit = min(max(int64(f.at*float64(length)), 1), length-1)
		}
		limit = max(limit, 0)
	case FaultCorrupt:
		flip = length / 2
		if f.CutAfter > 0 && f.CutAfter < length {
			flip = f.CutAfter
		}
	}
	piece := int64(outputBlock)
	if f.Kind == FaultTrickle {
		piece = 1 << 10
		if f.ChunkBytes > 0 {
			piece = int64(f.ChunkBytes)
		}
	}
	bp := blockPool.Get().(*[]byte)
	defer blockPool.Put(bp)
	buf := *bp
	for off := from; off < from+limit; {
		k := off / outputBlock
		fillBlock(buf, o.seed, k)
		if flip >= 0 && from+flip >= k*outputBlock && from+flip < (k+1)*outputBlock {
			buf[from+flip-k*outputBlock] ^= 0xff
		}
		end := min((k+1)*outputBlock, from+limit)
		for off < end {
			n := min(piece, end-off)
			if f.Kind == FaultTrickle {
				s.sleep(r.Context(), f.Latency)
				if r.Context().Err() != nil {
					return false
				}
			}
			s.sent(idx, n)
			m, err := w.Write(buf[off-k*outputBlock : off-k*outputBlock+n])
			off += int64(m)
			if err != nil {
				s.sent(idx, int64(m)-n)
				return false
			}
			if f.Kind == FaultTrickle {
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
			}
		}
	}
	return limit < length
}

// sent adds n to request idx's ResponseBytes.
func (s *Server) sent(idx int, n int64) {
	s.mu.Lock()
	s.requests[idx].ResponseBytes += n
	s.mu.Unlock()
}

// ifRangeHolds reports whether a Range may be honored: there is no
// If-Range, or it is exactly the current strong ETag. A date or another tag
// means the client's copy is stale, so the whole output is sent.
func ifRangeHolds(h http.Header, etag string) bool {
	v, ok := h["If-Range"]
	return !ok || (len(v) == 1 && strings.TrimSpace(v[0]) == etag)
}

// parseRange parses a single byte range ("bytes=N-", "bytes=N-M",
// "bytes=-S") against size. ok is false for a header the server ignores
// (malformed, other units, several ranges); satisfiable is false when the
// range lies past the end.
func parseRange(v string, size int64) (from, to int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(v), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	num := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= 0 && s[0] != '+'
	}
	if a == "" { // suffix: the last b bytes
		n, good := num(b)
		if !good {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		return max(size-n, 0), size, true, true
	}
	start, good := num(a)
	if !good {
		return 0, 0, false, false
	}
	end := size
	if b != "" {
		last, good := num(b)
		if !good || last < start {
			return 0, 0, false, false
		}
		end = min(last+1, size)
	}
	if start >= size {
		return 0, 0, true, false
	}
	return start, end, true, true
}
