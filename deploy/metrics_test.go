package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/service"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// selector is a metric a query reads, with the labels it matches on.
type selector struct {
	where  string // the rule or panel
	metric string
	labels []string
}

// prometheusMade are series Prometheus makes itself for each target.
var prometheusMade = map[string]bool{"up": true}

func selectorsOf(t *testing.T, where, expr string) []selector {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	var out []selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{where: where, metric: vs.Name}
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				s.labels = append(s.labels, m.Name)
			}
		}
		if s.metric == "" {
			t.Errorf("%s: a selector without a metric name: %s", where, vs)
		}
		out = append(out, s)
		return nil
	})
	return out
}

// ruleSelectors parses the rules file with Prometheus's own rule parser
// (which parses each expression and checks the annotations' templates)
// and returns what its expressions read.
func ruleSelectors(t *testing.T) []selector {
	t.Helper()
	groups, errs := rulefmt.ParseFile("prometheus/relay-rules.yaml", false, model.LegacyValidation,
		parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	var out []selector
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: want an alert with a severity and a summary", r.Alert+r.Record)
			}
			out = append(out, selectorsOf(t, "rule "+r.Alert, r.Expr)...)
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}
	return out
}

// grafanaVars are the variables Grafana replaces in a query before
// Prometheus sees it.
var grafanaVars = regexp.MustCompile(`\$__(rate_interval|interval|range)\b`)

// dashboardSelectors parses every query of the dashboard as PromQL (after
// Grafana's interval variables) and returns what they read.
func dashboardSelectors(t *testing.T) []selector {
	t.Helper()
	b, err := os.ReadFile("grafana/relay-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("relay-dashboard.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatal("relay-dashboard.json: no uid or no panels")
	}
	var out []selector
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			expr := grafanaVars.ReplaceAllString(q.Expr, "5m")
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: a variable the dashboard does not define: %s", p.Title, q.Expr)
				continue
			}
			out = append(out, selectorsOf(t, "panel "+p.Title, expr)...)
		}
	}
	// What an operator looks at first.
	for _, m := range []string{"relay_replication_lag_bytes", "relay_replication_slot_retained_wal_bytes",
		"relay_deliveries_total", "relay_delivery_attempts_total", "relay_delivery_latency_seconds_bucket",
		"relay_deliveries_stored", "relay_webhook_success_rate_ratio"} {
		if !slices.ContainsFunc(out, func(s selector) bool { return s.metric == m }) {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	return out
}

// The alert rules parse with Prometheus's rule parser, the dashboard's
// queries with its PromQL parser, and every metric they read (with the
// labels they match on) is one a running relay exports: a relay started
// from the ConfigMap's configuration against a real PostgreSQL, after it
// delivered an event to a webhook created through its admin API.
func TestRulesAndDashboardReadExportedMetrics(t *testing.T) {
	sels := append(ruleSelectors(t), dashboardSelectors(t)...)
	if t.Failed() {
		t.FailNow()
	}
	series := scrapeRunningRelay(t)
	for _, s := range sels {
		if prometheusMade[s.metric] {
			continue
		}
		labels, ok := series[s.metric]
		if !ok {
			t.Errorf("%s reads %s, which the relay does not export", s.where, s.metric)
			continue
		}
		for _, l := range s.labels {
			if !labels[l] {
				t.Errorf("%s matches %s on label %q, which the relay's %s series do not have", s.where, s.metric, l, s.metric)
			}
		}
	}
	if t.Failed() {
		var names []string
		for n := range series {
			names = append(names, n)
		}
		slices.Sort(names)
		t.Logf("exported: %s", strings.Join(names, " "))
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrapeRunningRelay runs the relay with the ConfigMap's configuration,
// drives a delivery through it, and returns the series names on /metrics
// with the label names each has.
func scrapeRunningRelay(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := loadManifests(t)
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		t.Setenv(k, "")
	}
	dbURL := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	var received atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		received.Add(1)
	}))
	t.Cleanup(recv.Close)

	// The ConfigMap's file as deployed, with a token of the test's own in
	// place of the placeholder; the environment adds what a test needs:
	// its database, local listeners, and an HTTP receiver on loopback.
	token := "deploy-test-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	placeholder := strings.Repeat("0", 64)
	text := string(m.relayConfig)
	if !strings.Contains(text, placeholder) {
		t.Fatal("the ConfigMap's admin token placeholder moved; update the test")
	}
	path := m.configPath + ".test.yaml"
	if err := os.WriteFile(path, []byte(strings.Replace(text, placeholder, hex.EncodeToString(sum[:]), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	obs, adminAddr := freeAddr(t), freeAddr(t)
	// Later entries override the Secret's.
	env := append(m.relayEnv(t, true),
		"RELAY_DATABASE__URL="+dbURL,
		"RELAY_OBSERVABILITY__LISTEN="+obs,
		"RELAY_ADMIN__LISTEN="+adminAddr,
		"RELAY_PRODUCTION=false",
		"RELAY_DELIVERY__ALLOW_NETWORKS=127.0.0.0/8",
		"RELAY_REPLICATION__STATUS_INTERVAL=200ms",
		"RELAY_DELIVERY__POLL_INTERVAL=100ms",
		"RELAY_DELIVERY__DRAIN_TIMEOUT=2s")
	cfg, err := config.Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// The handler writes one line at a time; the log is read once Run
	// has returned.
	var logs bytes.Buffer
	go func() { done <- service.Run(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})

	get := func(base, path string) (int, string) {
		resp, err := http.Get("http://" + base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "/readyz", func() bool { code, _ := get(obs, "/readyz"); return code == http.StatusOK })

	// A webhook, created as an operator would (relay webhooks create).
	body := fmt.Sprintf(`{"company_id": 1, "name": "deploy-test", "url": %q, "events": ["audit.exported"], "secret": "deploy-test-secret-0123456789"}`, recv.URL+"/hook")
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/v1/webhooks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("create a webhook: %d %s", resp.StatusCode, b)
	}

	// The relay picks the webhook up within webhooks.reload_interval: a
	// change made before then has no subscriber, so make one until the
	// receiver gets it.
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	next := time.Now()
	waitFor(t, "a delivery", func() bool {
		if received.Load() > 0 {
			return true
		}
		if time.Now().After(next) {
			if _, err := pool.Exec(ctx, `INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`); err != nil {
				t.Fatal(err)
			}
			next = time.Now().Add(time.Second)
		}
		return false
	})

	var metrics string
	waitFor(t, "the delivery in /metrics", func() bool {
		_, metrics = get(obs, "/metrics")
		return strings.Contains(metrics, "relay_delivery_latency_seconds_bucket") &&
			strings.Contains(metrics, `relay_webhook_success_rate_ratio{`) && strings.Contains(metrics, `webhook="deploy-test"`)
	})
	return seriesOf(t, metrics)
}

// seriesOf reads the Prometheus text format: each series name with the
// names of its labels.
func seriesOf(t *testing.T, text string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		if !strings.Contains(line, "{") {
			name, _, _ = strings.Cut(line, " ")
			rest = ""
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		if labels, _, ok := strings.Cut(rest, "}"); ok {
			for _, m := range label.FindAllStringSubmatch(labels, -1) {
				out[name][m[1]] = true
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("/metrics is empty:\n%s", text)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
