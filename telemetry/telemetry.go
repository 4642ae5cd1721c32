// Package telemetry gives the relay's process its OpenTelemetry providers,
// the Prometheus scrape handler, log records tied to traces, the health
// endpoints, and the W3C traceparent form in which a trace is stored with an
// event.
//
// Library packages (ingest, relay) take their providers as options and never
// read globals; the process builds them here once, from the standard OTEL_*
// environment variables:
//   - traces are exported when OTEL_TRACES_EXPORTER names an exporter (otlp,
//     console) or when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_EXPORTER_OTLP_PROTOCOL picks
//     grpc or http/protobuf; OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
//     choose the sampler (default parentbased_always_on);
//   - metrics are exported over OTLP under the same rule, with
//     OTEL_METRICS_EXPORTER and OTEL_EXPORTER_OTLP_METRICS_ENDPOINT;
//   - with none of them set nothing is exported and tracing costs nothing:
//     there is no tracer provider.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// ServiceName is the service.name of the relay's telemetry unless
// OTEL_SERVICE_NAME says otherwise.
const ServiceName = "smtm-relay"

// Options configure Setup.
type Options struct {
	// Getenv reads the environment; os.Getenv in the process. The exporters
	// themselves read the process environment.
	Getenv func(string) string
	// Prometheus builds a scrape handler (Providers.Metrics) for /metrics.
	Prometheus bool
	// Version is the service.version resource attribute.
	Version string
	// Logger, when set, takes OpenTelemetry's own errors (an exporter
	// failing), at most one line every 30 s, instead of the standard
	// logger at every failure. It is set for the whole process.
	Logger *slog.Logger
}

// Providers are the process's telemetry providers.
type Providers struct {
	// Tracer is nil when no trace is exported: components then trace
	// nothing and pay nothing for it.
	Tracer trace.TracerProvider
	// Meter is nil when metrics go nowhere (no OTLP export, no scrape
	// endpoint).
	Meter metric.MeterProvider
	// Metrics serves the Prometheus exposition of every metric; nil
	// unless Options.Prometheus.
	Metrics http.Handler

	shutdown []func(context.Context) error
}

// Shutdown flushes and stops the exporters.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range p.shutdown {
		errs = append(errs, f(ctx))
	}
	p.shutdown = nil
	return errors.Join(errs...)
}

// Setup builds the providers the environment asks for.
func Setup(ctx context.Context, opts Options) (*Providers, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	p := &Providers{}
	if opts.Logger != nil {
		otel.SetErrorHandler(&errorLog{log: opts.Logger})
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(ServiceName), semconv.ServiceVersion(opts.Version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	if wants(getenv, "TRACES") {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("trace exporter (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		if !autoexport.IsNoneSpanExporter(exp) {
			// The sampler comes from OTEL_TRACES_SAMPLER.
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
			p.Tracer = tp
			p.shutdown = append(p.shutdown, tp.Shutdown)
		}
	}

	var readers []sdkmetric.Option
	if wants(getenv, "METRICS") {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("metric exporter (OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		if !autoexport.IsNoneMetricReader(r) {
			readers = append(readers, sdkmetric.WithReader(r))
		}
	}
	if opts.Prometheus {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := promexporter.New(promexporter.WithRegisterer(reg), promexporter.WithoutScopeInfo())
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exp))
		p.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		p.Meter = mp
		p.shutdown = append(p.shutdown, mp.Shutdown)
	}
	return p, nil
}

// wants reports whether the environment asks for a signal's export:
// OTEL_<SIGNAL>_EXPORTER is set (even to "none", which autoexport honours),
// or an OTLP endpoint is.
func wants(getenv func(string) string, signal string) bool {
	if strings.TrimSpace(getenv("OTEL_"+signal+"_EXPORTER")) != "" {
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}
