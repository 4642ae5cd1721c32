package relay

import (
	"context"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/httpconv"
)

// otherHost is the server.address of requests to hosts beyond the cap.
const otherHost = "other"

// clientMetrics records OpenTelemetry's HTTP client metrics,
// http.client.request.duration and http.client.request.body.size, for
// each request the dispatcher sends, under the names, units, buckets and
// attributes otelhttp's transport gives them. otelhttp built and sorted a
// new attribute set for every request (and cloned the request to do so):
// about 21 µs of the relay's CPU per delivery in a fan-out run
// (docs/PERFORMANCE.md, "HTTP client metrics without otelhttp"). Here each
// distinct set (receiver host, scheme, protocol, status, error type) is
// built once and kept.
//
// Receivers are chosen by tenants, so the hosts named are capped: the
// first hosts measured keep their name (and server.port), every other
// host is measured as "other", without a port. Without a cap every new
// host would add series, a histogram each, for as long as the process
// runs.
type clientMetrics struct {
	duration httpconv.ClientRequestDuration
	bodySize httpconv.ClientRequestBodySize
	maxHosts int

	mu   sync.RWMutex
	sets map[measureKey][]metric.RecordOption
	// named holds the hosts that keep their name; mu guards it too.
	named map[string]bool
}

// measureKey is what a request's attributes are made from.
type measureKey struct {
	method, scheme, host, proto, errType string
	status                               int
}

// maxMeasureKeys bounds the kept sets; past it they start over (the keys
// hold each URL's host as written, so hosts beyond the cap would otherwise
// add keys without end).
const maxMeasureKeys = 4096

// newClientMetrics returns the instruments of mp, naming at most maxHosts
// receiver hosts.
func newClientMetrics(mp metric.MeterProvider, maxHosts int) (*clientMetrics, error) {
	m := mp.Meter(instrumentation)
	duration, err := httpconv.NewClientRequestDuration(m,
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	if err != nil {
		return nil, err
	}
	bodySize, err := httpconv.NewClientRequestBodySize(m)
	if err != nil {
		return nil, err
	}
	return &clientMetrics{duration: duration, bodySize: bodySize, maxHosts: maxHosts,
		sets: map[measureKey][]metric.RecordOption{}, named: map[string]bool{}}, nil
}

// record measures one request: its time until the response's headers (or
// the error) and the bytes of its body.
func (m *clientMetrics) record(ctx context.Context, r *http.Request, res *http.Response, err error, took time.Duration) {
	k := measureKey{method: r.Method, scheme: r.URL.Scheme, host: r.URL.Host, proto: r.Proto}
	if err == nil {
		k.status = res.StatusCode
		if res.Proto != "" {
			// What was negotiated, not what was asked for.
			k.proto = res.Proto
		}
	} else {
		k.errType = errorType(err)
	}
	opts := m.options(k)
	m.duration.Inst().Record(ctx, float64(took)/float64(time.Second), opts...)
	size := r.ContentLength
	if size < 0 {
		size = 0
	}
	m.bodySize.Inst().Record(ctx, size, opts...)
}

// options returns the attributes of k, made on its first use.
func (m *clientMetrics) options(k measureKey) []metric.RecordOption {
	m.mu.RLock()
	opts, ok := m.sets[k]
	m.mu.RUnlock()
	if ok {
		return opts
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if opts, ok := m.sets[k]; ok {
		return opts
	}
	if len(m.sets) >= maxMeasureKeys {
		m.sets = map[measureKey][]metric.RecordOption{}
	}
	opts = []metric.RecordOption{metric.WithAttributeSet(m.attributesLocked(k))}
	m.sets[k] = opts
	return opts
}

// attributesLocked are those otelhttp's transport records with. m.mu must
// be held.
func (m *clientMetrics) attributesLocked(k measureKey) attribute.Set {
	method := strings.ToUpper(k.method)
	switch method {
	case http.MethodConnect, http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodOptions,
		http.MethodPatch, http.MethodPost, http.MethodPut, http.MethodTrace:
	default:
		method = "_OTHER"
	}
	scheme := k.scheme
	if scheme == "" {
		scheme = "http"
	}
	kvs := make([]attribute.KeyValue, 0, 8)
	kvs = append(kvs, semconv.HTTPRequestMethodKey.String(method), semconv.URLScheme(scheme))
	host, port := splitHostPort(k.host)
	if m.keepLocked(host) {
		kvs = append(kvs, semconv.ServerAddress(host))
		// The scheme's default port is left out, as the conventions ask.
		if port > 0 && !(scheme == "https" && port == 443) && !(scheme == "http" && port == 80) {
			kvs = append(kvs, semconv.ServerPort(port))
		}
	} else {
		kvs = append(kvs, semconv.ServerAddress(otherHost))
	}
	if name, version, _ := strings.Cut(k.proto, "/"); name != "" {
		kvs = append(kvs, semconv.NetworkProtocolName(strings.ToLower(name)))
		if version != "" {
			kvs = append(kvs, semconv.NetworkProtocolVersion(version))
		}
	}
	if k.status > 0 {
		kvs = append(kvs, semconv.HTTPResponseStatusCode(k.status))
	}
	if k.errType != "" {
		kvs = append(kvs, semconv.ErrorTypeKey.String(k.errType))
	}
	return attribute.NewSet(kvs...)
}

// splitHostPort splits a URL's host into its name (without an IPv6
// address's brackets) and port, -1 when it names none.
func splitHostPort(hostport string) (string, int) {
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && i > strings.LastIndexByte(hostport, ']') {
		host, port = hostport[:i], hostport[i+1:]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return host, -1
	}
	return host, int(p)
}

// errorType names err's type, as the conventions' error.type for a
// request without a response: one value per kind of failure
// (net.OpError, context.deadlineExceededError, ...), never its text.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() == "" || t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

// keepLocked reports whether host keeps its name: it does if it has, or if
// fewer than maxHosts hosts have. m.mu must be held.
func (m *clientMetrics) keepLocked(host string) bool {
	if m.named[host] {
		return true
	}
	if len(m.named) < m.maxHosts {
		m.named[host] = true
		return true
	}
	return false
}

// measured records the client metrics of each request it sends.
type measured struct {
	base    http.RoundTripper
	metrics *clientMetrics
}

func (t measured) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.base.RoundTrip(r)
	t.metrics.record(r.Context(), r, res, err, time.Since(start))
	return res, err
}
