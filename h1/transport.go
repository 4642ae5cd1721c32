// Package h1 sends HTTP/1.1 requests on the caller's goroutine.
//
// net/http's Transport gives every connection two goroutines of its own, a
// writer and a reader: a request is handed to the writer, which formats it
// and writes it, and the response is handed back by the reader. For a
// webhook POST on loopback or a fast network those handoffs and the
// formatting are a large part of the time from the attempt to the
// receiver's first byte (docs/PERFORMANCE.md, "A request written by the
// goroutine that makes it"). A Transport writes the whole request (line,
// headers, body) with one write from the goroutine that calls RoundTrip
// and reads the response there with net/http's own parser
// (http.ReadResponse), on connections it keeps alive between requests.
// With no goroutine reading a kept connection while it is idle, it is
// looked at before it is used again (on Linux, without waiting): one the
// server closed, or sent something unasked on, is closed and another
// taken, as net/http's reader would have found it closed.
//
// It takes only what it can send exactly as net/http would: POSTs with a
// known length, over plain TCP, with no proxy. Everything else (https,
// which may negotiate HTTP/2, proxies, other methods, bodies of unknown
// length) goes to the fallback *http.Transport, whose settings the
// Transport follows for its own connections too: DialContext,
// MaxIdleConns, MaxIdleConnsPerHost, IdleConnTimeout,
// MaxResponseHeaderBytes and Proxy.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Transport is an http.RoundTripper; see the package comment. Its zero
// value is not usable: make one with New.
type Transport struct {
	fallback *http.Transport
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)

	maxIdle, maxIdlePerHost int
	idleTimeout             time.Duration
	maxHeaderBytes          int64

	mu        sync.Mutex
	idle      map[string][]*conn // by address, most recently used last
	idleCount int
}

// New returns a Transport in front of fallback, which must not be nil and
// whose settings must not change afterwards.
func New(fallback *http.Transport) *Transport {
	t := &Transport{
		fallback:       fallback,
		dial:           fallback.DialContext,
		maxIdle:        fallback.MaxIdleConns,
		maxIdlePerHost: fallback.MaxIdleConnsPerHost,
		idleTimeout:    fallback.IdleConnTimeout,
		maxHeaderBytes: fallback.MaxResponseHeaderBytes,
	}
	if t.dial == nil {
		var d net.Dialer
		t.dial = d.DialContext
	}
	if t.maxIdlePerHost <= 0 {
		t.maxIdlePerHost = http.DefaultMaxIdleConnsPerHost
	}
	if t.maxHeaderBytes <= 0 {
		t.maxHeaderBytes = 1 << 20 // net/http's default
	}
	return t
}

// Fallback is the transport for the requests the Transport does not take.
func (t *Transport) Fallback() *http.Transport { return t.fallback }

// CloseIdleConnections closes the idle connections of both transports.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.idleCount = nil, 0
	for _, cs := range idle {
		for _, c := range cs {
			c.idle = false
			if c.timer != nil {
				c.timer.Stop()
			}
		}
	}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.close()
		}
	}
	t.fallback.CloseIdleConnections()
}

// RoundTrip sends req and returns its response, as http.RoundTripper
// says.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	addr, ok := t.takes(req)
	if !ok {
		return t.fallback.RoundTrip(req)
	}
	// roundTrip has closed req's body, as a RoundTripper must, by the
	// time it returns.
	resp, err := t.roundTrip(req, addr)
	if err != nil {
		if cerr := req.Context().Err(); cerr != nil {
			// As net/http: a request cancelled or past its deadline
			// reports that, not what the connection saw of it.
			return nil, cerr
		}
		return nil, err
	}
	return resp, nil
}

// takes reports whether the Transport sends req itself, and the address it
// dials for it.
func (t *Transport) takes(req *http.Request) (addr string, ok bool) {
	u := req.URL
	if req.Method != http.MethodPost || u == nil || u.Scheme != "http" || u.Host == "" ||
		req.ContentLength < 0 || (req.ContentLength > 0 && req.Body == nil) ||
		(req.ContentLength == 0 && req.Body != nil && req.Body != http.NoBody) ||
		req.Close || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 ||
		(req.Host != "" && req.Host != u.Host) || !ascii(u.Host) || strings.Contains(u.Host, "%") ||
		req.Header["Connection"] != nil || req.Header["Expect"] != nil ||
		!t.fallback.DisableCompression || t.fallback.DisableKeepAlives {
		// net/http would write these differently (a body of length 0
		// and a Body as one of unknown length, chunked; a Host without its
		// IPv6 zone, in punycode; an Accept-Encoding it decodes), act on
		// them (Connection, Expect) or not keep the connection.
		return "", false
	}
	if t.fallback.Proxy != nil {
		if p, err := t.fallback.Proxy(req); err != nil || p != nil {
			return "", false
		}
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port), true
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// errHeaderTooLarge is returned when a response's status line and headers,
// 1xx responses included, exceed MaxResponseHeaderBytes. Its text names the
// limit as net/http's does.
type errHeaderTooLarge int64

func (e errHeaderTooLarge) Error() string {
	return fmt.Sprintf("h1: server response headers exceeded %d bytes; aborted", int64(e))
}

// maxInformational is how many 1xx responses are skipped before a final
// one, as net/http.
const maxInformational = 5

func (t *Transport) roundTrip(req *http.Request, addr string) (*http.Response, error) {
	buf := requestBuffers.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxKeptBuffer {
			requestBuffers.Put(buf)
		}
	}()
	// The request is formatted before a connection is taken: one that
	// cannot be sent opens none.
	b, err := appendRequest((*buf)[:0], req)
	*buf = b
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	c := t.get(addr)
	if c == nil {
		nc, err := t.dial(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c = newConn(nc)
	}
	resp, err := t.exchange(ctx, c, b, req, addr)
	if err != nil {
		c.close()
		return nil, err
	}
	return resp, nil
}

// requestBuffers hold requests while they are formatted and written.
var requestBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxKeptBuffer bounds the buffers kept in requestBuffers.
const maxKeptBuffer = 64 << 10

// exchange writes the formatted request b on c and reads the response's
// header. On success the response's body owns c.
func (t *Transport) exchange(ctx context.Context, c *conn, b []byte, req *http.Request, addr string) (*http.Response, error) {
	// The context's end, its deadline or a cancellation, ends whatever
	// read or write is under way. The connection has no deadline of its
	// own: one at the context's deadline could expire before the context
	// does and leave the request failed with an i/o timeout its caller
	// cannot tell from the endpoint's.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	if _, err := c.nc.Write(b); err != nil {
		stop()
		return nil, err
	}
	c.limit, c.headN = t.maxHeaderBytes, 0
	var resp *http.Response
	var err error
	for i := range maxInformational + 1 {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil && i == 0 && strings.HasPrefix(err.Error(), "malformed HTTP ") {
			// net/http names the part it could not parse; the admin
			// reading the history wants what the endpoint sent.
			err = fmt.Errorf("the answer is not HTTP (it begins %q): %w", firstLine(c.head[:c.headN]), err)
		}
		if err != nil || resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// A 1xx answer has no body; the final one follows.
		resp = nil
	}
	c.limit = -1
	if err == nil && resp == nil {
		err = errors.New("h1: too many 1xx informational responses")
	}
	if err != nil {
		stop()
		if c.over {
			return nil, errHeaderTooLarge(t.maxHeaderBytes)
		}
		return nil, err
	}
	keep := !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols
	resp.Body = &body{rc: resp.Body, t: t, c: c, addr: addr, stop: stop, keep: keep, eof: resp.Body == http.NoBody}
	return resp, nil
}

// aLongTimeAgo is a deadline that has passed: it ends a blocked read or
// write at once.
var aLongTimeAgo = time.Unix(1, 0)

// appendRequest appends req's line, headers and body to b, as net/http
// writes them, and closes req's body. Header fields net/http would refuse
// are refused.
func appendRequest(b []byte, req *http.Request) ([]byte, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	b = append(b, "POST "...)
	b = append(b, req.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, strings.TrimSuffix(req.URL.Host, ":")...)
	b = append(b, "\r\nUser-Agent: "...)
	// net/http sends the first User-Agent, none when it is empty, and its
	// own when there is none.
	if ua, ok := req.Header["User-Agent"]; !ok {
		b = append(b, "Go-http-client/1.1\r\n"...)
	} else if len(ua) > 0 && ua[0] != "" {
		b = append(b, textproto.TrimString(ua[0])...)
		b = append(b, "\r\n"...)
	} else {
		b = b[:len(b)-len("User-Agent: ")]
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return b, fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return b, fmt.Errorf("h1: invalid header field value for %q", k)
			}
		}
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			// Written from the request's own fields, or not at all, as
			// by net/http.
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, textproto.TrimString(v)...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, req.ContentLength, 10)
	b = append(b, "\r\n\r\n"...)
	if req.ContentLength > 0 {
		n := len(b)
		b = append(b, make([]byte, req.ContentLength)...)
		if _, err := io.ReadFull(req.Body, b[n:]); err != nil {
			return b, fmt.Errorf("h1: reading the request body: %w", err)
		}
	}
	return b, nil
}

// get returns an idle connection to addr that is still open, or nil.
func (t *Transport) get(addr string) *conn {
	for {
		t.mu.Lock()
		cs := t.idle[addr]
		if len(cs) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		t.idle[addr] = cs[:len(cs)-1]
		t.idleCount--
		c.idle = false
		if c.timer != nil {
			c.timer.Stop()
		}
		t.mu.Unlock()
		if c.br.Buffered() == 0 && !closedByPeer(c.nc) {
			return c
		}
		// The server closed it, or sent something unasked, while it was
		// idle.
		c.close()
	}
}

// put keeps c for the next request to addr, or closes it when the limits
// say so.
func (t *Transport) put(addr string, c *conn) {
	t.mu.Lock()
	if len(t.idle[addr]) >= t.maxIdlePerHost || (t.maxIdle > 0 && t.idleCount >= t.maxIdle) {
		t.mu.Unlock()
		c.close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	t.idle[addr] = append(t.idle[addr], c)
	t.idleCount++
	c.idle = true
	if t.idleTimeout > 0 {
		if c.timer == nil {
			c.timer = time.AfterFunc(t.idleTimeout, func() { t.expire(addr, c) })
		} else {
			c.timer.Reset(t.idleTimeout)
		}
	}
	t.mu.Unlock()
}

// expire closes c if it is still idle: it was not used for IdleConnTimeout.
func (t *Transport) expire(addr string, c *conn) {
	t.mu.Lock()
	if !c.idle {
		t.mu.Unlock()
		return
	}
	cs := t.idle[addr]
	for i, x := range cs {
		if x == c {
			t.idle[addr] = append(cs[:i], cs[i+1:]...)
			t.idleCount--
			break
		}
	}
	if len(t.idle[addr]) == 0 {
		delete(t.idle, addr)
	}
	c.idle = false
	t.mu.Unlock()
	c.close()
}

// conn is one connection and what is kept with it. It is used by one
// request at a time.
type conn struct {
	nc net.Conn
	br *bufio.Reader
	// limit is how many more bytes may be read while a response's header
	// is read; -1 when not reading one. over is set when it ran out.
	limit int64
	over  bool
	// head holds the first bytes read of a response's header, headN of
	// them: what an error names when the answer is not HTTP.
	head  [64]byte
	headN int
	// idle and timer are guarded by the Transport's mu.
	idle  bool
	timer *time.Timer
}

func newConn(nc net.Conn) *conn {
	c := &conn{nc: nc, limit: -1}
	c.br = bufio.NewReaderSize(limitedReader{c}, 4<<10)
	return c
}

func (c *conn) close() { c.nc.Close() }

// limitedReader reads c's connection within c's header limit.
type limitedReader struct{ c *conn }

func (r limitedReader) Read(p []byte) (int, error) {
	c := r.c
	if c.limit < 0 {
		return c.nc.Read(p)
	}
	if c.limit == 0 {
		c.over = true
		return 0, errHeaderTooLarge(0)
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	if c.headN < len(c.head) {
		c.headN += copy(c.head[c.headN:], p[:n])
	}
	return n, err
}

// firstLine returns b up to its first line end.
func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// body is a response's body: it gives the connection back when the body
// was read to its end and closed, and closes it otherwise. Unlike
// net/http's, it is read and closed by one goroutine at a time; the
// request's context, not a concurrent Close, is what ends a read early.
type body struct {
	rc   io.ReadCloser
	t    *Transport
	c    *conn
	addr string
	stop func() bool
	keep bool
	eof  bool
	done bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("h1: read on a closed response body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// stop reports false when the request's context ended and its
	// deadline was moved to the past: the connection is no longer usable.
	usable := b.stop()
	if !b.eof {
		// Close the connection first: net/http's body would otherwise
		// read the rest, however long, to find its end.
		b.c.close()
		b.rc.Close()
		return nil
	}
	if err := b.rc.Close(); err != nil || !usable || !b.keep {
		b.c.close()
		return nil
	}
	b.t.put(b.addr, b.c)
	return nil
}
