package config

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // fixtures name zones; do not depend on the host's zoneinfo

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/smartmaintenance/relay/mapper"
)

func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good fixtures: %v", err)
	}
	for _, f := range append(files, "example.yaml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f, nil); err != nil {
				t.Fatalf("Load:\n%v", err)
			}
		})
	}
}

// lineRE is the shape of every problem line: the key (or environment
// variable), a colon, the problem.
var lineRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\[\]# -]*: \S`)

func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			want, never := wantComment(t, f)
			cfg, err := Load(f, nil)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", want)
			}
			if cfg != nil {
				t.Errorf("Load returned a config with its error")
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error does not contain %q:\n%v", want, err)
			}
			for _, v := range never {
				if strings.Contains(err.Error(), v) {
					t.Errorf("error prints the secret value %q:\n%v", v, err)
				}
			}
			if strings.HasPrefix(err.Error(), "read config file") {
				return // YAML syntax: the parser's message
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !lineRE.MatchString(line) {
					t.Errorf("problem line does not start with a key: %q", line)
				}
			}
		})
	}
}

// wantComment reads a bad fixture's first line, "# want: <part of the
// error>", and the "# never: <text>" lines after it: secret values the
// error must not print.
func wantComment(t *testing.T, path string) (want string, never []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	want, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok || want == "" {
		t.Fatalf("%s: first line must be \"# want: <part of the error>\"", path)
	}
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "# never: ")
		if !ok {
			break
		}
		never = append(never, v)
	}
	return want, never
}

func TestDefaults(t *testing.T) {
	got, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	got.source, got.level = nil, nil // where it was read from, for reloads
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(\"\", nil) =\n%+v\nwant\n%+v", got, want)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	// The documented contract.
	if got.Delivery.Timeout != 30*time.Second ||
		!slices.Equal(got.Delivery.RetrySchedule, []time.Duration{time.Second, 5 * time.Second, 25 * time.Second, 125 * time.Second, 625 * time.Second}) ||
		got.Delivery.UserAgent != "SmartMaintenance/1.0" ||
		got.Webhooks.Source != SourceFile || got.Replication.Slot != "smtm_relay" {
		t.Errorf("defaults differ from the product contract: %+v", got)
	}
}

func TestNullSectionsKeepDefaults(t *testing.T) {
	got, err := Load("testdata/good/null_sections.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	got.source, got.level = nil, nil // where it was read from, for reloads
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("got %+v, want defaults", got)
	}
}

func TestFullConfig(t *testing.T) {
	c, err := Load("testdata/good/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Production || c.Log.Level != "debug" || c.Log.Format != "json" ||
		c.Database.Schema != "relay_v2" || c.Database.StateDatabaseURL() != "postgres://state:other@state.internal/relay" ||
		c.Replication.Slot != "relay_2" || c.Replication.ReconnectMaxBackoff != time.Minute ||
		c.Replication.GroupDelay != 20*time.Millisecond ||
		c.Replication.HeartbeatInterval != 10*time.Second || c.Replication.RetainedWALWarn != 512<<20 ||
		c.Replication.WALCheckInterval != 30*time.Second ||
		c.Delivery.Workers != 16 || c.Delivery.PollInterval != 250*time.Millisecond ||
		c.Delivery.ResponseSnippetBytes != 0 || c.Delivery.DrainTimeout != 0 ||
		!slices.Equal(c.Delivery.RetrySchedule, []time.Duration{2 * time.Second, 10 * time.Second, time.Minute}) ||
		c.Retention.Interval != 10*time.Minute || c.Payload.DefaultTimeZone != "Asia/Jakarta" ||
		!c.Mapping.ReplaceDefaults || c.Webhooks.ReloadInterval != 500*time.Millisecond ||
		c.Observability.Listen != "127.0.0.1:9464" {
		t.Errorf("unexpected values: %+v", c)
	}

	wantRule := mapper.Rule{
		Event:   "task.completed",
		Table:   "tasks",
		On:      []string{"update"},
		When:    `new.status == "completed" && old.status != "completed"`,
		Company: "new.company_id",
		Data:    []map[string]string{{"task_id": "new.id"}, {"Status.Text": "new.status"}},
	}
	if len(c.Mapping.Rules) != 1 || !reflect.DeepEqual(c.Mapping.Rules[0], wantRule) {
		t.Errorf("rules = %+v, want [%+v]", c.Mapping.Rules, wantRule)
	}

	wantHooks := []Webhook{{
		CompanyID: 1,
		Name:      "Slack #maintenance",
		URL:       "https://hooks.example.com/services/T0/B0/xyz",
		Events:    []string{"task.completed", "repair_request.created"},
		Secret:    "0123456789abcdef0123",
		// Header names keep their case and their dots.
		Headers:       map[string]string{"Authorization": "Bearer xyz", "X-Api.Key": "k.1", "x-lower-case": "kept"},
		Description:   "Completed tasks to Slack",
		Active:        false,
		SecretOverlap: 72 * time.Hour,
	}, {
		CompanyID:     2,
		Name:          "Slack #maintenance",
		URL:           "HTTPS://bi.example.com:8443/ingest?source=smtm",
		Events:        []string{"shutdown.reported"},
		Active:        true,           // omitted: defaults to true
		SecretOverlap: 24 * time.Hour, // omitted: the default
	}}
	if !reflect.DeepEqual(c.Webhooks.Endpoints, wantHooks) {
		t.Errorf("endpoints =\n%+v\nwant\n%+v", c.Webhooks.Endpoints, wantHooks)
	}
}

func TestActiveDefaultsToTrue(t *testing.T) {
	path := writeFile(t, `
webhooks:
  endpoints:
    - {company_id: 1, name: a, url: "https://x.example/a", events: [e]}
    - {company_id: 1, name: b, url: "https://x.example/b", events: [e], active: false}
    - {company_id: 1, name: c, url: "https://x.example/c", events: [e], active: true}
    - {company_id: 1, name: d, url: "https://x.example/d", events: [e], active: }
`)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, e := range c.Webhooks.Endpoints {
		got = append(got, e.Active)
	}
	if want := []bool{true, false, true, true}; !slices.Equal(got, want) {
		t.Errorf("active = %v, want %v", got, want)
	}
}

// TestSecretOverlapDefault: secret_overlap is 24h unless the file says;
// "0", 0 and "0s" all mean none.
func TestSecretOverlapDefault(t *testing.T) {
	path := writeFile(t, `
webhooks:
  endpoints:
    - {company_id: 1, name: a, url: "https://x.example/a", events: [e]}
    - {company_id: 1, name: b, url: "https://x.example/b", events: [e], secret_overlap: "0"}
    - {company_id: 1, name: c, url: "https://x.example/c", events: [e], secret_overlap: 0}
    - {company_id: 1, name: d, url: "https://x.example/d", events: [e], secret_overlap: 0s}
    - {company_id: 1, name: e, url: "https://x.example/e", events: [e], secret_overlap: 90m}
    - {company_id: 1, name: f, url: "https://x.example/f", events: [e], secret_overlap: 168h}
    - {company_id: 1, name: g, url: "https://x.example/g", events: [e], secret_overlap: }
`)
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for _, e := range c.Webhooks.Endpoints {
		got = append(got, e.SecretOverlap)
	}
	want := []time.Duration{DefaultSecretOverlap, 0, 0, 0, 90 * time.Minute, MaxSecretOverlap, DefaultSecretOverlap}
	if !slices.Equal(got, want) {
		t.Errorf("secret_overlap = %v, want %v", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a not-exist error", err)
	}
}

func TestAllProblemsReported(t *testing.T) {
	path := writeFile(t, `
log:
  level: loud
delivery:
  workers: 0
  timeout: -1s
webhooks:
  endpoints:
    - {company_id: 0, name: "", url: "ftp://x", events: []}
`)
	_, err := Load(path, nil)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, want := range []string{
		"log.level:", "delivery.workers:", "delivery.timeout:",
		"webhooks.endpoints[0].company_id:", "webhooks.endpoints[0].name:",
		`webhooks.endpoints[0].url: "ftp://x" is not an http(s) URL`, "webhooks.endpoints[0].events:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestWarnings(t *testing.T) {
	// The admin commands' variables, exported as the README says, are no
	// configuration and no warning either.
	c, err := Load("testdata/good/inactive_http.yaml", []string{"RELAY_SERVICE_HOST=10.0.0.7",
		"RELAY_ADMIN_URL=http://127.0.0.1:8081", "RELAY_ADMIN_TOKEN=rat_x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"webhooks.endpoints[0].url: http://localhost:8080/hooks is not HTTPS; payloads may contain personal data",
		"webhooks.endpoints[0]: no secret; receivers cannot verify requests",
		"RELAY_SERVICE_HOST: not a configuration variable; ignored",
	}
	if got := c.Warnings(); !slices.Equal(got, want) {
		t.Errorf("Warnings =\n%q\nwant\n%q", got, want)
	}

	c, err = Load("testdata/good/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"webhooks.endpoints[1]: no secret; receivers cannot verify requests"}
	if got := c.Warnings(); !slices.Equal(got, want) {
		t.Errorf("Warnings(full) = %q, want %q", got, want)
	}

	// No endpoints in the file: the warning says where events go.
	n := Default()
	if got := n.Warnings(); !slices.Equal(got, []string{"webhooks.endpoints: none configured and the admin API is off; no webhook takes an event, so none is delivered or stored"}) {
		t.Errorf("no endpoints, no admin API: %q", got)
	}
	n.Admin.Listen, n.Secrets.Key = ":8081", "k"
	if got := n.Warnings(); !slices.Equal(got, []string{"webhooks.endpoints: none configured; events go only to webhooks created through the admin API"}) {
		t.Errorf("no endpoints, the admin API on: %q", got)
	}

	a := Default()
	a.Webhooks.Source = SourceTable
	a.Admin.Listen = ":8081"
	if got := a.Warnings(); len(got) != 1 || !strings.Contains(got[0], "plain text") {
		t.Errorf("Warnings(admin without secrets.key) = %q", got)
	}
	a.Secrets.Key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	if got := a.Warnings(); len(got) != 0 {
		t.Errorf("Warnings(admin with secrets.key) = %q", got)
	}

	d := Default()
	d.Mapping.ReplaceDefaults = true
	got := d.Warnings()
	if len(got) != 2 || !strings.HasPrefix(got[0], "webhooks.endpoints: none configured") || !strings.HasPrefix(got[1], "mapping.rules: empty") {
		t.Errorf("Warnings(defaults, replace) = %q", got)
	}
}

func TestRedacted(t *testing.T) {
	c, err := Load("testdata/good/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := Load("testdata/good/full.yaml", nil)
	r := c.Redacted()

	if r.Database.URL != "postgres://relay:xxxxx@db.internal:5432/platform" {
		t.Errorf("database.url = %q", r.Database.URL)
	}
	if r.Database.StateURL != "postgres://state:xxxxx@state.internal/relay" {
		t.Errorf("database.state_url = %q", r.Database.StateURL)
	}
	if e := r.Webhooks.Endpoints[0]; e.Secret != Mask || e.Headers["Authorization"] != Mask || e.Headers["X-Api.Key"] != Mask || len(e.Headers) != 3 {
		t.Errorf("endpoint 0 not masked: %+v", e)
	}
	if e := r.Webhooks.Endpoints[1]; e.Secret != "" {
		t.Errorf("empty secret became %q; it should stay empty", e.Secret)
	}
	if r.Webhooks.Endpoints[0].URL != c.Webhooks.Endpoints[0].URL || !reflect.DeepEqual(r.Delivery, c.Delivery) {
		t.Error("Redacted changed values that are not secret")
	}
	if !reflect.DeepEqual(c, orig) {
		t.Error("Redacted changed the original")
	}

	// The copy shares nothing with the original.
	r.Delivery.RetrySchedule[0] = time.Hour
	r.Webhooks.Endpoints[0].Events[0] = "changed"
	r.Webhooks.Endpoints[0].Headers["New"] = "x"
	r.Mapping.Rules[0].On[0] = "delete"
	r.Mapping.Rules[0].Data[0]["task_id"] = "changed"
	if !reflect.DeepEqual(c, orig) {
		t.Error("Redacted copy aliases the original")
	}

	a, err := Load("testdata/good/admin.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	ra := a.Redacted()
	if ra.Secrets.Key != Mask || len(ra.Secrets.PreviousKeys) != 1 || ra.Secrets.PreviousKeys[0] != Mask {
		t.Errorf("secrets not masked: %+v", ra.Secrets)
	}
	if a.Secrets.Key == Mask || a.Secrets.PreviousKeys[0] == Mask {
		t.Error("Redacted changed the original's keys")
	}
	ra.Delivery.AllowNetworks[0] = "changed"
	ra.Admin.Tokens[0].Name = "changed"
	if a.Delivery.AllowNetworks[0] == "changed" || a.Admin.Tokens[0].Name == "changed" {
		t.Error("Redacted copy aliases allow_networks or admin.tokens")
	}
}

func TestRedactDatabaseURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://relay:s3cret@db:5432/x?sslmode=require", "postgres://relay:xxxxx@db:5432/x?sslmode=require"},
		{"postgres://relay@db/x", "postgres://relay@db/x"},
		{"postgres://db/x?user=relay&password=s3cret", "postgres://db/x?password=xxxxx&user=relay"},
		{"host=db user=relay password=s3cret dbname=x", "host=db user=relay password=xxxxx dbname=x"},
		{"host=db password = 's3 cr\\'et' dbname=x", "host=db password = xxxxx dbname=x"},
		{"postgres://relay:bad%zzpass@db/x", Mask},
	}
	for _, tt := range tests {
		if got := redactDatabaseURL(tt.in); got != tt.want {
			t.Errorf("redactDatabaseURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(redactDatabaseURL(tt.in), "s3") {
			t.Errorf("redactDatabaseURL(%q) leaks the password", tt.in)
		}
	}
}

func TestCheckEvents(t *testing.T) {
	c, err := Load("testdata/good/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	known := []string{"task.completed", "repair_request.created", "shutdown.reported", "task.approved"}
	if err := c.CheckEvents(known); err != nil {
		t.Errorf("CheckEvents(all known) = %v", err)
	}
	err = c.CheckEvents([]string{"task.completed", "task.approved", "task.completed"})
	if err == nil {
		t.Fatal("CheckEvents accepted unknown events")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`webhooks.endpoints[0].events[1]: unknown event type "repair_request.created" for webhook "Slack #maintenance" of company 1; known types: task.approved, task.completed`,
		`webhooks.endpoints[1].events[0]: unknown event type "shutdown.reported" for webhook "Slack #maintenance" of company 2; known types: task.approved, task.completed`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("CheckEvents =\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
	if err := Default().CheckEvents(nil); err != nil {
		t.Errorf("CheckEvents without webhooks = %v", err)
	}
}

// TestExampleSetsEveryKey keeps config/example.yaml complete.
func TestExampleSetsEveryKey(t *testing.T) {
	raw := rawYAML(t, "example.yaml")
	for _, key := range allKeys(configType, "") {
		if !hasKey(raw, key) {
			t.Errorf("example.yaml does not set %s", key)
		}
	}
}

// TestDocsDescribeEveryKey keeps docs/CONFIG.md complete.
func TestDocsDescribeEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "CONFIG.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, key := range allKeys(configType, "") {
		if !strings.Contains(doc, "`"+key+"`") {
			t.Errorf("docs/CONFIG.md does not describe `%s`", key)
		}
	}
	for _, v := range EnvVars() {
		if !strings.Contains(doc, "`"+v+"`") {
			t.Errorf("docs/CONFIG.md does not name `%s`", v)
		}
	}
}

// allKeys lists every key path, with "[]" for list elements, e.g.
// "webhooks.endpoints[].url".
func allKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if !f.IsExported() || name == "" {
			continue
		}
		key := joinKey(prefix, name)
		out = append(out, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			out = append(out, allKeys(ft.Elem(), key+"[]")...)
		} else if ft.Kind() == reflect.Struct {
			out = append(out, allKeys(ft, key)...)
		}
	}
	return out
}

// hasKey reports whether key (as allKeys writes it) is set in raw, looking
// at the first element of lists.
func hasKey(raw map[string]any, key string) bool {
	var cur any = raw
	for part := range strings.SplitSeq(key, ".") {
		name, isList := strings.CutSuffix(part, "[]")
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[name]; !ok {
			return false
		}
		if isList {
			l, ok := cur.([]any)
			if !ok || len(l) == 0 {
				return false
			}
			cur = l[0]
		}
	}
	return true
}

func rawYAML(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func writeFile(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckStandardWebhooks(t *testing.T) {
	w := Webhook{CompanyID: 1, Name: "n", URL: "http://x.example/h", Events: []string{"task.completed"}, StandardWebhooks: true}
	if got := CheckWebhook(w, false); len(got) != 1 || !strings.HasPrefix(got[0], "standard_webhooks: needs a secret") {
		t.Errorf("CheckWebhook(standard, no secret) = %q", got)
	}
	w.Secret = "a-secret-0123456789"
	w.Headers = map[string]string{"Webhook-Signature": "v1,x", "webhook-id": "x"}
	got := CheckWebhook(w, false)
	if len(got) != 2 || !strings.HasPrefix(got[0], "headers[Webhook-Signature]: set by the relay when standard_webhooks is on") {
		t.Errorf("CheckWebhook(standard, own webhook-* headers) = %q", got)
	}
	w.StandardWebhooks = false
	if got := CheckWebhook(w, false); len(got) != 0 {
		t.Errorf("CheckWebhook(webhook-* headers, standard off) = %q", got)
	}
}

func TestCheckWebhook(t *testing.T) {
	good := Webhook{CompanyID: 1, Name: "n", URL: "http://x.example/h", Events: []string{"task.completed"}}
	if got := CheckWebhook(good, false); len(got) != 0 {
		t.Errorf("CheckWebhook(good) = %q", got)
	}
	got := CheckWebhook(good, true)
	if len(got) != 1 || !strings.HasPrefix(got[0], `url: "http://x.example/h" is not HTTPS`) {
		t.Errorf("CheckWebhook(http, production) = %q", got)
	}
	bad := Webhook{URL: "ftp://x", Events: []string{"a", "a"}, Secret: "short", Headers: map[string]string{"X-SMTM-Event": "x"}}
	want := []string{
		"company_id: must be > 0, got 0",
		"name: required",
		`url: "ftp://x" is not an http(s) URL`,
		`events[1]: "a" is listed twice`,
		"secret: 5 bytes is too short; use at least 16 (or none)",
		"headers[X-SMTM-Event]: X-Smtm-Event is set by the relay and cannot be overridden",
	}
	if got := CheckWebhook(bad, false); !slices.Equal(got, want) {
		t.Errorf("CheckWebhook(bad) =\n%q\nwant\n%q", got, want)
	}
}

func TestByteSizes(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "100": 100, "100B": 100, "64kB": 64 << 10, "512MB": 512 << 20, " 1GB ": 1 << 30, "2TB": 2 << 40} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GB", "-1GB", "1.5GB", "1 GiB", "99999999999TB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
	c, err := Load("", []string{"RELAY_REPLICATION__RETAINED_WAL_WARN=2GB"})
	if err != nil || c.Replication.RetainedWALWarn != 2<<30 {
		t.Fatalf("from the environment: %v, %d", err, c.Replication.RetainedWALWarn)
	}
}

func TestCheckFilterFields(t *testing.T) {
	c := Default()
	c.Webhooks.Endpoints = []Webhook{
		{CompanyID: 1, Name: "a", Events: []string{"repair_request.created"}, Filter: `data.priority == "critical"`},
		{CompanyID: 1, Name: "b", Events: []string{"repair_request.created", "task.completed"}, Filter: `data.priorty == "critical"`},
		{CompanyID: 1, Name: "c", Events: []string{"task.completed"}},
	}
	fields := map[string][]string{
		"repair_request.created": {"repair_request_id", "priority"},
		"task.completed":         {"task_id"},
		"user.created":           {"user_id", "email"},
	}
	err := c.CheckFilterFields(fields)
	want := `webhooks.endpoints[1].filter: unknown field data.priorty: the subscribed events have data.priority, data.repair_request_id, data.task_id (1:1)`
	if err == nil || err.Error() != want {
		t.Errorf("CheckFilterFields = %v, want %s", err, want)
	}
	c.Webhooks.Endpoints = c.Webhooks.Endpoints[:1]
	if err := c.CheckFilterFields(fields); err != nil {
		t.Errorf("CheckFilterFields of a good filter = %v", err)
	}
}
