package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runIn runs the command line in this process and returns the exit code,
// stdout and stderr.
func runIn(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// commandPaths walks the whole command tree and returns each visible
// command's path below the root (the root itself as nil).
func commandPaths() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if !sub.Hidden {
				walk(sub, append(slices.Clone(path), sub.Name()))
			}
		}
	}
	walk(newRoot(io.Discard, io.Discard), nil)
	return out
}

// TestEveryCommandHasHelp walks the command tree: every command answers
// --help, -h and "relay help ..." with exit 0, its usage and an example,
// and does nothing else (relay token --help used to mint a token).
func TestEveryCommandHasHelp(t *testing.T) {
	paths := commandPaths()
	for _, want := range [][]string{{"run"}, {"check"}, {"events"}, {"webhooks", "list"}, {"webhooks", "refire"},
		{"token"}, {"slot", "drop"}, {"demo"}, {"simulate"}, {"version"}, {"completion", "fish"}, {"help"}} {
		if !slices.ContainsFunc(paths, func(p []string) bool { return slices.Equal(p, want) }) {
			t.Errorf("command %q missing from the tree %v", want, paths)
		}
	}
	for _, path := range paths {
		name := strings.Join(append([]string{"relay"}, path...), " ")
		for _, args := range [][]string{append(slices.Clone(path), "--help"), append(slices.Clone(path), "-h"), append([]string{"help"}, path...)} {
			code, out, errOut := runIn(args...)
			if code != 0 || errOut != "" {
				t.Errorf("relay %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
			}
			if !strings.Contains(out, "Usage:\n  "+name) || !strings.Contains(out, "\nExamples:\n  ") {
				t.Errorf("relay %s: no usage of %q or no example:\n%s", strings.Join(args, " "), name, out)
			}
			if strings.Contains(out, "token:        rat_") {
				t.Errorf("relay %s ran the command:\n%s", strings.Join(args, " "), out)
			}
		}
	}
}

// TestUsageErrors checks the exit codes of mistakes on the command line:
// 2, one line on stderr (a group without its command prints its usage
// there first), nothing on stdout.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"webhooks"}, "relay webhooks: missing command"},
		{[]string{"webhooks", "lst"}, `did you mean "list"?`},
		{[]string{"slot"}, "relay slot: missing command"},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh"`},
		{[]string{"run", "--confg", "x.yaml"}, "unknown flag: --confg"},
		{[]string{"webhooks", "test", "7"}, "--event TYPE is required"},
		{[]string{"webhooks", "update"}, "want one webhook id"},
		{[]string{"webhooks", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"demo", "--duration", "soon"}, `invalid argument "soon" for "--duration"`},
		{[]string{"simulate"}, "usage: relay simulate --database URL"},
		{[]string{"slot", "drop", "--config", filepath.Join("testdata", "none.yaml")}, "none.yaml"},
	} {
		t.Setenv("RELAY_ADMIN_URL", "http://127.0.0.1:1")
		t.Setenv("RELAY_ADMIN_TOKEN", "rat_x")
		code, out, errOut := runIn(tc.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != exitUsage || !strings.Contains(lines[len(lines)-1], tc.want) || out != "" {
			t.Errorf("relay %s: exit %d, want 2 and a last line saying %q; stdout %q, stderr:\n%s", strings.Join(tc.args, " "), code, tc.want, out, errOut)
		}
		if len(lines) != 1 && !strings.Contains(errOut, "Usage:") {
			t.Errorf("relay %s: %d lines on stderr:\n%s", strings.Join(tc.args, " "), len(lines), errOut)
		}
	}
	// A group without its command shows its usage.
	if _, _, errOut := runIn("webhooks"); !strings.Contains(errOut, "Usage:\n  relay webhooks COMMAND") || !strings.Contains(errOut, "deliveries") {
		t.Errorf("relay webhooks: usage not shown:\n%s", errOut)
	}
}

// TestSingleDashFlags checks that flags written with one dash, as Go's flag
// package took them before the move to cobra, still work, and that values
// and arguments after "--" are left alone.
func TestSingleDashFlags(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"demo", "-duration", "30s", "-v"}, []string{"demo", "--duration", "30s", "-v"}},
		{[]string{"demo", "-duration=30s", "-interval", "1s"}, []string{"demo", "--duration=30s", "--interval", "1s"}},
		{[]string{"run", "-config", "relay.yaml", "-cpuprofile", "-memprofile"}, []string{"run", "--config", "relay.yaml", "--cpuprofile", "-memprofile"}},
		{[]string{"webhooks", "create", "-name", "-events", "-json", "-url", "http://x"}, []string{"webhooks", "create", "--name", "-events", "--json", "--url", "http://x"}},
		{[]string{"webhooks", "update", "7", "-name", "x", "--", "-json"}, []string{"webhooks", "update", "7", "--name", "x", "--", "-json"}},
		{[]string{"token", "-help"}, []string{"token", "--help"}},
		{[]string{"check", "-nosuchflag"}, []string{"check", "-nosuchflag"}},
	} {
		if got := normaliseArgs(root, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("normaliseArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}

	// Both spellings through the command: a config file checked offline.
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfg, []byte("webhooks:\n  endpoints: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "--config", cfg, "--offline"}, {"check", "-config", cfg, "-offline"}, {"check", "-config=" + cfg, "-offline=true"}} {
		code, out, errOut := runIn(args...)
		if code != 0 || !strings.Contains(out, "config OK") {
			t.Errorf("relay %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
	// -duration reaches the demo's duration flag: a bad value is its error.
	if code, _, errOut := runIn("demo", "-duration", "soon"); code != 2 || !strings.Contains(errOut, `for "--duration" flag`) {
		t.Errorf("demo -duration soon: exit %d %s", code, errOut)
	}
}

// TestRunRefusesBadConfigBeforeStarting checks that relay run reports a
// config that cannot run (a webhook subscribed to an unknown event, no
// database) before it logs that it starts.
func TestRunRefusesBadConfigBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	unknownEvent := filepath.Join(dir, "unknown-event.yaml")
	os.WriteFile(unknownEvent, []byte(`database:
  url: postgres://relay@127.0.0.1:1/x
webhooks:
  endpoints:
    - {company_id: 1, name: a, url: "https://example.com/a", events: [task.done]}
`), 0o600)
	noDatabase := filepath.Join(dir, "no-database.yaml")
	os.WriteFile(noDatabase, []byte("log:\n  level: info\n"), 0o600)
	for _, tc := range []struct{ path, want string }{
		{unknownEvent, `unknown event type "task.done"`},
		{noDatabase, "database.url is required"},
	} {
		code, out, errOut := runIn("run", "--config", tc.path)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || strings.Contains(out+errOut, "relay starting") {
			t.Errorf("run %s: exit %d, want 2 with %q and no start line:\n%s%s", filepath.Base(tc.path), code, tc.want, out, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runIn("version")
	if code != 0 || !strings.HasPrefix(out, "relay ") || !strings.Contains(out, "module: github.com/smartmaintenance/relay") ||
		!strings.Contains(out, "commit: ") || !strings.Contains(out, "go: "+runtime.Version()) {
		t.Errorf("version: exit %d\n%s", code, out)
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_relay", "zsh": "#compdef relay", "fish": "complete -c relay"} {
		code, out, errOut := runIn("completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, no %q\n%s", shell, code, want, errOut)
		}
	}
	// The scripts ask the binary itself: its answer lists the subcommands.
	code, out, _ := runIn("__complete", "webhooks", "")
	if code != 0 || !strings.Contains(out, "deliveries") || !strings.Contains(out, "refire") {
		t.Errorf("__complete webhooks: exit %d\n%s", code, out)
	}
}

// TestPrintersEscape feeds the human printers answers whose tenant- and
// receiver-chosen fields carry ESC sequences, newlines and tabs: each is
// printed escaped, and a table keeps one line per row.
func TestPrintersEscape(t *testing.T) {
	const evil = "evil\x1b[31m\n99\t1\tforged row\u202e\x1b]0;title\a"
	const escaped = `evil\x1b[31m\n99\t1\tforged row\u202e\x1b]0;title\x07`
	js := func(v any) json.RawMessage {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		print func(io.Writer, json.RawMessage) error
		out   json.RawMessage
		lines int
	}{
		{"list", printList, js(map[string]any{"webhooks": []any{map[string]any{"id": 1, "name": evil, "url": "https://x/" + evil, "events": []string{evil}}}}), 2},
		{"create", printWebhook, js(map[string]any{"webhook": map[string]any{"id": 1, "name": evil, "url": evil, "events": []string{evil}}, "warnings": []string{evil}}), 2},
		{"test", printTest, js(map[string]any{"ok": false, "error": evil, "response_snippet": evil, "delivery_id": evil}), 2},
		{"deliveries", printDeliveries, js(map[string]any{"deliveries": []any{map[string]any{"id": evil, "event_type": evil, "status": "failed",
			"attempts": []any{map[string]any{"attempt": 1, "error": evil}}}}, "next_cursor": evil}), 4},
		{"refire", printRefire, js(map[string]any{"delivery": map[string]any{"id": evil}, "warnings": []string{evil}}), 2},
	} {
		var b bytes.Buffer
		if err := tc.print(&b, tc.out); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s := b.String()
		if strings.ContainsAny(s, "\x1b\a\t\u202e") || !strings.Contains(s, escaped) || strings.Count(s, "\n") != tc.lines {
			t.Errorf("%s: not escaped, or %d lines (want %d):\n%q", tc.name, strings.Count(s, "\n"), tc.lines, s)
		}
	}
}

// TestConfigProblemsOneLineEach checks that a config file with several
// problems is reported one problem a line, as docs/CONFIG.md shows, not
// folded into one line where they run into each other.
func TestConfigProblemsOneLineEach(t *testing.T) {
	path := fileWebhooks(t,
		`{company_id: 1, name: a, url: "https://example.com/a", events: [task.completed], secret: "0123456789abcdef0123", format: markdown}`,
		`{company_id: 1, name: b, url: "https://example.com/b", events: [task.completed], secret: "0123456789abcdef0123", secret_overlap: 192h}`)
	for _, cmd := range []string{"check", "run"} {
		code, _, errOut := runIn(cmd, "--config", path)
		want := []string{
			`relay ` + cmd + `: webhooks.endpoints[0].format: "markdown" is not a payload format; use one of raw, slack, teams`,
			`relay ` + cmd + `: webhooks.endpoints[1].secret_overlap: 192h0m0s is out of range; from 0 (none) to 168h0m0s (7 days)`,
		}
		if got := strings.Split(strings.TrimSpace(errOut), "\n"); code != exitUsage || !slices.Equal(got, want) {
			t.Errorf("%s: exit %d, want %d; stderr:\n%s\nwant:\n%s", cmd, code, exitUsage, errOut, strings.Join(want, "\n"))
		}
	}
}

// TestCheckRefusesFilterOfUnknownField checks that a config file's webhook
// whose filter reads a data field none of its events has is refused before
// the relay starts, as the admin API refuses it, rather than saved as a
// filter that never passes.
func TestCheckRefusesFilterOfUnknownField(t *testing.T) {
	path := fileWebhooks(t,
		`{company_id: 1, name: a, url: "https://example.com/a", events: [repair_request.created], secret: "0123456789abcdef0123", filter: 'data.priority == "critical"'}`,
		`{company_id: 1, name: b, url: "https://example.com/b", events: [repair_request.created], secret: "0123456789abcdef0123", filter: 'data.priorty == "critical"'}`)
	want := `webhooks.endpoints[1].filter: unknown field data.priorty: the subscribed events have data.asset_id, data.priority, data.repair_request_id, data.requested_by, data.status, data.title (1:1)`
	for _, cmd := range []string{"check", "run"} {
		code, out, errOut := runIn(cmd, "--config", path)
		if code != exitUsage || !strings.Contains(errOut, want) || strings.Contains(errOut, "endpoints[0]") {
			t.Errorf("%s: exit %d, want %d with\n%s\ngot:\n%s%s", cmd, code, exitUsage, want, out, errOut)
		}
	}
}

// fileWebhooks writes a config file whose webhooks come from the file,
// one endpoint (a YAML flow mapping) a line, and returns its path.
func fileWebhooks(t *testing.T, endpoints ...string) string {
	t.Helper()
	text := "database:\n  url: postgres://relay@127.0.0.1:1/x\nwebhooks:\n  source: file\n  endpoints:\n"
	for _, e := range endpoints {
		text += "    - " + e + "\n"
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
