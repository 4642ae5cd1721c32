package relay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// TestMetricHostsAreCapped: the HTTP client metrics name at most
// MetricHosts receiver hosts, the first ones called; requests to every
// further host are counted under server.address "other" without a port, so
// the series stay bounded however many hosts tenants register.
func TestMetricHostsAreCapped(t *testing.T) {
	const hosts, capped = 8, 3
	var urls []string
	for i := range hosts {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+1))
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.%d: %v", i+1, err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	rt, err := instrumentTransport(http.DefaultTransport, nil, mp, capped)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: rt}
	for range 2 {
		for _, u := range urls {
			res, err := client.Post(u+"/hook", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var sets []attribute.Set
			var counts []uint64
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					sets, counts = append(sets, p.Attributes), append(counts, p.Count)
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					sets, counts = append(sets, p.Attributes), append(counts, p.Count)
				}
			default:
				continue
			}
			seen++
			got := map[string]uint64{}
			for i, set := range sets {
				host, _ := set.Value("server.address")
				_, hasPort := set.Value("server.port")
				got[host.AsString()] += counts[i]
				if host.AsString() == "other" && hasPort {
					t.Errorf("%s: other carries a port: %v", m.Name, set.ToSlice())
				}
			}
			want := map[string]uint64{"other": 2 * (hosts - capped)}
			for i := range capped {
				want[fmt.Sprintf("127.0.0.%d", i+1)] = 2
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: requests by server.address %v, want %v", m.Name, got, want)
			}
		}
	}
	if seen == 0 {
		t.Fatalf("no HTTP client histogram recorded: %+v", rm)
	}
}

// The relay's HTTP client metrics are those otelhttp's transport records:
// the same names, units, descriptions, buckets and attributes, for an
// answer, an error status and a request that got no answer, over HTTP/1.1
// and HTTP/2. Dashboards and alerts written for otelhttp's metrics read
// the relay's unchanged.
func TestClientMetricsMatchOtelhttp(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(plain.Close)
	h2 := httptest.NewUnstartedServer(plain.Config.Handler)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/hook"
	ln.Close()

	collect := func(wrap func(base http.RoundTripper, mp *sdkmetric.MeterProvider) http.RoundTripper) map[string]metricdata.Metrics {
		t.Helper()
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		t.Cleanup(func() { mp.Shutdown(context.Background()) })
		base := h2.Client().Transport.(*http.Transport).Clone()
		t.Cleanup(base.CloseIdleConnections)
		client := &http.Client{Transport: wrap(base, mp)}
		urls := []string{plain.URL + "/hook", plain.URL + "/busy", h2.URL + "/hook", refused}
		for _, u := range urls {
			res, err := client.Post(u, "application/json", strings.NewReader(`{"event":"task.assigned"}`))
			if err == nil {
				res.Body.Close()
			} else if u != refused {
				t.Fatalf("%s: %v", u, err)
			}
		}
		// otelhttp records a request once the transport is done with its
		// body, which over HTTP/2 can be after RoundTrip returned.
		got := map[string]metricdata.Metrics{}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			requests := uint64(0)
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					got[m.Name] = m
					if d, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "http.client.request.duration" {
						for _, p := range d.DataPoints {
							requests += p.Count
						}
					}
				}
			}
			if requests >= uint64(len(urls)) || time.Now().After(deadline) {
				return got
			}
		}
	}
	ours := collect(func(base http.RoundTripper, mp *sdkmetric.MeterProvider) http.RoundTripper {
		rt, err := instrumentTransport(base, nil, mp, 20)
		if err != nil {
			t.Fatal(err)
		}
		return rt
	})
	theirs := collect(func(base http.RoundTripper, mp *sdkmetric.MeterProvider) http.RoundTripper {
		return otelhttp.NewTransport(base, otelhttp.WithMeterProvider(mp), otelhttp.WithTracerProvider(tracenoop.NewTracerProvider()))
	})
	if len(theirs) == 0 {
		t.Fatal("otelhttp recorded nothing")
	}
	for name, want := range theirs {
		got, ok := ours[name]
		if !ok {
			t.Errorf("%s: not recorded", name)
			continue
		}
		if got.Description != want.Description || got.Unit != want.Unit {
			t.Errorf("%s: %q in %q, otelhttp %q in %q", name, got.Description, got.Unit, want.Description, want.Unit)
		}
		if g, w := histogramPoints(t, got), histogramPoints(t, want); g != w {
			t.Errorf("%s: points\n%s\notelhttp's\n%s", name, g, w)
		}
	}
	for name := range ours {
		if _, ok := theirs[name]; !ok {
			t.Errorf("%s: recorded, and not by otelhttp", name)
		}
	}
}

// histogramPoints describes a histogram's points without their values
// that vary: attributes, count, bounds and, for sizes, the sum.
func histogramPoints(t *testing.T, m metricdata.Metrics) string {
	t.Helper()
	var lines []string
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			lines = append(lines, fmt.Sprintf("%s count=%d bounds=%v", p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count, p.Bounds))
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			sum := fmt.Sprint(p.Sum)
			if p.Attributes.HasValue("error.type") {
				// A request that got no answer counts the body it carried;
				// otelhttp counts what the transport had read of it.
				sum = "-"
			}
			lines = append(lines, fmt.Sprintf("%s count=%d sum=%s bounds=%v", p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count, sum, p.Bounds))
		}
	default:
		t.Fatalf("%s: %T, not a histogram", m.Name, m.Data)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
