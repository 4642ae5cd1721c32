package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/telemetry"
)

// otelKeys are the standard OpenTelemetry variables the relay reads.
var otelKeys = []string{
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("smtm-relay", true) })
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

func serviceEnv(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// hostPath maps a path inside a service's container to the file bound there.
func hostPath(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			if _, err := os.Stat(v.Source); err != nil {
				t.Fatalf("%s: volume source %s: %v", s.Name, v.Source, err)
			}
			return v.Source
		}
	}
	t.Fatalf("%s: nothing is mounted at %s", s.Name, target)
	return ""
}

func publishes(s types.ServiceConfig, port string) bool {
	return slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool { return strconv.Itoa(int(p.Target)) == port })
}

// docker-compose.yml cannot run here (no Docker engine), so this loads it
// with the compose-spec loader and checks it against the relay itself: the
// relay's command parses with its own flags, its config file and RELAY_*
// environment load, its OTEL_* variables are standard ones that turn
// tracing on towards the jaeger service, the simulator's flags parse and
// point at the same database, the receiver's secrets match the webhooks',
// and PostgreSQL runs with wal_level=logical and the reference schema.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	svc := func(name string) types.ServiceConfig {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		return s
	}

	pg := svc("postgres")
	if !slices.Contains(pg.Command, "wal_level=logical") {
		t.Errorf("postgres command %v does not set wal_level=logical", pg.Command)
	}
	for target, want := range map[string]string{
		"/docker-entrypoint-initdb.d/01-schema.sql": "platform/schema.sql",
		"/docker-entrypoint-initdb.d/02-sample.sql": "platform/sample.sql",
	} {
		if got := hostPath(t, pg, target); !strings.HasSuffix(got, want) {
			t.Errorf("postgres %s comes from %s, want %s", target, got, want)
		}
	}
	pgEnv := serviceEnv(pg)

	relay := svc("relay")
	if relay.Build == nil || relay.Build.Context == "" {
		t.Fatal("relay is not built from the repository")
	}
	args := []string(relay.Command)
	if len(args) < 1 || args[0] != "run" {
		t.Fatalf("relay command %v: want run --config FILE", args)
	}
	// Parse the command with the relay's own flags, with the config path
	// mapped to the file mounted there and the service's environment.
	args = slices.Clone(args[1:])
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			args[i+1] = hostPath(t, relay, args[i+1])
		}
	}
	for _, k := range otelKeys {
		t.Setenv(k, "")
	}
	relayEnv := serviceEnv(relay)
	for k, v := range relayEnv {
		switch {
		case strings.HasPrefix(k, config.EnvPrefix):
		case strings.HasPrefix(k, "OTEL_"):
			if !slices.Contains(otelKeys, k) {
				t.Errorf("relay environment %s is not an OpenTelemetry variable the relay reads", k)
			}
		default:
			t.Errorf("relay environment %s: neither RELAY_* nor OTEL_*", k)
		}
		t.Setenv(k, v)
	}
	cfg, err := parseRun(args)
	if err != nil {
		t.Fatalf("relay %v: %v", relay.Command, err)
	}
	if _, port, _ := strings.Cut(cfg.Observability.Listen, ":"); port == "" || !publishes(relay, port) {
		t.Errorf("observability.listen %q: want a port the relay service publishes (%v)", cfg.Observability.Listen, relay.Ports)
	}
	db, err := url.Parse(cfg.Database.URL)
	if err != nil || db.Hostname() != "postgres" || db.User.Username() != pgEnv["POSTGRES_USER"] ||
		strings.TrimPrefix(db.Path, "/") != pgEnv["POSTGRES_DB"] {
		t.Errorf("database.url %q does not name the postgres service's database and user", cfg.Database.URL)
	}
	if pw, _ := db.User.Password(); pw != pgEnv["POSTGRES_PASSWORD"] {
		t.Errorf("database.url password differs from POSTGRES_PASSWORD")
	}
	if !slices.Contains(relay.GetDependencies(), "postgres") {
		t.Error("relay does not depend on postgres")
	}

	// Tracing is on and goes to the jaeger service's OTLP port.
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{Getenv: os.Getenv, Prometheus: true})
	if err != nil {
		t.Fatalf("telemetry from the relay's environment: %v", err)
	}
	if tel.Tracer == nil {
		t.Error("the relay's environment does not turn tracing on")
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = tel.Shutdown(sctx)
	jaeger := svc("jaeger")
	otlp, err := url.Parse(relayEnv["OTEL_EXPORTER_OTLP_ENDPOINT"])
	if err != nil || otlp.Hostname() != "jaeger" || !publishes(jaeger, otlp.Port()) || !publishes(jaeger, "16686") {
		t.Errorf("OTLP endpoint %q: want the jaeger service's OTLP port, and its UI (16686) published", relayEnv["OTEL_EXPORTER_OTLP_ENDPOINT"])
	}

	// The receiver verifies every webhook's signature.
	recv := svc("receiver")
	if !slices.Equal([]string(recv.Entrypoint), []string{"/receiver"}) {
		t.Errorf("receiver entrypoint %v", recv.Entrypoint)
	}
	secrets := map[string]string{}
	for _, item := range strings.Split(serviceEnv(recv)["RECEIVER_SECRETS"], ",") {
		path, secret, _ := strings.Cut(item, "=")
		secrets[path] = secret
	}
	for _, w := range cfg.Webhooks.Endpoints {
		u, err := url.Parse(w.URL)
		if err != nil || u.Hostname() != "receiver" || !slices.Contains(recv.Command, ":"+u.Port()) {
			t.Errorf("webhook %q URL %s: want the receiver service on the port it listens on (%v)", w.Name, w.URL, recv.Command)
			continue
		}
		if secrets[u.Path] != w.Secret || w.Secret == "" {
			t.Errorf("webhook %q: the receiver's secret for %s differs from the webhook's", w.Name, u.Path)
		}
	}
	if len(cfg.Webhooks.Endpoints) == 0 {
		t.Error("no webhooks: nothing would be delivered")
	}

	// The simulator drives the same database.
	sim := svc("simulator")
	if len(sim.Command) < 1 || sim.Command[0] != "simulate" {
		t.Fatalf("simulator command %v", sim.Command)
	}
	f, err := parseSimulate(sim.Command[1:])
	if err != nil {
		t.Fatalf("simulator %v: %v", sim.Command, err)
	}
	if f.database != cfg.Database.URL || f.slot != cfg.Replication.Slot {
		t.Errorf("simulator database %q slot %q, relay's %q %q", f.database, f.slot, cfg.Database.URL, cfg.Replication.Slot)
	}

	// One image holds both programs the services run.
	df, err := os.ReadFile(filepath.Join(relay.Build.Context, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./cmd/relay", "./cmd/receiver", "/relay", "/receiver"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile does not build %s", want)
		}
	}
}
