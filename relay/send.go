package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/h1"
	"github.com/smartmaintenance/relay/message"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// maxResponseRead is how much of a response body is read (and so drained
// for the connection's reuse); the rest is discarded with the connection.
const maxResponseRead = 64 << 10

// maxResponseHeaderBytes bounds a response's status line and headers,
// 1xx responses included (the transport counts them together while no
// client trace reads them). net/http's default is 10 MB, and a receiver is
// chosen by a tenant: each attempt would hold whatever it sends, and a few
// such receivers took the relay far past its memory limit. Receivers
// answer a webhook with a few hundred bytes of headers; 64 KiB leaves room
// for large cookies and tracing headers. For HTTP/2 the transport derives
// MaxHeaderListSize from it.
const maxResponseHeaderBytes = 64 << 10

// errHeadersTooLarge is the recorded reason when a response's headers
// exceed maxResponseHeaderBytes.
const errHeadersTooLarge = "response headers exceed 64 KiB; the relay reads no more"

// maxErrorLen bounds the recorded error text.
const maxErrorLen = 300

// Request headers the relay sets; a webhook's own headers never replace
// them.
const (
	headerContentType = "Content-Type"
	headerUserAgent   = "User-Agent"
	headerEvent       = signature.EventHeader
	headerDelivery    = signature.DeliveryHeader
	headerSignature   = signature.Header
	// headerReplay names the replay a delivery is sent again for (see
	// store.ArmReplay); live deliveries do not carry it.
	headerReplay = "X-SMTM-Replay"
)

// reservedPrefix marks the product's own headers: a webhook may not set any
// of them, present or future.
const reservedPrefix = "x-smtm-"

// sender makes one attempt: it POSTs a claimed delivery and reads the answer.
type sender struct {
	client       *http.Client
	userAgent    string
	timeout      time.Duration
	snippetBytes int
	// httpsOnly refuses plain http:// URLs (Options.HTTPSOnly).
	httpsOnly bool
	urls      cache[*url.URL]
	signers   cache[*signature.Signer]
	// messages renders the bodies of webhooks whose format is not raw;
	// renderWarn reports a template that failed on a payload (see
	// format.go).
	messages   *message.Renderer
	renderWarn func(c *store.Claimed, err error)
}

// outcome is what one attempt observed.
type outcome struct {
	started  time.Time
	duration time.Duration
	// status is the response status, 0 when no response arrived.
	status int
	// err is a one-line reason the attempt failed; empty on success.
	err     string
	snippet string
	// sent is the body the request carried (the payload, or the message
	// rendered from it); nil when none was made.
	sent []byte
	// aborted means the relay itself cut the attempt short (shutdown) before
	// a response arrived: it is recorded as aborted, not as a failure.
	aborted bool
	// retryAfter is the delay a 429 or 503 answer asked for with
	// Retry-After, when asked is set.
	retryAfter time.Duration
	asked      bool
}

// The relay's own header names in the form net/http writes them, so that
// they are set without canonicalising each time, and the values that never
// change. Nothing appends to a header's values in place.
var (
	canonContentType = http.CanonicalHeaderKey(headerContentType)
	canonUserAgent   = http.CanonicalHeaderKey(headerUserAgent)
	canonEvent       = http.CanonicalHeaderKey(headerEvent)
	canonDelivery    = http.CanonicalHeaderKey(headerDelivery)
	canonSignature   = http.CanonicalHeaderKey(headerSignature)
	canonReplay      = http.CanonicalHeaderKey(headerReplay)
	jsonContentType  = []string{"application/json"}
)

// errPlainHTTP fails an attempt to a plain http:// URL under HTTPSOnly.
var errPlainHTTP = errors.New("plain HTTP refused: production: true sends only to https:// URLs; change the webhook's URL to https")

// newRequest builds the POST for a claimed delivery.
func (s *sender) newRequest(ctx context.Context, c *store.Claimed) (*http.Request, []byte, error) {
	u, err := s.urls.get(c.URL, parseURL)
	if err != nil {
		// The URL may carry credentials: report the reason, not the URL.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, nil, fmt.Errorf("invalid webhook URL: %w", err)
	}
	if s.httpsOnly && u.Scheme == "http" {
		return nil, nil, errPlainHTTP
	}
	body := c.Body
	if c.Format != "" && c.Format != store.FormatRaw {
		if body, err = s.render(c); err != nil {
			return nil, nil, err
		}
	}
	h := make(http.Header, 5+len(c.Headers))
	for k, v := range c.Headers {
		if k == "" || reserved(k) {
			continue
		}
		h.Set(k, v)
	}
	// The relay's header values in one allocation; each header's slice is
	// capped at its one value.
	vals := make([]string, 4)
	vals[0], vals[1], vals[2] = s.userAgent, c.EventType, c.ID.String()
	h[canonContentType] = jsonContentType
	h[canonUserAgent] = vals[0:1:1]
	h[canonEvent] = vals[1:2:2]
	h[canonDelivery] = vals[2:3:3]
	// An empty secret signs nothing a stranger could not sign too.
	if c.Secret != "" {
		signer, _ := s.signers.get(c.Secret, newSigner)
		vals[3] = signer.Sign(body)
		h[canonSignature] = vals[3:4:4]
		if c.PreviousSecret != "" || c.StandardWebhooks {
			s.signExtra(h, c, signer, body, time.Now())
		}
	}
	if c.ReplayID != 0 {
		h[canonReplay] = []string{strconv.FormatInt(c.ReplayID, 10)}
	}
	req := http.Request{
		Method:        http.MethodPost,
		URL:           u, // shared and read-only: nothing on the way out writes to it
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          http.NoBody,
		ContentLength: int64(len(body)),
	}
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		if t, ok := s.client.Transport.(instrumented); ok && t.traced {
			ctx = withSentBody(ctx, body)
		}
	}
	return req.WithContext(ctx), body, nil
}

// cache keeps what is made from a webhook's URL or secret for every
// attempt: the parsed URL, the signer keyed with the secret. It holds at
// most maxCached and starts over when full (webhooks are few; edited ones
// leave stale entries behind).
type cache[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

const maxCached = 4096

// get returns what build made of key, building it on first use.
func (c *cache[V]) get(key string, build func(string) (V, error)) (V, error) {
	c.mu.RLock()
	v, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return v, nil
	}
	v, err := build(key)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = map[string]V{}
	}
	c.m[key] = v
	c.mu.Unlock()
	return v, nil
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("an absolute http or https URL is needed")
	}
	return u, nil
}

// Header names of a rotation's overlap window and of Standard Webhooks,
// canonical.
var (
	canonPrevious    = http.CanonicalHeaderKey(signature.PreviousHeader)
	canonStandardID  = http.CanonicalHeaderKey(signature.StandardIDHeader)
	canonStandardTS  = http.CanonicalHeaderKey(signature.StandardTimestampHeader)
	canonStandardSig = http.CanonicalHeaderKey(signature.StandardSignatureHeader)
)

// signExtra adds what a signed request carries beside X-SMTM-Signature:
// during a rotation's overlap window the previous secret's signature, and
// for a webhook with Standard Webhooks on its three headers, with the
// previous secret's signature after the new one's. They replace any of
// the webhook's own headers of the same names. The overlap window ends at
// its time, by now, whenever the delivery was read: one that waited in
// memory past it is signed with the new secret only.
func (s *sender) signExtra(h http.Header, c *store.Claimed, signer *signature.Signer, body []byte, now time.Time) {
	var prev *signature.Signer
	if c.PreviousSecret != "" && (c.PreviousSecretUntil.IsZero() || now.Before(c.PreviousSecretUntil)) {
		prev, _ = s.signers.get(c.PreviousSecret, newSigner)
		h[canonPrevious] = []string{prev.Sign(body)}
	}
	if !c.StandardWebhooks {
		return
	}
	id := c.ID.String()
	ts := now.Unix()
	sig := signer.SignStandard(id, ts, body)
	if prev != nil {
		sig += " " + prev.SignStandard(id, ts, body)
	}
	h[canonStandardID] = []string{id}
	h[canonStandardTS] = []string{strconv.FormatInt(ts, 10)}
	h[canonStandardSig] = []string{sig}
}

func newSigner(secret string) (*signature.Signer, error) {
	return signature.NewSigner([]byte(secret)), nil
}

// reserved reports whether a webhook's own header would replace one the
// relay sets.
func reserved(name string) bool {
	switch {
	case strings.EqualFold(name, headerContentType), strings.EqualFold(name, headerUserAgent):
		return true
	case strings.EqualFold(name, "traceparent"), strings.EqualFold(name, "tracestate"):
		// The trace context is the relay's: it names the event's trace.
		return true
	case len(name) >= len(reservedPrefix) && strings.EqualFold(name[:len(reservedPrefix)], reservedPrefix):
		return true
	}
	return false
}

// send makes one attempt of c. ctx is cancelled only to abort attempts at
// shutdown; the attempt's own time limit is the sender's timeout.
func (s *sender) send(ctx context.Context, c *store.Claimed) (out outcome) {
	out.started = time.Now()
	defer func() { out.duration = time.Since(out.started) }()
	actx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if c.SecretError != "" {
		// Never send unsigned what the admin meant to be signed.
		out.err = oneLine(c.SecretError)
		return out
	}
	req, sent, err := s.newRequest(actx, c)
	out.sent = sent
	if err != nil {
		out.err = oneLine(err.Error())
		return out
	}
	// The transport directly: the client would copy the headers and the URL
	// for redirects, which are never followed.
	resp, err := s.transport().RoundTrip(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			out.aborted = true
		case errors.Is(actx.Err(), context.DeadlineExceeded):
			out.err = fmt.Sprintf("timeout: no response within %v", s.timeout)
		default:
			out.err = describe(err)
		}
		return out
	}
	// Read what a well-behaved endpoint sends, so the connection can be
	// reused; a body larger than that costs the connection.
	buf := readBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	_, _ = buf.ReadFrom(io.LimitReader(resp.Body, maxResponseRead))
	resp.Body.Close()
	out.status = resp.StatusCode
	out.retryAfter, out.asked = retryAfter(resp.StatusCode, resp.Header, time.Now())
	out.snippet = snippet(buf.Bytes(), s.snippetBytes)
	if buf.Cap() <= 4<<10 {
		readBuffers.Put(buf)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		out.err = fmt.Sprintf("HTTP %d: redirects are not followed", resp.StatusCode)
	default:
		out.err = fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return out
}

// readBuffers hold response bodies while they are read; snippet copies
// what it keeps.
var readBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// transport is what sends the requests: the client's transport, or the
// default one for a client without.
func (s *sender) transport() http.RoundTripper {
	if s.client.Transport != nil {
		return s.client.Transport
	}
	return http.DefaultTransport
}

// describe turns a transport error into one line that names the cause and
// not the URL, which may carry credentials.
func describe(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var dnsErr *net.DNSError
	var blocked *egress.BlockedError
	switch {
	case errors.As(err, &blocked):
		return oneLine(blocked.Error())
	case headersTooLarge(err):
		return errHeadersTooLarge
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the endpoint before a complete response"
	case errors.As(err, &dnsErr):
		return oneLine("dns: " + dnsErr.Error())
	case isTimeout(err):
		return oneLine("timeout: " + err.Error())
	}
	return oneLine(err.Error())
}

// headersTooLarge reports whether err is the transport's refusal of
// headers beyond MaxResponseHeaderBytes: net/http has no error value for
// it, only text ("server response headers exceeded N bytes" for HTTP/1,
// "response header list larger than advertised limit" for HTTP/2).
func headersTooLarge(err error) bool {
	s := err.Error()
	return strings.Contains(s, "response headers exceeded") || strings.Contains(s, "response header list larger")
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// oneLine folds s onto one line of at most maxErrorLen bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if len(s) > maxErrorLen {
		s = strings.ToValidUTF8(s[:maxErrorLen], "") + "…"
	}
	return s
}

// snippet returns the first n bytes of body as trimmed, valid UTF-8.
func snippet(body []byte, n int) string {
	if n <= 0 || len(body) == 0 {
		return ""
	}
	if len(body) > n {
		body = body[:n]
	}
	s := string(body)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "")
	}
	return strings.TrimSpace(strings.ReplaceAll(s, "\x00", ""))
}

// newClient returns the client the dispatcher sends with: no redirects, no
// cookies, idle connections kept for every worker, and every connection
// checked against policy when it is made (see package egress).
func newClient(workers int, policy *egress.Policy) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = policy.DialContext(30*time.Second, 30*time.Second)
	if t.Proxy != nil {
		// The dial check sees only the proxy: judge the target first.
		t.Proxy = policy.Proxy(t.Proxy)
	}
	t.MaxIdleConns = 2 * workers
	t.MaxIdleConnsPerHost = workers
	t.IdleConnTimeout = 90 * time.Second
	t.MaxResponseHeaderBytes = maxResponseHeaderBytes
	// Send no Accept-Encoding: the request carries the product's headers
	// and the webhook's own, nothing else.
	t.DisableCompression = true
	// Plain-HTTP POSTs are written and read on the attempt's own goroutine
	// (see package h1); the rest goes through t.
	return &http.Client{Transport: h1.New(t), CheckRedirect: noRedirects}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Message is one request for a Sender: what a delivery attempt sends.
type Message struct {
	URL       string
	EventType string
	// DeliveryID is the X-SMTM-Delivery header.
	DeliveryID uuid.UUID
	Body       []byte
	// Secret signs the body; "" sends no signature.
	Secret  string
	Headers map[string]string
	// Format is the webhook's payload format: "raw" or "" sends Body, the
	// others a message rendered from it (see package message).
	Format string
	// PreviousSecret, during a rotation's overlap window, signs the body
	// too (X-SMTM-Signature-Previous).
	PreviousSecret string
	// StandardWebhooks adds the Standard Webhooks headers (with a secret).
	StandardWebhooks bool
}

// Result is what one request observed.
type Result struct {
	Started  time.Time
	Duration time.Duration
	// StatusCode is 0 when no response arrived.
	StatusCode int
	// Error is a one-line reason the request failed; "" for a 2xx answer.
	Error   string
	Snippet string
	// Sent is the body sent and signed: the message's Body, or what its
	// Format rendered from it; nil when the request was not made.
	Sent []byte
}

// SenderOptions configure a Sender; zero values take the Dispatcher's
// defaults (Options).
type SenderOptions struct {
	Timeout      time.Duration
	UserAgent    string
	SnippetBytes int
	// Egress decides which addresses may be called; nil refuses every
	// special-purpose address (see package egress).
	Egress *egress.Policy
	// HTTPSOnly refuses plain http:// URLs (Options.HTTPSOnly).
	HTTPSOnly bool
	// Messages renders the bodies of slack and teams webhooks; nil: the
	// default templates, without links.
	Messages *message.Renderer
	// Logger receives a line for each template that fails on a payload.
	// Default: discard.
	Logger *slog.Logger
}

// Sender makes single requests exactly as the dispatcher's attempts are
// made (headers, signature, no redirects, bounded reads, egress checks),
// without a delivery behind them: the admin API's test events use it.
type Sender struct{ s sender }

// NewSender returns a Sender with its own small connection pool.
func NewSender(o SenderOptions) *Sender {
	opts := Options{Timeout: o.Timeout, UserAgent: o.UserAgent, SnippetBytes: o.SnippetBytes}.withDefaults()
	return &Sender{s: sender{
		client:       newClient(2, o.Egress),
		userAgent:    opts.UserAgent,
		timeout:      opts.Timeout,
		snippetBytes: opts.SnippetBytes,
		httpsOnly:    o.HTTPSOnly,
		messages:     o.Messages,
		renderWarn:   renderWarner(o.Logger),
	}}
}

// Send POSTs m once and reports what happened.
func (s *Sender) Send(ctx context.Context, m Message) Result {
	c := store.Claimed{ID: m.DeliveryID, EventType: m.EventType, Body: m.Body, URL: m.URL, Secret: m.Secret, Headers: m.Headers,
		Format: m.Format, PreviousSecret: m.PreviousSecret, StandardWebhooks: m.StandardWebhooks}
	out := s.s.send(ctx, &c)
	return Result{Started: out.started, Duration: out.duration, StatusCode: out.status, Error: out.err, Snippet: out.snippet, Sent: out.sent}
}

// Close releases idle connections.
func (s *Sender) Close() { s.s.client.CloseIdleConnections() }
