package mapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/event"
)

// goldenCases make one payload of every default event type. Their bodies
// are kept in testdata/golden/<event>.json and shown in docs/EVENTS.md.
var goldenCases = []struct {
	event string
	c     *event.Change
	prior event.Row
}{
	{"task.assigned", update("tasks", with(taskRow, "status", "assigned")),
		event.Row{"status": "open", "technician_id": nil}},
	{"task.completed", update("tasks", with(taskRow, "status", "completed", "completed_at", "2026-04-24T02:15:30Z")),
		event.Row{"status": "in_progress", "technician_id": int64(42)}},
	{"task.approved", update("tasks", with(taskRow, "status", "approved", "completed_at", "2026-04-24T02:15:30Z", "reviewed_by", int64(2), "reviewed_at", "2026-04-24T02:15:30Z")),
		event.Row{"status": "completed", "technician_id": int64(42)}},
	{"task.rejected", update("tasks", with(taskRow, "status", "rejected", "completed_at", "2026-04-24T01:40:00Z", "reviewed_by", int64(2), "reviewed_at", "2026-04-24T02:15:30Z", "rejection_reason", "Photo of the new belt is missing")),
		event.Row{"status": "completed", "technician_id": int64(42)}},
	{"repair_request.created", insert("repair_requests", repairRow), nil},
	{"repair_request.updated", update("repair_requests", with(repairRow, "status", "in_review", "updated_by", int64(2))),
		event.Row{"status": "open"}},
	{"shutdown.reported", insert("shutdowns", shutdownRow), nil},
	{"shutdown.resolved", update("shutdowns", with(shutdownRow, "status", "resolved", "resolved_by", int64(6), "resolution", "Cooling fan replaced", "resolved_at", "2026-04-24T02:15:30Z")),
		event.Row{"status": "open"}},
	{"user.created", insert("users", userRow), nil},
	{"user.deactivated", update("users", with(userRow, "active", false, "deactivated_by", int64(5), "deactivated_at", "2026-04-24T02:15:30Z")),
		event.Row{"active": true}},
	{"audit.exported", insert("activity_log_exports", exportRow), nil},
}

func goldenPath(event string) string { return filepath.Join("testdata", "golden", event+".json") }

// TestGolden compares every default event's payload byte for byte with its
// golden file. go test -run Golden -update rewrites the files.
func TestGolden(t *testing.T) {
	m := newDefault(t)
	var covered []string
	for _, gc := range goldenCases {
		t.Run(gc.event, func(t *testing.T) {
			covered = append(covered, gc.event)
			drafts, _, err := m.Map(gc.c, gc.prior, directory())
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(drafts, func(d Draft) bool { return d.Type == gc.event })
			if i < 0 {
				t.Fatalf("%s did not fire (got %v)", gc.event, types(drafts))
			}
			body := drafts[i].Body
			if *rewrite {
				if err := os.WriteFile(goldenPath(gc.event), body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenPath(gc.event))
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("payload differs from %s\n got %s\nwant %s", goldenPath(gc.event), body, want)
			}
			if !strings.HasPrefix(string(body), `{"event":"`+gc.event+`","timestamp":"`) || bytes.HasSuffix(body, []byte("\n")) {
				t.Errorf("payload shape: %s", body)
			}
		})
	}
	slices.Sort(covered)
	if !slices.Equal(covered, defaultEvents) {
		t.Errorf("golden cases cover %v, want every default event %v", covered, defaultEvents)
	}
}

// The parts of docs/EVENTS.md that are generated from rules.yaml and the
// golden files sit between these markers, one pair per event type.
var docBlockRE = regexp.MustCompile(`(?s)<!-- begin generated: ([a-z_.]+) -->\n.*?<!-- end generated: ([a-z_.]+) -->\n`)

// TestEventsDoc keeps docs/EVENTS.md and the README's event catalogue in
// step with the default rules and the golden payloads. go test -run
// EventsDoc -update rewrites the generated blocks.
func TestEventsDoc(t *testing.T) {
	checkDoc(t, "../docs/EVENTS.md", docBlockRE, docBlock)
	checkDoc(t, "../README.md", readmeBlockRE, readmeBlock)
}

// The README's catalogue is generated the same way, in a shorter form.
var readmeBlockRE = regexp.MustCompile(`(?s)<!-- begin readme: ([a-z_.]+) -->\n.*?<!-- end readme: ([a-z_.]+) -->\n`)

func checkDoc(t *testing.T, path string, re *regexp.Regexp, render func(Rule) ([]byte, error)) {
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]Rule{}
	for _, r := range DefaultRules() {
		rules[r.Event] = r
	}
	var seen []string
	var failed bool
	out := re.ReplaceAllFunc(doc, func(block []byte) []byte {
		m := re.FindSubmatch(block)
		name := string(m[1])
		if string(m[2]) != name {
			t.Errorf("%s: block %s ends as %s", path, name, m[2])
		}
		seen = append(seen, name)
		r, ok := rules[name]
		if !ok {
			t.Errorf("%s describes %s, which is not a default event", path, name)
			return block
		}
		want, err := render(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(block, want) {
			failed = true
			if !*rewrite {
				t.Errorf("%s: block for %s is stale (run go test ./mapper -update)\n got:\n%s\nwant:\n%s", path, name, block, want)
			}
		}
		return want
	})
	slices.Sort(seen)
	if !slices.Equal(seen, defaultEvents) {
		t.Errorf("%s describes %v, want every default event %v", path, seen, defaultEvents)
	}
	if failed && *rewrite {
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readmeBlock renders a rule and its golden payload for the README.
func readmeBlock(r Rule) ([]byte, error) {
	pretty, on, err := prettyGolden(r)
	if err != nil {
		return nil, err
	}
	when := "always"
	if r.When != "" {
		when = "`" + r.When + "`"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<!-- begin readme: %s -->\n", r.Event)
	fmt.Fprintf(&b, "#### `%s`\n\nTable `%s`, on %s, when %s.\n\n```json\n", r.Event, r.Table, strings.Join(on, ", "), when)
	b.Write(pretty)
	b.WriteString("\n```\n")
	fmt.Fprintf(&b, "<!-- end readme: %s -->\n", r.Event)
	return b.Bytes(), nil
}

// prettyGolden returns a rule's golden payload indented, and its operations
// with the default filled in.
func prettyGolden(r Rule) ([]byte, []string, error) {
	golden, err := os.ReadFile(goldenPath(r.Event))
	if err != nil {
		return nil, nil, err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, golden, "", "  "); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", goldenPath(r.Event), err)
	}
	on := r.On
	if len(on) == 0 {
		on = []string{"insert", "update"}
	}
	return pretty.Bytes(), on, nil
}

// docBlock renders a rule and its golden payload for docs/EVENTS.md.
func docBlock(r Rule) ([]byte, error) {
	pretty, on, err := prettyGolden(r)
	if err != nil {
		return nil, err
	}
	company := r.Company
	if company == "" {
		company = "new.company_id"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<!-- begin generated: %s -->\n", r.Event)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Table | `%s` |\n", r.Table)
	fmt.Fprintf(&b, "| On | %s |\n", strings.Join(on, ", "))
	if r.When != "" {
		fmt.Fprintf(&b, "| When | `%s` |\n", cell(r.When))
	} else {
		fmt.Fprintf(&b, "| When | always |\n")
	}
	fmt.Fprintf(&b, "| Company | `%s` |\n", cell(company))
	b.WriteString("\n| Data field | Expression |\n|---|---|\n")
	for _, d := range r.Data {
		for name, src := range d {
			fmt.Fprintf(&b, "| `%s` | `%s` |\n", name, cell(src))
		}
	}
	b.WriteString("\nExample payload:\n\n```json\n")
	b.Write(pretty)
	b.WriteString("\n```\n")
	fmt.Fprintf(&b, "<!-- end generated: %s -->\n", r.Event)
	return b.Bytes(), nil
}

// cell escapes the pipes of an expression for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
