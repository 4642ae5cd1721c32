package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvOverrides(t *testing.T) {
	path := writeFile(t, `
log:
  level: warn
delivery:
  workers: 10
  per_webhook: 2
webhooks:
  endpoints:
    - company_id: 1
      name: Slack
      url: https://hooks.example.com/a
      events: [task.completed]
      secret: "0123456789abcdef"
      headers: {X-Api-Key: abc, authorization-Extra: def}
`)
	env := []string{
		"PATH=/usr/bin",
		"RELAY_PRODUCTION=true",
		"RELAY_LOG__LEVEL=debug",
		"RELAY_DATABASE__URL=postgres://relay:pw@db/platform",
		"RELAY_DATABASE__STATE_URL=postgres://relay:pw@state/relay",
		"RELAY_DELIVERY__WORKERS=20",
		"RELAY_DELIVERY__PER_WEBHOOK=4",
		"RELAY_DELIVERY__TIMEOUT=45s",
		"RELAY_DELIVERY__RETRY_SCHEDULE=2s, 30s,10m",
		"RELAY_DELIVERY__USER_AGENT=Relay=1",
		"RELAY_RETENTION__FAILED=2160h",
		"RELAY_WEBHOOKS__RELOAD_INTERVAL=2s",
		"RELAY_OBSERVABILITY__LISTEN=:9464",
		"relay_log__format=json", // the prefix is case-sensitive
	}
	c, err := Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Production || c.Log.Level != "debug" || c.Log.Format != "text" ||
		c.Database.URL != "postgres://relay:pw@db/platform" || c.Database.StateURL != "postgres://relay:pw@state/relay" ||
		c.Delivery.Workers != 20 || c.Delivery.PerWebhook != 4 || c.Delivery.Timeout != 45*time.Second ||
		c.Delivery.UserAgent != "Relay=1" || c.Retention.Failed != 2160*time.Hour ||
		c.Webhooks.ReloadInterval != 2*time.Second || c.Observability.Listen != ":9464" {
		t.Errorf("environment not applied: %+v", c)
	}
	if want := []time.Duration{2 * time.Second, 30 * time.Second, 10 * time.Minute}; !slices.Equal(c.Delivery.RetrySchedule, want) {
		t.Errorf("retry_schedule = %v, want %v", c.Delivery.RetrySchedule, want)
	}
	// Lowercasing applies to variable names only; header names from the
	// file keep their case.
	if h := c.Webhooks.Endpoints[0].Headers; h["X-Api-Key"] != "abc" || h["authorization-Extra"] != "def" {
		t.Errorf("headers = %v", h)
	}
	if len(c.Warnings()) != 0 {
		t.Errorf("Warnings = %q", c.Warnings())
	}
}

func TestEnvEmptyList(t *testing.T) {
	c, err := Load("", []string{"RELAY_DELIVERY__RETRY_SCHEDULE="})
	if err != nil {
		t.Fatal(err)
	}
	if c.Delivery.RetrySchedule == nil || len(c.Delivery.RetrySchedule) != 0 {
		t.Errorf("retry_schedule = %#v, want empty", c.Delivery.RetrySchedule)
	}
}

func TestEnvIsValidated(t *testing.T) {
	// production from the environment applies to URLs from the file.
	_, err := Load("testdata/good/inactive_http.yaml", []string{"RELAY_PRODUCTION=1"})
	if err == nil || !strings.Contains(err.Error(), `webhooks.endpoints[0].url: "http://localhost:8080/hooks" is not HTTPS`) {
		t.Errorf("Load = %v", err)
	}
	_, err = Load("", []string{"RELAY_DELIVERY__RETRY_SCHEDULE=1s,0s"})
	if err == nil || !strings.Contains(err.Error(), "delivery.retry_schedule[1]: must be > 0") {
		t.Errorf("Load = %v", err)
	}
}

func TestEnvErrors(t *testing.T) {
	tests := []struct{ env, want string }{
		{"RELAY_DELIVERY__WORKERS=many", `RELAY_DELIVERY__WORKERS: "many" is not an integer (delivery.workers)`},
		{"RELAY_DELIVERY__TIMEOUT=30", `RELAY_DELIVERY__TIMEOUT: "30" is not a duration`},
		{"RELAY_DELIVERY__RETRY_SCHEDULE=1s,soon", `RELAY_DELIVERY__RETRY_SCHEDULE: "soon" is not a duration`},
		{"RELAY_PRODUCTION=yes please", `RELAY_PRODUCTION: "yes please" is not true or false (production)`},
		{"RELAY_DELIVERY__WORKER=3", `RELAY_DELIVERY__WORKER: delivery.worker is not a configuration key (did you mean "delivery.workers"?)`},
		{"RELAY_DELIVERY_WORKERS=3", `RELAY_DELIVERY_WORKERS: not a configuration variable (did you mean RELAY_DELIVERY__WORKERS?`},
		{"RELAY_WEBHOOKS__ENDPOINTS=x", `RELAY_WEBHOOKS__ENDPOINTS: cannot be set from the environment; use the config file (webhooks.endpoints)`},
		{"RELAY_MAPPING__RULES=x", `RELAY_MAPPING__RULES: cannot be set from the environment`},
		{"RELAY_LOG=debug", `RELAY_LOG: cannot be set from the environment`},
		{"RELAY_PRODUCTION__ENABLED=true", `RELAY_PRODUCTION__ENABLED: production is not a section`},
	}
	for _, tt := range tests {
		_, err := Load("", []string{tt.env})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%s) = %v, want error containing %q", tt.env, err, tt.want)
		}
	}
}

func TestEnvFromArgumentOnly(t *testing.T) {
	t.Setenv("RELAY_LOG__LEVEL", "debug")
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "info" {
		t.Errorf("Load read the process environment: log.level = %q", c.Log.Level)
	}
}

func TestEnvVars(t *testing.T) {
	vars := EnvVars()
	for _, want := range []string{"RELAY_PRODUCTION", "RELAY_DATABASE__URL", "RELAY_DELIVERY__PER_WEBHOOK", "RELAY_DELIVERY__RETRY_SCHEDULE", "RELAY_WEBHOOKS__RELOAD_INTERVAL", "RELAY_MAPPING__REPLACE_DEFAULTS"} {
		if !slices.Contains(vars, want) {
			t.Errorf("EnvVars lacks %s", want)
		}
	}
	for _, v := range vars {
		if strings.Contains(v, "ENDPOINTS") || strings.Contains(v, "RULES") {
			t.Errorf("EnvVars lists %s, which cannot be set from the environment", v)
		}
	}
}
