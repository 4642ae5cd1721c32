package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/h1"
)

// newTransport returns a Transport in front of a fallback set as the
// relay sets its own.
func newTransport(tweak func(*http.Transport)) *h1.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableCompression = true
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 4
	if tweak != nil {
		tweak(t)
	}
	return h1.New(t)
}

func post(ctx context.Context, t *testing.T, rt http.RoundTripper, target string, body string, header http.Header) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return rt.RoundTrip(req)
}

// readAll reads and closes a response's body, as the relay does.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	resp.Body.Close()
	return string(b)
}

// counting is an httptest server that counts the connections it accepted.
func counting(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// capture accepts one connection on a raw listener and returns the request
// read from it, after answering 204.
func capture(t *testing.T, send func(target string)) *http.Request {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *http.Request, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		got <- req
	}()
	send("http://" + ln.Addr().String() + "/hook/a%20b?x=1&y=%2F")
	req := <-got
	if req == nil {
		t.Fatal("no request arrived")
	}
	if req.Host != ln.Addr().String() {
		t.Errorf("Host %q, want %q", req.Host, ln.Addr().String())
	}
	return req
}

// The request a receiver reads is the one net/http's own transport sends:
// the same line, Host, headers and body, whatever headers the request
// carries.
func TestRequestAsNetHTTPSendsIt(t *testing.T) {
	relays := http.Header{
		"User-Agent":      {"SMTM-Webhooks/1.0"},
		"Content-Type":    {"application/json"},
		"X-Smtm-Delivery": {"3f1c2a9e-0000-4000-8000-000000000001"},
	}
	for name, c := range map[string]struct {
		header http.Header
		body   string
	}{
		"the relay's":            {relays, `{"event":"task.assigned","data":{"id":7}}`},
		"no body":                {relays, ""},
		"no User-Agent":          {http.Header{"X-A": {"1"}}, "x"},
		"an empty User-Agent":    {http.Header{"User-Agent": {""}}, "x"},
		"two User-Agents":        {http.Header{"User-Agent": {"one", "two"}}, "x"},
		"values padded, several": {http.Header{"X-Spaced": {"  padded \t"}, "X-Two": {"a", "b"}}, "x"},
		"a name not canonical":   {http.Header{"x-lower": {"v"}}, "x"},
		"names net/http ignores": {http.Header{"Host": {"elsewhere"}, "Content-Length": {"99"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}, "x"},
	} {
		t.Run(name, func(t *testing.T) {
			send := func(rt http.RoundTripper) func(string) {
				return func(target string) {
					resp, err := post(context.Background(), t, rt, target, c.body, c.header)
					if err != nil {
						t.Fatalf("%T: %v", rt, err)
					}
					readAll(t, resp)
				}
			}
			fallback := http.DefaultTransport.(*http.Transport).Clone()
			fallback.DisableCompression = true
			want := capture(t, send(fallback))
			got := capture(t, send(newTransport(nil)))
			for _, f := range []struct{ name, got, want string }{
				{"method", got.Method, want.Method},
				{"request URI", got.RequestURI, want.RequestURI},
				{"proto", got.Proto, want.Proto},
				{"headers", fmt.Sprint(got.Header), fmt.Sprint(want.Header)},
				{"content length", fmt.Sprint(got.ContentLength), fmt.Sprint(want.ContentLength)},
				{"body", readAll(t, &http.Response{Body: got.Body}), readAll(t, &http.Response{Body: want.Body})},
			} {
				if f.got != f.want {
					t.Errorf("%s: %q, net/http sends %q", f.name, f.got, f.want)
				}
			}
			if got.RequestURI != "/hook/a%20b?x=1&y=%2F" {
				t.Errorf("request URI %q", got.RequestURI)
			}
		})
	}
}

// Requests one after the other share one connection; concurrent ones
// open more, and no more than MaxIdleConnsPerHost stay open.
func TestConnectionsKeptAndBounded(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	rt := newTransport(func(t *http.Transport) { t.MaxIdleConnsPerHost = 2 })
	for i := range 20 {
		resp, err := post(context.Background(), t, rt, srv.URL, fmt.Sprint(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != fmt.Sprint(i) {
			t.Fatalf("answer %q to request %d", got, i)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 requests in turn took %d connections, want 1", n)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range 50 {
				resp, err := post(context.Background(), t, rt, srv.URL, fmt.Sprint(i, j), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if got := readAll(t, resp); got != fmt.Sprint(i, j) {
					t.Errorf("answer %q, want %q", got, fmt.Sprint(i, j))
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	waitFor(t, "at most 2 connections left open", func() bool { return open.Load() <= 2 })
	rt.CloseIdleConnections()
	waitFor(t, "every connection closed", func() bool { return open.Load() == 0 })
}

// A kept connection the server closed while it was idle is not written
// on: the next request goes out on a new one and succeeds.
func TestServerClosedIdleConnection(t *testing.T) {
	// Each connection serves one request: a keep-alive answer, then the
	// connection ends anyway.
	var conns atomic.Int64
	target := rawAnswer(t, func(c net.Conn) {
		conns.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	rt := newTransport(nil)
	for i := range 5 {
		resp, err := post(context.Background(), t, rt, target, "x", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := readAll(t, resp); got != "ok" {
			t.Fatalf("request %d: answer %q", i, got)
		}
		// Let the close arrive before the next request.
		time.Sleep(20 * time.Millisecond)
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections for 5 requests, want 5", n)
	}
}

// An answer with "Connection: close", or an HTTP/1.0 one, does not leave
// its connection kept.
func TestConnectionCloseNotKept(t *testing.T) {
	srv, conns := counting(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	rt := newTransport(nil)
	for range 3 {
		resp, err := post(context.Background(), t, rt, srv.URL, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}

	// Nor does an HTTP/1.0 answer without keep-alive, even from a server
	// that leaves the connection open.
	var old atomic.Int32
	target := rawAnswer(t, func(c net.Conn) {
		old.Add(1)
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
		io.Copy(io.Discard, c) // until the client closes it
	})
	// A kept connection would carry the next request to a server that
	// no longer reads requests on it: the deadline ends that wait.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		resp, err := post(ctx, t, rt, target, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	if n := old.Load(); n != 3 {
		t.Errorf("HTTP/1.0: %d connections, want 3", n)
	}
}

// A body left unread is not read to its end when closed: an endless body
// costs its connection, not the caller's time.
func TestEndlessBodyClosedAtOnce(t *testing.T) {
	srv, conns := counting(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	rt := newTransport(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		resp, err := post(ctx, t, rt, srv.URL, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp.Body.Close()
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Close took %v", d)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (none kept)", n)
	}
}

// rawAnswer serves every connection with what answer writes after reading
// one request.
func rawAnswer(t *testing.T, answer func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				answer(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/"
}

// Headers past MaxResponseHeaderBytes are refused with an error that says
// so, 1xx answers counted with the final one; a few 1xx are skipped.
func TestResponseHeaders(t *testing.T) {
	rt := newTransport(func(t *http.Transport) { t.MaxResponseHeaderBytes = 4 << 10 })
	huge := rawAnswer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		for i := range 1000 {
			fmt.Fprintf(c, "X-Pad-%d: %s\r\n", i, strings.Repeat("a", 100))
		}
		io.WriteString(c, "\r\n")
	})
	if _, err := post(context.Background(), t, rt, huge, "x", nil); err == nil || !strings.Contains(err.Error(), "response headers exceeded 4096 bytes") {
		t.Errorf("huge headers: error %v", err)
	}
	manyInfo := rawAnswer(t, func(c net.Conn) {
		for range 3 {
			fmt.Fprintf(c, "HTTP/1.1 100 Continue\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", 1500))
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	if _, err := post(context.Background(), t, rt, manyInfo, "x", nil); err == nil || !strings.Contains(err.Error(), "response headers exceeded") {
		t.Errorf("1xx answers past the limit together: error %v", err)
	}
	info := rawAnswer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
	})
	resp, err := post(context.Background(), t, rt, info, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != http.StatusCreated || got != "done" {
		t.Errorf("after 1xx answers: %d %q", resp.StatusCode, got)
	}
	garbage := rawAnswer(t, func(c net.Conn) { io.WriteString(c, "garbage\r\n\r\n") })
	if _, err := post(context.Background(), t, rt, garbage, "x", nil); err == nil || !strings.Contains(err.Error(), "malformed HTTP response") {
		t.Errorf("garbage: error %v", err)
	}
	// An answer that is not HTTP is named by what it begins with, not only
	// by the part net/http could not parse.
	notHTTP := rawAnswer(t, func(c net.Conn) { io.WriteString(c, "NOT HTTP AT ALL\r\nmore\r\n\r\n") })
	if _, err := post(context.Background(), t, rt, notHTTP, "x", nil); err == nil ||
		err.Error() != `the answer is not HTTP (it begins "NOT HTTP AT ALL"): malformed HTTP status code "HTTP"` {
		t.Errorf("not HTTP: error %v", err)
	}
	closed := rawAnswer(t, func(net.Conn) {})
	if _, err := post(context.Background(), t, rt, closed, "x", nil); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("closed without an answer: error %v, want EOF", err)
	}
}

// A request past its deadline, or cancelled, ends at once with the
// context's error, while writing or reading.
func TestDeadlineAndCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hang := rawAnswer(t, func(net.Conn) { <-release })
	rt := newTransport(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := post(ctx, t, rt, hang, "x", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("past the deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the deadline ended the request after %v", d)
	}
	// A response trickling in when the deadline passes ends with the
	// deadline's error too, never with an i/o timeout of its own.
	trickle := rawAnswer(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Slow: ")
		for {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := post(ctx, t, rt, trickle, "x", nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("trickle %d: %v, want the deadline's error", i, err)
		}
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := post(ctx, t, rt, hang, "x", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelling ended the request after %v", d)
	}
	// A body still being read when the request is cancelled ends too,
	// and its connection is not kept.
	srv, conns := counting(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel = context.WithCancel(context.Background())
	resp, err := post(ctx, t, rt, srv.URL, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the body read on after its request was cancelled")
	}
	resp.Body.Close()
	resp, err = post(context.Background(), t, rt, srv.URL, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A header that net/http would refuse is refused, and nothing is sent.
func TestInvalidHeaders(t *testing.T) {
	var reached atomic.Int64
	srv, conns := counting(t, func(http.ResponseWriter, *http.Request) { reached.Add(1) })
	rt := newTransport(nil)
	for name, h := range map[string]http.Header{
		"value with a newline": {"X-Evil": {"a\r\nX-Injected: 1"}},
		"name with a space":    {"X Evil": {"a"}},
		"empty name":           {"": {"a"}},
		"a second User-Agent":  {"User-Agent": {"ok", "bad\r\nX-Injected: 1"}},
	} {
		body := &closeCounter{Reader: strings.NewReader("x")}
		req, err := http.NewRequest(http.MethodPost, srv.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header, req.ContentLength = h, 1
		if _, err := rt.RoundTrip(req); err == nil || !strings.HasPrefix(err.Error(), "h1: invalid header field") {
			t.Errorf("%s: error %v", name, err)
		}
		if body.closed != 1 {
			t.Errorf("%s: the request's body closed %d times, want 1", name, body.closed)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d requests reached the receiver", n)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections opened for requests that could not be sent", n)
	}
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error {
	c.closed++
	return nil
}

// An idle connection is closed after IdleConnTimeout.
func TestIdleTimeout(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	rt := newTransport(func(t *http.Transport) { t.IdleConnTimeout = 100 * time.Millisecond })
	resp, err := post(context.Background(), t, rt, srv.URL, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if open.Load() != 1 {
		t.Fatalf("%d open connections after one request", open.Load())
	}
	waitFor(t, "the idle connection closed", func() bool { return open.Load() == 0 })
}

// What the Transport does not send exactly as net/http would goes to the
// fallback: https (here over HTTP/2), proxied requests, a body of unknown
// length.
func TestFallback(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%v %s", r.TransferEncoding, b)
	}))
	defer echo.Close()
	// A body with ContentLength 0 is one of unknown length to net/http,
	// which sends it chunked.
	req, err := http.NewRequest(http.MethodPost, echo.URL, io.NopCloser(strings.NewReader("unknown length")))
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := newTransport(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, unknown); got != "[chunked] unknown length" {
		t.Errorf("a body of unknown length arrived as %q", got)
	}

	tls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	}))
	tls.EnableHTTP2 = true
	tls.StartTLS()
	defer tls.Close()
	rt := newTransport(func(t *http.Transport) {
		t.TLSClientConfig = tls.Client().Transport.(*http.Transport).TLSClientConfig
		t.ForceAttemptHTTP2 = true
	})
	resp, err := post(context.Background(), t, rt, tls.URL, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "HTTP/2.0" {
		t.Errorf("https went over %s, want HTTP/2.0 from the fallback", got)
	}

	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		fmt.Fprint(w, "via proxy")
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	rt = newTransport(func(t *http.Transport) { t.Proxy = http.ProxyURL(pu) })
	resp, err = post(context.Background(), t, rt, "http://receiver.example/hook", "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "via proxy" || proxied.Load() != 1 {
		t.Errorf("proxied request: %q, %d at the proxy", got, proxied.Load())
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
