package safegentest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// FaultKind names a failure the server can inject.
type FaultKind string

// The faults the server can inject.
const (
	// FaultNone means no fault applied.
	FaultNone FaultKind = ""
	// FaultStatus answers Fault.Status (500, 502, 503, 504) before doing any
	// work: with an nginx-like HTML page if Fault.HTML, an empty body if
	// Fault.EmptyBody, else the JSON error body.
	FaultStatus FaultKind = "status"
	// FaultRateLimit answers 429 (code Fault.Code, default
	// rate_limit_exceeded) with Retry-After set to Fault.RetryAfter verbatim
	// (default "0") and RateLimit-* headers, before doing any work.
	FaultRateLimit FaultKind = "rate_limit"
	// FaultReset closes the connection (with an RST where possible) before
	// processing: nothing is created.
	FaultReset FaultKind = "reset"
	// FaultDropAfterCommit processes the request fully (key stored, charge
	// made), then closes the connection without writing the response.
	FaultDropAfterCommit FaultKind = "drop_after_commit"
	// FaultLatency waits Fault.Latency (real time, ending early if the
	// request is cancelled or the server closes) and then processes normally.
	FaultLatency FaultKind = "latency"

	// The faults below apply to output downloads (GET of an output URL)
	// only: queued with InjectFaults, they wait for the next download and
	// leave API requests alone.

	// FaultCut answers the download normally, with its full Content-Length,
	// but closes the connection after Fault.CutAfter bytes of the body
	// (mid-body when CutAfter is 0 or not below the body's length).
	FaultCut FaultKind = "cut"
	// FaultTrickle sends the body in pieces of Fault.ChunkBytes (default
	// 1 KiB), waiting Fault.Latency (real time) before each one; it stops
	// when the client goes away. A long Latency makes a stalled transfer.
	FaultTrickle FaultKind = "trickle"
	// FaultCorrupt sends the body with one byte flipped, at offset
	// Fault.CutAfter of the body (its middle when 0 or out of range), so
	// the size is right and the SHA-256 is not. Headers (ETag included)
	// are those of the true bytes.
	FaultCorrupt FaultKind = "corrupt"
	// FaultIgnoreRange answers 200 with the whole body even when the
	// request asks for a range, as a proxy without range support does.
	FaultIgnoreRange FaultKind = "ignore_range"
)

// Fault is one failure to inject. Method and Path filter which requests it
// applies to (exact path, without query); empty matches any.
type Fault struct {
	Kind         FaultKind
	Method, Path string
	Status       int
	HTML         bool
	EmptyBody    bool
	RetryAfter   string
	Code         string
	Latency      time.Duration
	// CutAfter is the number of body bytes a FaultCut sends, or the body
	// offset of the byte a FaultCorrupt flips.
	CutAfter int64
	// ChunkBytes is the size of the pieces a FaultTrickle sends.
	ChunkBytes int

	// at, when above 0, places a random cut as a fraction of the body.
	at float64
}

// FaultRates are per-request probabilities of each fault. The first group
// applies to billable POSTs only, the Download group to output downloads
// only; within each group the sum should not exceed 1. Both draw from the
// same seeded generator.
type FaultRates struct {
	Status500       float64
	Status502HTML   float64
	Status503       float64
	RateLimit429    float64
	Reset           float64
	DropAfterCommit float64
	Latency         float64
	RetryAfter      string        // Retry-After of random 429s; default "0"
	LatencyDur      time.Duration // wait of random latency faults

	// DownloadCut cuts a download at a random point of its body.
	DownloadCut float64
	// DownloadReset resets the connection before the download answers.
	DownloadReset float64
	// Download503 answers a download 503 service_unavailable.
	Download503 float64
	// DownloadTrickle sends a download in 1 KiB pieces, TrickleDelay apart.
	DownloadTrickle float64
	// TrickleDelay is the real-time wait between the pieces of a random
	// trickle; default 1 ms.
	TrickleDelay time.Duration
}

// downloadOnly reports whether the fault only means something on an output
// download; queued, it waits for one instead of being spent on an API call.
func (f Fault) downloadOnly() bool {
	switch f.Kind {
	case FaultCut, FaultTrickle, FaultCorrupt, FaultIgnoreRange:
		return true
	}
	return false
}

func (f Fault) matches(method, path string) bool {
	return (f.Method == "" || f.Method == method) && (f.Path == "" || f.Path == path)
}

// requestClass says which random faults a request can draw.
type requestClass int

const (
	classOther    requestClass = iota // no random faults
	classBillable                     // the API group of FaultRates
	classDownload                     // the Download group of FaultRates
)

// chance is one random fault and its probability.
type chance struct {
	p float64
	f Fault
}

// pickFault returns the fault for this request: the first matching queued
// fault, consumed, else a random one drawn for the request's class. Called
// with s.mu held.
func (s *Server) pickFault(method, path string, class requestClass) Fault {
	for i, f := range s.faults {
		if f.downloadOnly() && class != classDownload {
			continue // waits for the download it is meant for
		}
		if f.matches(method, path) {
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			return f
		}
	}
	if class == classOther || s.rng == nil {
		return Fault{}
	}
	r := s.cfg.faultRates
	x := s.rng.Float64()
	if class == classDownload {
		delay := r.TrickleDelay
		if delay <= 0 {
			delay = time.Millisecond
		}
		// The cut point is drawn now, as a fraction of the body, which is
		// only known later.
		at := s.rng.Float64()
		return draw(x, []chance{
			{r.DownloadCut, Fault{Kind: FaultCut, at: at}},
			{r.DownloadReset, Fault{Kind: FaultReset}},
			{r.Download503, Fault{Kind: FaultStatus, Status: http.StatusServiceUnavailable}},
			{r.DownloadTrickle, Fault{Kind: FaultTrickle, Latency: delay}},
		})
	}
	ra := r.RetryAfter
	if ra == "" {
		ra = "0"
	}
	return draw(x, []chance{
		{r.Status500, Fault{Kind: FaultStatus, Status: http.StatusInternalServerError}},
		{r.Status502HTML, Fault{Kind: FaultStatus, Status: http.StatusBadGateway, HTML: true}},
		{r.Status503, Fault{Kind: FaultStatus, Status: http.StatusServiceUnavailable}},
		{r.RateLimit429, Fault{Kind: FaultRateLimit, RetryAfter: ra}},
		{r.Reset, Fault{Kind: FaultReset}},
		{r.DropAfterCommit, Fault{Kind: FaultDropAfterCommit}},
		{r.Latency, Fault{Kind: FaultLatency, Latency: r.LatencyDur}},
	})
}

// draw returns the fault whose slice of [0, 1) holds x, or no fault.
func draw(x float64, cs []chance) Fault {
	for _, c := range cs {
		if x < c.p {
			return c.f
		}
		x -= c.p
	}
	return Fault{}
}

// InjectFaults queues faults. Each is consumed, in order, by the next request
// it matches.
func (s *Server) InjectFaults(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// statusFaultResponse is what a proxy or a sick server answers.
func statusFaultResponse(f Fault) *response {
	st := f.Status
	if st == 0 {
		st = http.StatusInternalServerError
	}
	switch {
	case f.EmptyBody:
		return &response{status: st, header: http.Header{}}
	case f.HTML:
		text := fmt.Sprintf("%d %s", st, http.StatusText(st))
		body := "<html>\r\n<head><title>" + text + "</title></head>\r\n<body>\r\n<center><h1>" +
			text + "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
		h := http.Header{}
		h.Set("Content-Type", "text/html")
		h.Set("Server", "nginx")
		return &response{status: st, header: h, body: []byte(body)}
	}
	code := f.Code
	if code == "" {
		switch st {
		case http.StatusBadGateway:
			code = "bad_gateway"
		case http.StatusServiceUnavailable:
			code = "service_unavailable"
		case http.StatusGatewayTimeout:
			code = "gateway_timeout"
		default:
			code = "internal_error"
		}
	}
	return errorResponse(st, code, "injected fault: "+http.StatusText(st))
}

// rateLimitFaultResponse is an injected 429.
func (s *Server) rateLimitFaultResponse(f Fault) *response {
	code := f.Code
	if code == "" {
		code = "rate_limit_exceeded"
	}
	resp := errorResponse(http.StatusTooManyRequests, code, "injected fault: too many requests")
	ra := f.RetryAfter
	if ra == "" {
		ra = "0"
	}
	reset := 1
	if n, err := strconv.Atoi(ra); err == nil && n >= 0 {
		reset = n
	}
	limit := s.cfg.perMinute
	if limit == 0 {
		limit = 120
	}
	resp.header.Set("Retry-After", ra)
	s.setRateHeaders(resp.header, limit, 0, reset)
	return resp
}

// hijackClose takes the connection away from net/http and closes it,
// with SO_LINGER 0 (an RST) when rst is set.
func hijackClose(w http.ResponseWriter, rst bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok && rst {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// sleep waits d in real time, ending early when ctx or the server is done.
func (s *Server) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.stop.Done():
	}
}
