package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestSecretKey(t *testing.T) {
	for key, want := range map[string]bool{
		"database.url":                                 true,
		"database.state_url":                           true,
		"database.schema":                              false,
		"secrets.key":                                  true,
		"secrets.previous_keys":                        true,
		"secrets.previous_keys[2]":                     true,
		"admin.tokens[0].token_sha256":                 true,
		"admin.tokens[0].name":                         false,
		"webhooks.endpoints[3].secret":                 true,
		"webhooks.endpoints[3].headers":                true,
		"webhooks.endpoints[3].headers[Authorization]": true,
		"webhooks.endpoints[3].headers[X-A.b[c]":       true,
		"webhooks.endpoints[3].url":                    false,
		"webhooks.endpoints[3].name":                   false,
		"delivery.workers":                             false,
		"no.such.key":                                  false,
		"(top level)":                                  false,
	} {
		if got := SecretKey(key); got != want {
			t.Errorf("SecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// TestSecretKeysAreRedacted: every field tagged secret is one Redacted
// masks, so that printing the config and its errors agree on what is
// secret.
func TestSecretKeysAreRedacted(t *testing.T) {
	c := Default()
	c.Database.URL, c.Database.StateURL = "postgres://u:s3cr3t-a@h/db", "postgres://u:s3cr3t-b@h/db"
	c.Secrets.Key, c.Secrets.PreviousKeys = "s3cr3t-c", []string{"s3cr3t-d"}
	c.Webhooks.Endpoints = []Webhook{{Secret: "s3cr3t-e", Headers: map[string]string{"A": "s3cr3t-f"}}}
	c.Admin.Tokens = []AdminToken{{TokenSHA256: "s3cr3t-g"}}
	var tagged []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || tagName(f) == "" {
				continue
			}
			key := joinKey(path, tagName(f))
			if f.Tag.Get("secret") == "true" {
				tagged = append(tagged, key)
			}
			switch ft := f.Type; {
			case ft.Kind() == reflect.Struct:
				walk(ft, key)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), key+"[0]")
			}
		}
	}
	walk(configType, "")
	if len(tagged) != 7 {
		t.Errorf("secret keys %v; set a value for each new one above", tagged)
	}
	r := c.Redacted()
	printed := strings.Join([]string{r.Database.URL, r.Database.StateURL, r.Secrets.Key, strings.Join(r.Secrets.PreviousKeys, ","),
		r.Webhooks.Endpoints[0].Secret, r.Webhooks.Endpoints[0].Headers["A"]}, " ")
	for _, v := range []string{"s3cr3t-a", "s3cr3t-b", "s3cr3t-c", "s3cr3t-d", "s3cr3t-e", "s3cr3t-f"} {
		if strings.Contains(printed, v) {
			t.Errorf("Redacted keeps %q", v)
		}
	}
}

// TestSecretEnvValuesNotPrinted: secret keys set from the environment with
// a bad value name the variable and never print the value.
func TestSecretEnvValuesNotPrinted(t *testing.T) {
	for _, tc := range []struct{ env, want, value string }{
		{"RELAY_DATABASE__URL=mysql://relay:envpw-123@db/x", `database.url: scheme "mysql"`, "envpw-123"},
		{"RELAY_DATABASE__STATE_URL=postgres://relay:envpw-456%zz@db/x", "database.state_url: cannot be parsed", "envpw-456"},
		{"RELAY_SECRETS__KEY=not-a-key-env-789", "secrets.key: is not base64", "not-a-key-env-789"},
		{"RELAY_SECRETS__PREVIOUS_KEYS=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,short-env-key", "secrets.previous_keys[1]: is not base64", "short-env-key"},
	} {
		env := []string{tc.env}
		if !strings.HasPrefix(tc.env, "RELAY_SECRETS__KEY") {
			env = append(env, "RELAY_SECRETS__KEY=AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=")
		}
		_, err := Load("", env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.env, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), tc.value) {
			t.Errorf("%s: error prints the value: %v", tc.env, err)
		}
	}
}
