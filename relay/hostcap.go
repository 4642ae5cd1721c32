package relay

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// otherHost is the server.address of requests to hosts beyond the cap.
const otherHost = "other"

// capHosts returns a meter provider that passes measurements on to mp with
// at most max distinct server.address values: the first max hosts measured
// keep their name (and server.port); every other host is measured as
// "other", without a port. The HTTP client metrics label each measurement
// with the receiver's host, and receivers are chosen by tenants, so
// without a cap every new host adds series (a histogram each) for as long
// as the process runs. nil stays nil.
func capHosts(mp metric.MeterProvider, max int) metric.MeterProvider {
	if mp == nil {
		return nil
	}
	return &cappedProvider{MeterProvider: mp, hosts: &hostSet{max: max, named: map[string]bool{}}}
}

// hostSet remembers the hosts that keep their name.
type hostSet struct {
	mu    sync.Mutex
	max   int
	named map[string]bool
}

func (h *hostSet) keep(host string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.named[host] {
		return true
	}
	if len(h.named) < h.max {
		h.named[host] = true
		return true
	}
	return false
}

// rewrite returns the attributes to measure with.
func (h *hostSet) rewrite(set attribute.Set) attribute.Set {
	v, ok := set.Value(semconv.ServerAddressKey)
	if !ok || h.keep(v.AsString()) {
		return set
	}
	kvs := make([]attribute.KeyValue, 0, set.Len())
	for it := set.Iter(); it.Next(); {
		kv := it.Attribute()
		switch kv.Key {
		case semconv.ServerAddressKey:
			kv = semconv.ServerAddress(otherHost)
		case semconv.ServerPortKey:
			continue
		}
		kvs = append(kvs, kv)
	}
	return attribute.NewSet(kvs...)
}

type cappedProvider struct {
	metric.MeterProvider
	hosts *hostSet
}

func (p *cappedProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return &cappedMeter{Meter: p.MeterProvider.Meter(name, opts...), hosts: p.hosts}
}

// cappedMeter wraps the synchronous instruments, which is what the HTTP
// client instrumentation records with; the others pass through.
type cappedMeter struct {
	metric.Meter
	hosts *hostSet
}

func (m *cappedMeter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	i, err := m.Meter.Float64Histogram(name, opts...)
	return &cappedFloat64Histogram{Float64Histogram: i, hosts: m.hosts}, err
}

func (m *cappedMeter) Int64Histogram(name string, opts ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	i, err := m.Meter.Int64Histogram(name, opts...)
	return &cappedInt64Histogram{Int64Histogram: i, hosts: m.hosts}, err
}

func (m *cappedMeter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	i, err := m.Meter.Int64Counter(name, opts...)
	return &cappedInt64Counter{Int64Counter: i, hosts: m.hosts}, err
}

func (m *cappedMeter) Int64UpDownCounter(name string, opts ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	i, err := m.Meter.Int64UpDownCounter(name, opts...)
	return &cappedInt64UpDownCounter{Int64UpDownCounter: i, hosts: m.hosts}, err
}

type cappedFloat64Histogram struct {
	metric.Float64Histogram
	hosts *hostSet
}

func (i *cappedFloat64Histogram) Record(ctx context.Context, v float64, opts ...metric.RecordOption) {
	set := i.hosts.rewrite(metric.NewRecordConfig(opts).Attributes())
	i.Float64Histogram.Record(ctx, v, metric.WithAttributeSet(set))
}

type cappedInt64Histogram struct {
	metric.Int64Histogram
	hosts *hostSet
}

func (i *cappedInt64Histogram) Record(ctx context.Context, v int64, opts ...metric.RecordOption) {
	set := i.hosts.rewrite(metric.NewRecordConfig(opts).Attributes())
	i.Int64Histogram.Record(ctx, v, metric.WithAttributeSet(set))
}

type cappedInt64Counter struct {
	metric.Int64Counter
	hosts *hostSet
}

func (i *cappedInt64Counter) Add(ctx context.Context, v int64, opts ...metric.AddOption) {
	set := i.hosts.rewrite(metric.NewAddConfig(opts).Attributes())
	i.Int64Counter.Add(ctx, v, metric.WithAttributeSet(set))
}

type cappedInt64UpDownCounter struct {
	metric.Int64UpDownCounter
	hosts *hostSet
}

func (i *cappedInt64UpDownCounter) Add(ctx context.Context, v int64, opts ...metric.AddOption) {
	set := i.hosts.rewrite(metric.NewAddConfig(opts).Attributes())
	i.Int64UpDownCounter.Add(ctx, v, metric.WithAttributeSet(set))
}
