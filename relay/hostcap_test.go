package relay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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
	client := &http.Client{Transport: instrumentTransport(http.DefaultTransport, nil, capHosts(mp, capped))}
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
