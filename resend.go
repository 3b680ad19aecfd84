package safegen

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// Every request put on the wire is an attempt: counted in Meta.Attempts,
// reported to the attempt hook and the Observer. net/http would otherwise
// send some requests again on its own, unseen: when a reused keep-alive
// connection turns out dead after the request was written, its Transport
// re-sends on a new connection a request it deems replayable: a GET, HEAD,
// OPTIONS or TRACE, or any request carrying an Idempotency-Key header, that
// has no body or a GetBody to rewind it with.
//
//   - API calls (send) reach net/http always with a body (empty for a GET;
//     net/http sends it as no body) and never with GetBody (onWire), so
//     net/http never re-sends one: the failure comes back to the retry
//     loop, which counts it, numbers the next attempt, gives it its own
//     trace context, backs off, spends the retry budget and stops at
//     WithMaxRetries, as for any transport failure. WithMaxRetries(0) means
//     one send.
//   - A download's GET goes out as a plain bodiless GET (to a CDN, often),
//     so net/http may re-send it. Those re-sends are counted instead
//     (countResends): a second connection taken after the request was
//     written is one more attempt, reported as the first one failing. The
//     re-send carries the first one's headers (its attempt number and
//     trace context): it was built before. It is harmless: a range request
//     for the same bytes.

// errResent is the cause of an attempt net/http sent again on its own.
var errResent = errors.New("safegen: the connection closed after the request was sent; net/http sent it again on a new connection")

// onWire returns the request one attempt of an API call sends: req on
// ctx, with the attempt's header map h (req's own when nil), with a body
// and without GetBody, so that net/http cannot send it again on its own.
func onWire(req *http.Request, ctx context.Context, h http.Header) *http.Request {
	r := req.WithContext(ctx)
	if h != nil {
		r.Header = h
	}
	r.GetBody = nil
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = emptyBody{}
	}
	return r
}

// emptyBody is a body without bytes that net/http, unlike http.NoBody,
// counts as a body: a request holding it and no GetBody is never re-sent.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

// resender is told of a request net/http sent again on its own.
type resender interface{ resent() }

// countResends returns ctx with a trace that tells r when net/http sends
// req again, for a request without a body; ctx itself otherwise (net/http
// never re-sends a request with a body and no GetBody).
func countResends(ctx context.Context, req *http.Request, r resender) context.Context {
	if req.Body != nil && req.Body != http.NoBody {
		return ctx
	}
	t := &resendTrace{r: r}
	t.trace.GotConn = t.gotConn
	t.trace.WroteRequest = t.wroteRequest
	return httptrace.WithClientTrace(ctx, &t.trace)
}

// resendTrace follows one attempt's connections.
type resendTrace struct {
	r     resender
	trace httptrace.ClientTrace
	conns int         // connections taken; on the sending goroutine
	wrote atomic.Bool // the request went out on the last one (set by net/http's writer)
}

func (t *resendTrace) gotConn(httptrace.GotConnInfo) {
	if t.conns > 0 && t.wrote.Swap(false) {
		t.r.resent()
	}
	t.conns++
}

func (t *resendTrace) wroteRequest(i httptrace.WroteRequestInfo) {
	if i.Err == nil {
		t.wrote.Store(true)
	}
}
