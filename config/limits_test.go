package config

import (
	"strings"
	"testing"
)

// TestCheckWebhookRefusesUnsafeInput: control characters, bidi overrides,
// NUL and oversized values in a webhook's fields are refused with a problem
// naming the field, and a problem never quotes the secret or a header value.
func TestCheckWebhookRefusesUnsafeInput(t *testing.T) {
	good := func() Webhook {
		return Webhook{CompanyID: 1, Name: "n", URL: "https://x.example/h", Events: []string{"task.completed"},
			Secret: "0123456789abcdef-secret", Headers: map[string]string{"Authorization": "Bearer t"}}
	}
	cases := []struct {
		name  string
		edit  func(*Webhook)
		field string // the problem starts with it
	}{
		{"name with a newline", func(w *Webhook) { w.Name = "a\nb" }, "name"},
		{"name with ESC", func(w *Webhook) { w.Name = "a\x1b[31mred" }, "name"},
		{"name with NUL", func(w *Webhook) { w.Name = "a\x00" }, "name"},
		{"name with DEL", func(w *Webhook) { w.Name = "a\x7f" }, "name"},
		{"name with a C1 control", func(w *Webhook) { w.Name = "a\u009bb" }, "name"},
		{"name with a tab", func(w *Webhook) { w.Name = "a\tb" }, "name"},
		{"name with a bidi override", func(w *Webhook) { w.Name = "invoice\u202etxt.exe" }, "name"},
		{"name with a bidi isolate", func(w *Webhook) { w.Name = "a\u2066b\u2069" }, "name"},
		{"name of invalid UTF-8", func(w *Webhook) { w.Name = "a\xffb" }, "name"},
		{"name with a zero-width space", func(w *Webhook) { w.Name = "My receiver\u200b" }, "name"},
		{"name with a word joiner", func(w *Webhook) { w.Name = "My\u2060receiver" }, "name"},
		{"name with a byte order mark", func(w *Webhook) { w.Name = "\ufeffMy receiver" }, "name"},
		{"name with a soft hyphen", func(w *Webhook) { w.Name = "My re\u00adceiver" }, "name"},
		{"name with a no-break space", func(w *Webhook) { w.Name = "My\u00a0receiver" }, "name"},
		{"name with a thin space", func(w *Webhook) { w.Name = "My\u2009receiver" }, "name"},
		{"name of 100 KB", func(w *Webhook) { w.Name = strings.Repeat("n", 100<<10) }, "name"},
		{"name of 201 characters", func(w *Webhook) { w.Name = strings.Repeat("é", 201) }, "name"},
		{"description with a newline", func(w *Webhook) { w.Description = "line\nline" }, "description"},
		{"description with NUL", func(w *Webhook) { w.Description = "\x00" }, "description"},
		{"description with a bidi embedding", func(w *Webhook) { w.Description = "\u202a" }, "description"},
		{"description too long", func(w *Webhook) { w.Description = strings.Repeat("d", MaxDescriptionChars+1) }, "description"},
		{"secret with NUL", func(w *Webhook) { w.Secret = "0123456789abcdef\x00" }, "secret"},
		{"secret with a newline", func(w *Webhook) { w.Secret = "0123456789abcdef\n" }, "secret"},
		{"secret of invalid UTF-8", func(w *Webhook) { w.Secret = "0123456789abcdef\xff" }, "secret"},
		{"secret too long", func(w *Webhook) { w.Secret = strings.Repeat("s", MaxSecretBytes+1) }, "secret"},
		{"port 0", func(w *Webhook) { w.URL = "https://x.example:0/h" }, "url"},
		{"port 99999", func(w *Webhook) { w.URL = "https://x.example:99999/h" }, "url"},
		{"empty port", func(w *Webhook) { w.URL = "https://x.example:/h" }, "url"},
		{"label of 300 characters", func(w *Webhook) { w.URL = "https://" + strings.Repeat("a", 300) + ".example/h" }, "url"},
		{"label of 64 characters", func(w *Webhook) { w.URL = "https://" + strings.Repeat("a", 64) + ".example/h" }, "url"},
		{"host name of 254 characters", func(w *Webhook) { w.URL = "https://" + strings.Repeat("abcdefghi.", 25) + "exam/h" }, "url"},
		{"empty label", func(w *Webhook) { w.URL = "https://a..example/h" }, "url"},
		{"odd character in the host", func(w *Webhook) { w.URL = "https://a!b.example/h" }, "url"},
		{"URL too long", func(w *Webhook) { w.URL = "https://x.example/" + strings.Repeat("p", MaxURLBytes) }, "url"},
		{"URL with a control character", func(w *Webhook) { w.URL = "https://x.example/\x1b" }, "url"},
		{"too many events", func(w *Webhook) {
			w.Events = nil
			for i := range MaxEvents + 1 {
				w.Events = append(w.Events, strings.Repeat("e", i+1))
			}
		}, "events"},
		{"header name not a token", func(w *Webhook) { w.Headers = map[string]string{"X Bad": "v"} }, `headers[X Bad]`},
		{"header name with NUL", func(w *Webhook) { w.Headers = map[string]string{"X\x00": "v"} }, `headers["X\x00"]`},
		{"header name too long", func(w *Webhook) { w.Headers = map[string]string{strings.Repeat("h", 300): "v"} }, "headers["},
		{"header value with CR LF", func(w *Webhook) { w.Headers = map[string]string{"X-A": "v\r\nX-B: w"} }, "headers[X-A]"},
		{"header value with NUL", func(w *Webhook) { w.Headers = map[string]string{"X-A": "v\x00"} }, "headers[X-A]"},
		{"header value too long", func(w *Webhook) { w.Headers = map[string]string{"X-A": strings.Repeat("v", MaxHeaderValueBytes+1)} }, "headers[X-A]"},
		{"too many headers", func(w *Webhook) {
			w.Headers = map[string]string{}
			for i := range MaxHeaders + 1 {
				w.Headers["X-H"+strings.Repeat("h", i)] = "v"
			}
		}, "headers"},
		{"headers too large together", func(w *Webhook) {
			w.Headers = map[string]string{}
			for i := range 5 {
				w.Headers["X-H"+strings.Repeat("h", i)] = strings.Repeat("v", MaxHeaderValueBytes)
			}
		}, "headers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := good()
			c.edit(&w)
			got := CheckWebhook(w, false)
			if len(got) == 0 {
				t.Fatalf("accepted")
			}
			found := false
			for _, p := range got {
				if strings.HasPrefix(p, c.field) {
					found = true
				}
				if strings.Contains(p, "0123456789abcdef") || strings.Contains(p, "Bearer") {
					t.Errorf("problem quotes a secret or header value: %q", p)
				}
				if strings.ContainsFunc(p, unsafeRune) {
					t.Errorf("problem carries a control character: %q", p)
				}
			}
			if !found {
				t.Errorf("problems %q do not name %s", got, c.field)
			}
		})
	}
	// What stays accepted: the limits themselves, names in any script,
	// IDN and address-literal hosts, a trailing dot.
	for _, edit := range []func(*Webhook){
		func(w *Webhook) { w.Name = strings.Repeat("é", MaxWebhookNameChars) },
		func(w *Webhook) { w.Name = "Pemberitahuan tugas — ระบบ 工单 שלום" },
		func(w *Webhook) {
			w.Name = "Technician 👩\u200d🔧 alerts, می\u200cخواهم, 作業\u3000通知"
		},
		func(w *Webhook) { w.Description = "Owner:\u00a0IT" },
		func(w *Webhook) { w.Description = strings.Repeat("d", MaxDescriptionChars) },
		func(w *Webhook) { w.Secret = strings.Repeat("s", MaxSecretBytes) },
		func(w *Webhook) { w.URL = "https://" + strings.Repeat("a", 63) + ".example:65535/h" },
		func(w *Webhook) { w.URL = "https://bücher.example./h" },
		func(w *Webhook) { w.URL = "https://[2001:db8::1]:8443/h" },
		func(w *Webhook) { w.URL = "https://203.0.113.7:1/h" },
		func(w *Webhook) { w.URL = "https://my_host.example/h" },
		func(w *Webhook) { w.Headers = map[string]string{"X-Tab": "a\tb"} },
	} {
		w := good()
		edit(&w)
		if got := CheckWebhook(w, false); len(got) != 0 {
			t.Errorf("%+v refused: %q", w.Name, got)
		}
	}
}

// TestWebhookURLRefusesBidiAndC1Controls: a URL carrying a bidirectional
// control (which makes "https://example.com/\u202egnp.exe" read as a .png)
// or a C1 control anywhere is refused with one line that names the
// character, where it is and how to send it (percent-encoded, which is
// accepted).
func TestWebhookURLRefusesBidiAndC1Controls(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://example.com/\u202egnp.exe", "contains the bidirectional control character U+202E at byte 20; percent-encode it (%E2%80%AE)"},
		{"https://example.com/a?file=\u202dx", "bidirectional control character U+202D at byte 27"},
		{"https://example.com/a#\u2066x\u2069", "bidirectional control character U+2066 at byte 22"},
		{"https://example.com/\u200fa", "bidirectional control character U+200F"},
		{"https://example.com/\u200ea", "bidirectional control character U+200E"},
		{"https://example.com/\u061ca", "bidirectional control character U+061C"},
		{"https://example.com/\u202a", "bidirectional control character U+202A"},
		{"https://example.com/csi\u009b31m", "contains the control character U+009B at byte 23; percent-encode it (%C2%9B)"},
		{"https://example.com/\u0085", "control character U+0085"},
		{"https://example.com/\x1b[2J", "control character U+001B"},
		{"https://example.com/\x7f", "control character U+007F"},
	} {
		_, problem := checkWebhookURL(tc.url)
		if !strings.Contains(problem, tc.want) || strings.Contains(problem, "\n") || strings.ContainsFunc(problem, unsafeRune) {
			t.Errorf("%+q: problem %q, want one line with %q", tc.url, problem, tc.want)
		}
	}
	w := Webhook{CompanyID: 1, Name: "n", URL: "https://example.com/\u202egnp.exe", Events: []string{"task.completed"}}
	if got := CheckWebhook(w, false); len(got) != 1 || !strings.HasPrefix(got[0], "url: contains the bidirectional control character U+202E") {
		t.Errorf("CheckWebhook: %q", got)
	}
	// Percent-encoded, the same bytes are accepted and read as what they are.
	for _, ok := range []string{"https://example.com/%E2%80%AEgnp.exe", "https://example.com/csi%C2%9B31m", "https://example.com/ﾟ日本語/שלום?q=ü"} {
		if _, problem := checkWebhookURL(ok); problem != "" {
			t.Errorf("%q refused: %s", ok, problem)
		}
	}
}

// TestFileWebhooksRefuseControlCharacters: Validate applies the same rules
// to webhooks of the config file, naming the endpoint's field.
func TestFileWebhooksRefuseControlCharacters(t *testing.T) {
	cfg := Default()
	cfg.Webhooks.Endpoints = []Webhook{{CompanyID: 1, Name: "ok\x1b]0;pwned\x07", URL: "https://x.example/h",
		Events: []string{"task.completed"}, Description: "two\nlines"}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"webhooks.endpoints[0].name: contains the control character U+001B",
		"webhooks.endpoints[0].description: contains the control character U+000A"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestRuleChecks: Load (and so `relay check`) refuses a rule whose when
// cannot be true or false and a rule whose table cannot be a table, naming
// the rule's key.
func TestRuleChecks(t *testing.T) {
	for rule, want := range map[string]string{
		"{event: a.b, table: tasks, when: new.id + 1}":             "mapping.rules[0].when: the result is not true or false",
		`{event: a.b, table: tasks, when: '"yes"'}`:                "mapping.rules[0].when: expected bool, but got string",
		"{event: a.b, table: public.tasks}":                        "mapping.rules[0].table: \"public.tasks\" is schema-qualified",
		"{event: a.b, table: Tasks}":                               "mapping.rules[0].table: \"Tasks\": PostgreSQL folds unquoted names to lower case",
		"{event: a.b, table: 'tasks; drop table x'}":               "mapping.rules[0].table: \"tasks; drop table x\" cannot be a table name",
		"{event: a.b, table: tasks, data: [{x: 'new.id +'}]}":      "mapping.rules[0].data.x: ",
		"{event: a.b, table: tasks, company: 'old', on: [delete]}": "mapping.rules[0].company: ",
	} {
		path := writeFile(t, "mapping:\n  rules:\n    - "+rule+"\n")
		_, err := Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", rule, err, want)
		}
	}
	path := writeFile(t, "mapping:\n  rules:\n    - {event: a.b, table: tasks, when: new.count > 0 && new.status == \"x\", data: [{n: new.count + 1}]}\n")
	if _, err := Load(path, nil); err != nil {
		t.Errorf("a good rule: %v", err)
	}
}
