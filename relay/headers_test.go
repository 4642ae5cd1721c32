package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/h1"
	"github.com/smartmaintenance/relay/store"
)

// hostile is a raw TCP receiver that answers every request with a status
// line and then whatever headers write sends. It is raw because an
// http.Server writes what a handler sets: only the bytes on the wire show
// what the relay's client holds. Its connections end with the test.
type hostile struct {
	ln    net.Listener
	URL   string
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newHostile(t *testing.T, write func(w *bufio.Writer) error) *hostile {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{ln: ln, URL: "http://" + ln.Addr().String() + "/hook"}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer c.Close()
				// Read the request's head, then answer.
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				w := bufio.NewWriterSize(c, 64<<10)
				if _, err := w.WriteString("HTTP/1.1 200 OK\r\n"); err != nil {
					return
				}
				if write(w) == nil {
					w.Flush()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

// hugeHeaders writes n bytes of header lines, each 1 KiB, from one buffer
// (the receiver itself allocates nothing per byte), then ends the head.
func hugeHeaders(n int) func(w *bufio.Writer) error {
	line := append([]byte("X-Pad: "), bytes.Repeat([]byte{'a'}, 1024-len("X-Pad: ")-2)...)
	line = append(line, "\r\n"...)
	return func(w *bufio.Writer) error {
		for sent := 0; sent < n; sent += len(line) {
			if _, err := w.Write(line); err != nil {
				return err
			}
		}
		_, err := w.WriteString("Content-Length: 0\r\n\r\n")
		return err
	}
}

// TestHugeResponseHeadersBounded: receivers answering with nearly 10 MB of
// headers (just under net/http's default limit, which would accept them)
// fail each attempt with a clear error after at most
// maxResponseHeaderBytes are read, and eight such attempts at once
// allocate a small fraction of what the headers would take. Without the
// bound each attempt holds all of them (and allocates more while parsing).
func TestHugeResponseHeadersBounded(t *testing.T) {
	const headerBytes = 10<<20 - 64<<10
	const concurrent = 8
	h := newHostile(t, hugeHeaders(headerBytes))
	s := NewSender(SenderOptions{Timeout: 20 * time.Second, Egress: loopback})
	defer s.Close()
	// Warm up the sender and the runtime, so the measure is the attempts'.
	s.Send(context.Background(), Message{URL: h.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body})

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	results := make([]Result, concurrent)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.Send(context.Background(), Message{URL: h.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body})
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc

	for i, r := range results {
		if r.StatusCode != 0 || r.Error != "response headers exceed 64 KiB; the relay reads no more" {
			t.Errorf("attempt %d: status %d, error %q; want no status and the header limit named", i, r.StatusCode, r.Error)
		}
	}
	// The bound is 64 KiB an attempt plus the client's buffers; the
	// unbounded client allocates more than the 80 MB of headers.
	const limit = 8 << 20
	t.Logf("%d attempts against %.1f MB of headers each allocated %.1f MB", concurrent, float64(headerBytes)/(1<<20), float64(allocated)/(1<<20))
	if allocated > limit {
		t.Errorf("%d attempts allocated %.1f MB, want under %d MB", concurrent, float64(allocated)/(1<<20), limit>>20)
	}
}

// TestHugeResponseHeadersRecorded: a delivery to such a receiver records
// the failed attempt with the reason, and is retried as any failure.
func TestHugeResponseHeadersRecorded(t *testing.T) {
	e := newEnv(t)
	h := newHostile(t, hugeHeaders(10<<20-64<<10))
	wh := e.webhook(h.URL, "", nil)
	id := e.delivery(wh, body)
	e.start(fast(Options{Schedule: Schedule{}}))
	d := e.waitStatus(id, store.StatusFailed, 20*time.Second)
	if d.LastError != "response headers exceed 64 KiB; the relay reads no more" {
		t.Errorf("last error %q, want the header limit named", d.LastError)
	}
	if as := e.attempts(id); len(as) != 1 || as[0].StatusCode != 0 || as[0].Error != d.LastError {
		t.Errorf("attempts %+v, want one recorded with the reason", as)
	}
}

// TestHeadersTrickleCutByTimeout: a receiver that sends its headers a few
// bytes at a time and never ends them is cut by the attempt's timeout, not
// by the gap between bytes.
func TestHeadersTrickleCutByTimeout(t *testing.T) {
	h := newHostile(t, func(w *bufio.Writer) error {
		if _, err := w.WriteString("X-Slow: "); err != nil {
			return err
		}
		for {
			if err := w.WriteByte('a'); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	const timeout = 700 * time.Millisecond
	s := NewSender(SenderOptions{Timeout: timeout, Egress: loopback})
	defer s.Close()
	start := time.Now()
	r := s.Send(context.Background(), Message{URL: h.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body})
	took := time.Since(start)
	if r.StatusCode != 0 || !strings.HasPrefix(r.Error, "timeout: no response within 700ms") {
		t.Errorf("status %d, error %q; want a timeout", r.StatusCode, r.Error)
	}
	// Generous for a loaded machine, and far below a trickle's lifetime.
	if took > timeout+5*time.Second {
		t.Errorf("the attempt took %v with a timeout of %v", took, timeout)
	}
}

// TestNormalHeadersUnaffected: a receiver with a usual amount of headers
// (several KiB) is delivered as before.
func TestNormalHeadersUnaffected(t *testing.T) {
	h := newHostile(t, hugeHeaders(16<<10))
	s := NewSender(SenderOptions{Timeout: 5 * time.Second, Egress: loopback})
	defer s.Close()
	r := s.Send(context.Background(), Message{URL: h.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body})
	if r.StatusCode != http.StatusOK || r.Error != "" {
		t.Errorf("status %d, error %q; want 200", r.StatusCode, r.Error)
	}
}

// TestHugeResponseHeadersHTTP2: over HTTP/2 (a TLS receiver that offers
// h2, which the relay's transport accepts) the same bound applies, through
// the MAX_HEADER_LIST_SIZE the transport derives from it: 1 MB of headers,
// under net/http's default, is refused. The HTTP/2 transport ends the
// connection with a protocol error when the headers go on well past the
// limit, and names the limit when they stop just past it.
func TestHugeResponseHeadersHTTP2(t *testing.T) {
	pad := strings.Repeat("a", 1000)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 1024 {
			w.Header().Set("X-Pad-"+strconv.Itoa(i), pad)
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := newClient(1, loopback)
	client.Transport.(*h1.Transport).Fallback().TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	s := sender{client: client, userAgent: "test", timeout: 10 * time.Second}
	out := s.send(context.Background(), &store.Claimed{ID: uuid.New(), EventType: "task.completed", Body: body, URL: srv.URL + "/hook"})
	if out.status != 0 || (out.err != errHeadersTooLarge && out.err != "connection error: PROTOCOL_ERROR") {
		t.Errorf("status %d, error %q; want the headers refused", out.status, out.err)
	}
	// The control: the same receiver with few headers is reached over h2.
	small := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(http.StatusHTTPVersionNotSupported)
		}
	}))
	small.EnableHTTP2 = true
	small.StartTLS()
	defer small.Close()
	client.Transport.(*h1.Transport).Fallback().TLSClientConfig.RootCAs = small.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	if out := s.send(context.Background(), &store.Claimed{ID: uuid.New(), EventType: "task.completed", Body: body, URL: small.URL + "/hook"}); out.status != http.StatusOK {
		t.Errorf("small h2 receiver: status %d, error %q", out.status, out.err)
	}
}
