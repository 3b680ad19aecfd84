package safegen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// DownloadResult describes an output that Download verified and moved into
// place.
type DownloadResult struct {
	// Path is where the output now is.
	Path string
	// Size is the output's length in bytes.
	Size int64
	// SHA256 is the hex SHA-256 of the bytes at Path.
	SHA256 string
	// ContentType is the media type the server gave, if any.
	ContentType string
	// Fetched is how many body bytes this call transferred, bytes fetched
	// again after a restart included.
	Fetched int64
	// Reused is how many bytes were already on disk when the call started
	// (a partial download left by an earlier call or process, or a
	// complete file already at Path) and were kept.
	Reused int64
	// Attempts is how many requests this call made to the output URL.
	Attempts int
	// URLRefreshes is how many times the signed URL had expired and a fresh
	// one was fetched with Generations.Get.
	URLRefreshes int
}

// DownloadError is a download that did not produce a verified file at its
// path. It wraps the cause (an *APIError, a transport error, a context
// error, ErrOutputCorrupt, ErrIdleTimeout, ErrRetryBudgetExhausted), so
// errors.Is and errors.As reach it. Unless the cause is ErrOutputCorrupt,
// the bytes received so far stay in the partial file, and the next Download
// to the same path resumes from them.
type DownloadError struct {
	// GenerationID and Path say what was being downloaded where.
	GenerationID, Path string
	// Reason says in a few words why the download stopped.
	Reason string
	// Attempts and Fetched count the requests and body bytes of this call.
	Attempts int
	Fetched  int64
	// Err is the cause.
	Err error

	stopped error // a sentinel beside the cause, such as ErrRetryBudgetExhausted
}

// Error returns one line; the output URL's signature is never in it.
func (e *DownloadError) Error() string {
	return fmt.Sprintf("safegen: download of %s to %s: %s: %v (attempts=%d, fetched=%d)",
		e.GenerationID, e.Path, e.Reason, e.Err, e.Attempts, e.Fetched)
}

// Unwrap returns the cause, and the sentinel saying why retries stopped
// early when there is one.
func (e *DownloadError) Unwrap() []error {
	if e.stopped != nil {
		return []error{e.Err, e.stopped}
	}
	return []error{e.Err}
}

// Download fetches a succeeded generation's output to path and verifies it.
//
// The bytes stream to path+".partial" (mode 0600), beside a small
// path+".partial.meta" naming what they are. A transfer that is cut resumes
// with "Range: bytes=N-" and "If-Range: <ETag>" from the bytes on disk, in
// this call or a later one (a partial left by a crashed process is reused
// when its record matches the generation). A server that answers the whole
// body instead is followed from zero; an expired signed URL (403 url_expired,
// or Output.ExpiresAt passed) is replaced by a fresh one from Generations.Get.
// When all bytes are in, their size and SHA-256 are checked against
// gen.Output (or the strong ETag when the generation carries no sha256);
// only a verified file is synced and renamed to path, and its directory
// synced. A mismatch is ErrOutputCorrupt: the partial is removed and
// nothing is written at path. A file already at path with the right size
// and SHA-256 is kept as it is, without a request.
//
// Failed attempts are retried under the Client's policy: WithMaxRetries
// bounds the retries since the last attempt that made progress (one that
// stored at least 64 KiB before it failed is resumed at once and restarts
// the count; WithMaxRetries(0) retries nothing), the
// waits are the same full-jitter backoff and Retry-After rule as every
// call, and they draw on the same retry budget. Each attempt is bounded by
// WithIdleTimeout (no byte for that long), never by WithAttemptTimeout, so
// a slow transfer that keeps moving is not cut. The context bounds the
// whole download and ends it promptly, keeping the partial.
//
// The request carries no credentials and none of the Client's headers: the
// URL is signed and may be on another host. It must be http(s); plain http
// follows WithInsecureHTTP's rule. Downloads do not count against
// WithRateLimit or WithMaxInFlight, which pace the API. WithProgress
// reports progress. Only one Download at a time may use a given path.
func (s *GenerationsService) Download(ctx context.Context, gen *Generation, path string, opts ...RequestOption) (*DownloadResult, error) {
	if ctx == nil {
		return nil, errors.New("safegen: nil context")
	}
	cs, err := s.c.callSettings(opts)
	if err != nil {
		return nil, err
	}
	d, err := s.newDownload(ctx, cs, gen, path, opts)
	if err != nil {
		return nil, err
	}
	ctx, ob := s.c.observeCall(ctx, CallInfo{Operation: OpDownload, Method: http.MethodGet, Path: d.st.path})
	d.st.ctx = ctx
	res, err := d.run(ctx)
	ob.finish(ResponseMeta{StatusCode: d.st.status, Attempts: d.res.Attempts}, err)
	return res, err
}

// downloadBuffer is the size of the reads and writes of a download, and
// downloadBuffers how many are in flight between the copy and the hash.
const (
	downloadBuffer  = 256 << 10
	downloadBuffers = 4
)

// writebackBytes is how often a download starts the disk's writeback.
const writebackBytes = 8 << 20

// progressBytes is how much an attempt must store to count as progress.
const progressBytes = 64 << 10

// maxRefreshes bounds the URL refreshes in a row without progress.
const maxRefreshes = 3

// errIdle is the cause an attempt's context is cancelled with when the
// idle timer fires.
var errIdle = errors.New("idle")

// download is one Download call's state.
type download struct {
	svc  *GenerationsService
	s    *settings
	opts []Option
	// st lends Download the request pipeline's retry machinery: its
	// backoff, budget, deadline check, attempt hook and log lines.
	st *callState
	hc *http.Client

	id, path, part, meta string
	url                  *url.URL
	expires              time.Time
	size                 int64  // -1 while unknown
	sha                  string // expected hex SHA-256; "" unknown
	etag                 string // the validator of the bytes in the partial
	contentType          string

	f         *os.File
	h         hash.Hash
	off       int64    // bytes in the partial, all hashed
	buf       []byte   // bufs[0], for reading files back
	bufs      [][]byte // the copy's buffers
	recorded  bool     // the meta file describes the partial
	recleaned bool     // restarted from zero once after a mismatch of reused bytes
	refreshed bool     // the URL was just refreshed and not tried yet
	res       DownloadResult
}

// newDownload validates the call's input.
func (s *GenerationsService) newDownload(ctx context.Context, cs *settings, gen *Generation, path string, opts []Option) (*download, error) {
	switch {
	case gen == nil:
		return nil, fmt.Errorf("%w: download: nil generation", ErrInvalidRequest)
	case gen.Status != StatusSucceeded:
		return nil, fmt.Errorf("%w: download: generation %s is %q, not succeeded", ErrInvalidRequest, clean(gen.ID, 100), clean(string(gen.Status), 30))
	case gen.Output == nil || gen.Output.URL == "":
		return nil, fmt.Errorf("%w: download: generation %s has no output URL", ErrInvalidRequest, clean(gen.ID, 100))
	case gen.Output.Size < 0:
		return nil, fmt.Errorf("%w: download: generation %s has a negative output size", ErrInvalidRequest, clean(gen.ID, 100))
	case path == "":
		return nil, fmt.Errorf("%w: download: empty path", ErrInvalidRequest)
	case cs.intentID != "" || cs.idempotencyKey != "":
		return nil, fmt.Errorf("%w: download: a download takes no idempotency key or intent id", ErrInvalidRequest)
	}
	sha := strings.ToLower(gen.Output.SHA256)
	if sha != "" && !isHexSHA256(sha) {
		return nil, fmt.Errorf("%w: download: generation %s: output sha256 is not 64 hex digits", ErrInvalidRequest, clean(gen.ID, 100))
	}
	u, err := outputURL(gen.Output.URL, cs.insecureHTTP)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{path, path + ".partial"} {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%w: download: %s is a directory", ErrInvalidRequest, p)
		}
	}
	d := &download{
		svc: s, s: cs, opts: opts, id: gen.ID, path: path, part: path + ".partial", meta: path + ".partial.meta",
		url: u, expires: gen.Output.ExpiresAt, size: -1, sha: sha, contentType: gen.Output.ContentType,
		h: sha256.New(),
	}
	for range downloadBuffers {
		d.bufs = append(d.bufs, make([]byte, downloadBuffer))
	}
	d.buf = d.bufs[0]
	if gen.Output.Size > 0 || sha != "" {
		d.size = gen.Output.Size // with a sha256, a size of 0 is an empty output
	}
	d.st = &callState{c: s.c, s: cs, ctx: ctx, op: OpDownload, method: http.MethodGet, path: redact(u)}
	d.hc = &http.Client{Transport: s.c.hc.Transport, CheckRedirect: downloadRedirect(cs.insecureHTTP)}
	d.res.Path = path
	return d, nil
}

// outputURL parses an output URL and applies the Client's rules: http(s)
// only, a host, no credentials, plain http only to loopback unless
// insecure.
func outputURL(raw string, insecure bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: download: unreadable output URL", ErrInvalidRequest)
	}
	if err := checkOutputURL(u, insecure); err != nil {
		return nil, err
	}
	return u, nil
}

func checkOutputURL(u *url.URL, insecure bool) error {
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%w: download: output URL scheme %q is not http(s)", ErrInvalidRequest, clean(u.Scheme, 20))
	case u.Host == "":
		return fmt.Errorf("%w: download: output URL has no host", ErrInvalidRequest)
	case u.User != nil:
		return fmt.Errorf("%w: download: output URL carries credentials", ErrInvalidRequest)
	case u.Scheme == "http" && !insecure && !isLoopback(u.Hostname()):
		return fmt.Errorf("%w: download: refusing plain http to %s; use https or WithInsecureHTTP", ErrInvalidRequest, clean(u.Host, 100))
	}
	return nil
}

// downloadRedirect follows at most five redirects, to http(s) URLs under
// the same rules as the output URL. The request carries no credentials, so
// another host is fine.
func downloadRedirect(insecure bool) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("safegen: stopped after 5 redirects")
		}
		return checkOutputURL(req.URL, insecure)
	}
}

// redact is the URL without its query (the signature) or fragment, for
// errors and logs.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// run drives the attempts, then verifies and moves the file into place.
func (d *download) run(ctx context.Context) (*DownloadResult, error) {
	if res, ok := d.alreadyThere(); ok {
		return res, nil
	}
	if err := d.open(); err != nil {
		return nil, d.fail("opening the partial file", err)
	}
	defer func() {
		if d.f != nil {
			d.f.Close()
		}
	}()
	d.progress()
	var n retryCounts
	for {
		if err := ctx.Err(); err != nil {
			return nil, d.fail("context done", err)
		}
		o := d.step(ctx)
		if o.done {
			if o.attempted {
				d.st.report(&AttemptInfo{Operation: OpDownload, Method: http.MethodGet, Path: d.st.path, Attempt: d.res.Attempts,
					StatusCode: o.status, Cause: "ok", Reason: "done"})
			}
			res, again, err := d.finish()
			if !again {
				return res, err
			}
			continue
		}
		if err := d.between(ctx, o, &n); err != nil {
			return nil, err
		}
	}
}

// step makes the next attempt, unless every byte is already on disk or
// the URL has expired by the Client's clock.
func (d *download) step(ctx context.Context) outcome {
	switch {
	case d.size >= 0 && d.off == d.size && d.recorded:
		return outcome{done: true}
	case !d.refreshed && !d.expires.IsZero() && !d.s.clock.Now().Before(d.expires):
		// Once refreshed, the URL is tried whatever our clock says: the
		// server's 403 is the authority.
		return outcome{expired: true, err: errors.New("output URL expired")}
	}
	d.refreshed = false
	o := d.attempt(ctx)
	o.attempted = true
	d.st.status = o.status
	return o
}

// retryCounts are the counters that bound a download's retries.
type retryCounts struct {
	failures  int // failed attempts since the last that made progress, that one included
	refreshes int // URL refreshes since the last progress
}

// between is what happens between two attempts: report the failed one,
// then stop, refresh the URL, go on at once, or wait the retry policy's
// wait. It returns the download's error when it stops.
func (d *download) between(ctx context.Context, o outcome, n *retryCounts) error {
	info := AttemptInfo{Operation: OpDownload, Method: http.MethodGet, Path: d.st.path, Attempt: d.res.Attempts, StatusCode: o.status,
		Code: o.code, Err: o.transport, Cause: o.cause(), RetryAfter: o.retryAfter}
	if err := ctx.Err(); err != nil {
		if o.attempted {
			info.Cause, info.Reason, info.Err = "canceled", "context done", err
			d.st.report(&info)
		}
		return d.fail("context done", err)
	}
	switch {
	case o.final:
		info.Reason = "not retryable"
		d.st.report(&info)
		if errors.Is(o.err, ErrOutputCorrupt) {
			d.discard()
		}
		return d.fail(o.reason, o.err)
	case o.expired:
		if n.refreshes++; n.refreshes > maxRefreshes {
			return d.fail("output URL still expired after "+strconv.Itoa(maxRefreshes)+" refreshes", o.err)
		}
		if o.status != 0 { // an attempt met the 403, rather than our clock
			info.Retry, info.Reason = true, "output URL expired: refreshing it"
			d.st.report(&info)
		}
		if err := d.refresh(ctx); err != nil {
			return d.fail("refreshing the expired output URL", err)
		}
		return nil
	}
	n.failures++
	if o.progressed {
		n.failures, n.refreshes, d.st.bo = 1, 0, nil
	}
	if n.failures > d.s.maxRetries {
		info.Reason = "retries exhausted"
		d.st.report(&info)
		return d.fail("retries exhausted", o.err)
	}
	if o.now || o.progressed {
		// A restart from zero, or a cut after real progress: go on at
		// once (after progress, with a fresh backoff).
		info.Retry, info.Reason = true, o.reason
		if o.progressed {
			info.Reason = "resuming after progress"
		}
		d.st.report(&info)
		return nil
	}
	d.st.retryAfter = o.retryAfter
	if o.retryAfter > d.s.maxRetryAfter {
		info.Reason = "Retry-After " + o.retryAfter.String() + " exceeds the bound " + d.s.maxRetryAfter.String()
		d.st.report(&info)
		return d.stop(info.Reason, o.err, ErrRetryAfterTooLong)
	}
	wait, reason, stop := d.st.planRetry(ctx, o.timeout)
	if stop != nil {
		info.Reason = reason
		d.st.report(&info)
		return d.stop(reason, o.err, stop)
	}
	info.Retry, info.Wait, info.Reason = true, wait, reason
	d.st.report(&info)
	if err := d.s.clock.Sleep(ctx, wait); err != nil {
		return d.fail("context done while waiting to retry", err)
	}
	return nil
}

// outcome is what one attempt came to.
type outcome struct {
	attempted  bool          // a request was made (not only our clock's verdict)
	done       bool          // every byte is on disk
	final      bool          // not worth another attempt
	expired    bool          // the URL expired: refresh it, then go on at once
	now        bool          // go on at once (a restart from zero)
	progressed bool          // the attempt stored at least progressBytes
	timeout    bool          // the attempt timed out (idle)
	status     int           // the HTTP status, 0 without one
	code       string        // the error code of a non-2xx answer
	retryAfter time.Duration // the server's Retry-After
	transport  error         // the transport error, if any
	reason     string
	err        error
}

func (o *outcome) cause() string {
	switch {
	case o.timeout:
		return "timeout"
	case o.transport != nil:
		return "transport"
	case o.status != 0:
		return strconv.Itoa(o.status)
	}
	return "local"
}

// attempt makes one request and stores what it brings.
func (d *download) attempt(ctx context.Context) outcome {
	d.res.Attempts++
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var idle *time.Timer
	if t := d.s.idleTimeout; t > 0 {
		// The idle bound runs on the real clock: it bounds real I/O.
		idle = time.AfterFunc(t, func() { cancel(errIdle) })
		defer idle.Stop()
	}
	req, err := http.NewRequestWithContext(actx, http.MethodGet, d.url.String(), nil)
	if err != nil {
		return outcome{final: true, reason: "building the request", err: err}
	}
	req.Header = http.Header{
		"User-Agent": {d.s.userAgent},
		"Accept":     {"*/*"},
		// No transparent gzip: ranges count the bytes as stored.
		"Accept-Encoding": {"identity"},
		AttemptHeader:     {strconv.Itoa(d.res.Attempts)},
	}
	d.st.attempts = d.res.Attempts
	octx, _ := d.st.attemptStart(actx, req.Header, nil, d.url)
	req = req.WithContext(countResends(octx, req, d))
	if d.off > 0 {
		if v := d.validator(); v != "" {
			req.Header["Range"] = []string{"bytes=" + strconv.FormatInt(d.off, 10) + "-"}
			req.Header["If-Range"] = []string{v}
		} else if err := d.reset(); err != nil {
			return outcome{final: true, reason: "truncating the partial file", err: err}
		}
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return d.broken(ctx, actx, err, 0)
	}
	defer resp.Body.Close()
	o := outcome{status: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusOK:
		if d.off > 0 {
			// The server sends everything (the bytes changed, or it ignores
			// ranges): start over from zero.
			if err := d.reset(); err != nil {
				return outcome{final: true, reason: "truncating the partial file", err: err}
			}
		}
		if resp.ContentLength >= 0 && d.size >= 0 && resp.ContentLength != d.size {
			return d.corrupt(fmt.Sprintf("the server sends %d bytes, the output has %d", resp.ContentLength, d.size))
		}
		if d.size < 0 && resp.ContentLength >= 0 {
			d.size = resp.ContentLength
		}
	case http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.off {
			if err := d.reset(); err != nil {
				return outcome{final: true, reason: "truncating the partial file", err: err}
			}
			o.now, o.reason, o.err = true, "restarting from zero", fmt.Errorf("206 with Content-Range %q for bytes %d-", clean(resp.Header.Get("Content-Range"), 60), start)
			return o
		}
		if total >= 0 && d.size >= 0 && total != d.size {
			return d.corrupt(fmt.Sprintf("the server's output has %d bytes, the generation says %d", total, d.size))
		}
		if d.size < 0 && total >= 0 {
			d.size = total
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if d.size >= 0 && d.off == d.size {
			o.done = true
			return o
		}
		o.now, o.reason, o.err = true, "restarting from zero", fmt.Errorf("416 for bytes %d-", d.off)
		if err := d.reset(); err != nil {
			return outcome{final: true, reason: "truncating the partial file", err: err}
		}
		return o
	default:
		return d.refused(resp, o)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		d.contentType = ct
	}
	if err := d.record(strongETag(resp.Header.Get("ETag"))); err != nil {
		return outcome{final: true, reason: "writing the partial file's record", err: err}
	}
	n, err := d.copy(resp.Body, idle)
	if err == nil && d.size >= 0 && d.off < d.size {
		err = io.ErrUnexpectedEOF
	}
	var we *writeError
	switch {
	case errors.As(err, &we):
		return outcome{final: true, reason: "writing the partial file", err: we.err}
	case errors.Is(err, errTooLong):
		return d.corrupt(fmt.Sprintf("the server sends more than the %d bytes of the output", d.size))
	case err != nil:
		return d.broken(ctx, actx, err, n)
	}
	o.done = true
	return o
}

// refused handles a non-2xx answer other than 416.
func (d *download) refused(resp *http.Response, o outcome) outcome {
	body := readErrorBody(resp)
	e := newAPIError(http.MethodGet, d.st.path, resp.StatusCode, resp.Header, body)
	e.Attempts = d.res.Attempts
	o.code, o.err = e.Code, e
	if resp.StatusCode == http.StatusForbidden && strings.EqualFold(e.Code, "url_expired") {
		o.expired = true
		return o
	}
	o.retryAfter, _ = retryAfter(resp.Header, resp.StatusCode, d.s.clock.Now())
	e.RetryAfter = o.retryAfter
	if !e.retryable() {
		o.final, o.reason = true, "refused"
		return o
	}
	o.reason = "server error"
	return o
}

// broken classifies a transport failure after n body bytes were stored.
func (d *download) broken(ctx, actx context.Context, err error, n int64) outcome {
	var ue *url.Error
	if errors.As(err, &ue) {
		// Its text would quote the signed URL, a credential.
		ue.URL = d.st.path
	}
	o := outcome{transport: err, err: err, progressed: n >= progressBytes, reason: "transport failure"}
	if errors.Is(context.Cause(actx), errIdle) && ctx.Err() == nil {
		o.timeout = true
		o.err = fmt.Errorf("%w: no byte for %v", ErrIdleTimeout, d.s.idleTimeout)
		o.transport = o.err
		return o
	}
	if errors.Is(err, ErrInvalidRequest) { // a redirect the rules refuse
		o.final, o.reason = true, "redirect refused"
		return o
	}
	if ok, perr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, nil, err); !ok && ctx.Err() == nil {
		if perr != nil {
			o.err = perr
		}
		o.final, o.reason = true, "transport failure, not retryable"
	}
	o.timeout = isTimeout(err)
	return o
}

// corrupt ends the download: the server describes or sends other bytes
// than the generation's output.
func (d *download) corrupt(why string) outcome {
	return outcome{final: true, reason: why, err: ErrOutputCorrupt}
}

// writeError is a failure to write the partial file (a full disk): final.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

var errTooLong = errors.New("body longer than the output")

// copy streams the body to the partial file and the hash. Reads and file
// writes run here; SHA-256, which costs about as much CPU as the copy
// itself, runs on a second goroutine a few buffers behind, so the two
// overlap. It returns only once every byte written is hashed. Every
// writebackBytes it starts the disk writing what it has (startWriteback).
func (d *download) copy(body io.Reader, idle *time.Timer) (int64, error) {
	free := make(chan []byte, len(d.bufs))
	hashing := make(chan []byte, len(d.bufs))
	for _, b := range d.bufs {
		free <- b
	}
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range hashing {
			d.h.Write(b)
			free <- b[:cap(b)]
		}
	}()
	defer func() {
		close(hashing)
		<-hashed
	}()
	var n int64
	for {
		buf := <-free
		m, rerr := body.Read(buf)
		if m > 0 {
			if idle != nil {
				idle.Reset(d.s.idleTimeout)
			}
			if d.size >= 0 && d.off+int64(m) > d.size {
				free <- buf
				return n, errTooLong
			}
			if _, err := d.f.WriteAt(buf[:m], d.off); err != nil {
				free <- buf
				return n, &writeError{err}
			}
			hashing <- buf[:m]
			if d.off/writebackBytes != (d.off+int64(m))/writebackBytes {
				start := (d.off / writebackBytes) * writebackBytes
				startWriteback(d.f, start, writebackBytes)
			}
			d.off += int64(m)
			n += int64(m)
			d.res.Fetched += int64(m)
			d.progress()
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func (d *download) progress() {
	if d.s.progress != nil {
		d.s.progress(d.off, d.size)
	}
}

// validator is the If-Range value that keeps the bytes on disk: the ETag
// recorded with them, else the quoted sha256 (the contract's ETag).
func (d *download) validator() string {
	if d.etag != "" {
		return d.etag
	}
	if d.sha != "" {
		return `"` + d.sha + `"`
	}
	return ""
}

// strongETag returns a strong entity tag, or "" for a weak or missing one
// (If-Range needs a strong one).
func strongETag(v string) string {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return ""
	}
	return v
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", -1).
func contentRange(v string) (start, total int64, ok bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(spec, "/")
	a, b, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, false
		}
		total = t
	}
	return start, total, true
}

// refresh replaces an expired URL with a fresh one from Generations.Get.
func (d *download) refresh(ctx context.Context) error {
	if d.id == "" {
		return errors.New("the generation has no id to fetch a fresh URL with")
	}
	g, err := d.svc.Get(ctx, d.id, d.opts...)
	if err != nil {
		return err
	}
	if g.Status != StatusSucceeded || g.Output == nil || g.Output.URL == "" {
		return fmt.Errorf("generation %s is %q and has no output URL", clean(g.ID, 100), clean(string(g.Status), 30))
	}
	u, err := outputURL(g.Output.URL, d.s.insecureHTTP)
	if err != nil {
		return err
	}
	sha := strings.ToLower(g.Output.SHA256)
	if (sha != "" && d.sha != "" && sha != d.sha) || (g.Output.Size > 0 && d.size >= 0 && g.Output.Size != d.size) {
		// Other bytes than the ones on disk: start over.
		if err := d.reset(); err != nil {
			return err
		}
		d.sha, d.size = sha, -1
		if g.Output.Size > 0 || sha != "" {
			d.size = g.Output.Size
		}
		d.recorded = false
	}
	d.url, d.expires, d.refreshed = u, g.Output.ExpiresAt, true
	d.st.path = redact(u)
	d.res.URLRefreshes++
	return nil
}

// partialRecord is the partial file's companion: what the bytes are, so a
// later call or process resumes only the same output.
type partialRecord struct {
	Version      int    `json:"v"`
	GenerationID string `json:"generation_id,omitempty"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256,omitempty"`
	ETag         string `json:"etag,omitempty"`
}

// open opens the partial file, keeping the bytes already in it when its
// record says they are this output's, and hashes them.
func (d *download) open() error {
	f, err := os.OpenFile(d.part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	d.f = f
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	n := fi.Size()
	rec, ok := d.readRecord()
	if n == 0 || !ok || (d.size >= 0 && n > d.size) {
		return d.reset()
	}
	d.etag = rec.ETag
	d.recorded = true
	if _, err := io.CopyBuffer(d.h, io.NewSectionReader(f, 0, n), d.buf); err != nil {
		return d.reset()
	}
	d.off, d.res.Reused = n, n
	return nil
}

// readRecord reads the partial's record; ok only if it describes this
// output and carries a validator to resume with.
func (d *download) readRecord() (partialRecord, bool) {
	var rec partialRecord
	b, err := os.ReadFile(d.meta)
	if err != nil || len(b) > 4096 || json.Unmarshal(b, &rec) != nil || rec.Version != 1 {
		return rec, false
	}
	switch {
	case rec.GenerationID != d.id:
		return rec, false
	case d.sha != "" && rec.SHA256 != d.sha && !(rec.SHA256 == "" && rec.ETag == `"`+d.sha+`"`):
		return rec, false
	case d.size >= 0 && rec.Size != d.size:
		return rec, false
	case rec.ETag == "" && d.sha == "":
		return rec, false
	}
	return rec, true
}

// record writes the partial's record before the first byte of a body is
// stored, or when the validator changes.
func (d *download) record(etag string) error {
	if d.recorded && etag == d.etag {
		return nil
	}
	if etag != "" {
		d.etag = etag
	}
	b, err := json.Marshal(partialRecord{Version: 1, GenerationID: d.id, Size: d.size, SHA256: d.sha, ETag: d.etag})
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.meta, b, 0o600); err != nil {
		return err
	}
	d.recorded = true
	return nil
}

// reset empties the partial: the next bytes start at zero.
func (d *download) reset() error {
	d.h.Reset()
	d.off, d.res.Reused, d.etag, d.recorded = 0, 0, "", false
	d.progress()
	return d.f.Truncate(0)
}

// expected is the SHA-256 the bytes must have: the generation's, else the
// strong ETag when it is a quoted SHA-256 (the contract's form).
func (d *download) expected() string {
	if d.sha != "" {
		return d.sha
	}
	if e := strings.Trim(d.etag, `"`); isHexSHA256(strings.ToLower(e)) {
		return strings.ToLower(e)
	}
	return ""
}

// finish verifies the bytes and moves them into place. again is true when
// the kept bytes were bad and the download restarts from zero.
func (d *download) finish() (res *DownloadResult, again bool, err error) {
	got := hex.EncodeToString(d.h.Sum(nil))
	if want := d.expected(); want != "" && got != want {
		if d.res.Reused > 0 && !d.recleaned {
			// The bytes kept from before may be what is wrong (a torn
			// write after a crash): fetch everything once more.
			d.recleaned = true
			if err := d.reset(); err != nil {
				return nil, false, d.fail("truncating the partial file", err)
			}
			return nil, true, nil
		}
		d.discard()
		return nil, false, d.fail(fmt.Sprintf("sha256 %s…, want %s…", got[:12], want[:12]), ErrOutputCorrupt)
	}
	if err := d.f.Sync(); err != nil {
		return nil, false, d.fail("syncing the partial file", err)
	}
	if err := d.f.Close(); err != nil {
		d.f = nil
		return nil, false, d.fail("closing the partial file", err)
	}
	d.f = nil
	if err := os.Rename(d.part, d.path); err != nil {
		return nil, false, d.fail("moving the file into place", err)
	}
	if err := syncDir(filepath.Dir(d.path)); err != nil {
		return nil, false, d.fail("syncing the directory", err)
	}
	_ = os.Remove(d.meta)
	d.res.Size, d.res.SHA256, d.res.ContentType = d.off, got, d.contentType
	refund := d.st.spent
	if d.res.Attempts <= 1 {
		refund = noRetryRefund
	}
	tokens, added := d.svc.c.budget.refund(refund)
	d.svc.c.budgetChanged(d.st.ctx, tokens, added)
	r := d.res
	return &r, false, nil
}

// alreadyThere reports a verified file already at path: same size and
// SHA-256 as the output. The partial, if any, is removed.
func (d *download) alreadyThere() (*DownloadResult, bool) {
	if d.sha == "" || d.size < 0 {
		return nil, false
	}
	if !fileHolds(d.path, d.size, d.sha, d.buf) {
		return nil, false
	}
	_ = os.Remove(d.part)
	_ = os.Remove(d.meta)
	r := d.res
	r.Size, r.SHA256, r.ContentType, r.Reused = d.size, d.sha, d.contentType, d.size
	if d.s.progress != nil {
		d.s.progress(d.size, d.size)
	}
	return &r, true
}

// fileHolds reports whether the regular file at path has exactly size bytes
// whose hex SHA-256 is sum. buf, if not nil, is the copy buffer.
func fileHolds(path string, size int64, sum string, buf []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false
	}
	h := sha256.New()
	_, err = io.CopyBuffer(h, f, buf)
	return err == nil && strings.EqualFold(hex.EncodeToString(h.Sum(nil)), sum)
}

// discard removes the partial and its record.
func (d *download) discard() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	_ = os.Remove(d.part)
	_ = os.Remove(d.meta)
}

func (d *download) fail(reason string, err error) error {
	return &DownloadError{GenerationID: d.id, Path: d.path, Reason: reason, Attempts: d.res.Attempts, Fetched: d.res.Fetched, Err: err}
}

func (d *download) stop(reason string, err, sentinel error) error {
	e := d.fail(reason, err).(*DownloadError)
	e.stopped = sentinel
	return e
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

// resent reports the attempt net/http gave up on, sending the request
// again on its own (see resend.go), and opens the one it sends in its place.
func (d *download) resent() {
	d.st.report(&AttemptInfo{Operation: OpDownload, Method: http.MethodGet, Path: d.st.path, Attempt: d.res.Attempts,
		Err: errResent, Retry: true, Cause: "transport", Reason: "sent again by net/http"})
	d.res.Attempts++
	d.st.attempts = d.res.Attempts
	d.st.attemptStart(d.st.ctx, nil, nil, d.url)
}
