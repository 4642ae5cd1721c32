package mapper

import (
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/event"
)

// TestWhenMustBeBoolean: a When that cannot be true or false is refused
// when the rules are compiled, also where its type depends on the row
// (new.x + 1 is a number or a text, never a boolean); conditions pass.
func TestWhenMustBeBoolean(t *testing.T) {
	for _, when := range []string{
		`new.id + 1`, `new.a - new.b`, `new.count * 2`, `new.a / 2`, `new.a % 2`, `new.a ** 2`,
		`new.title + "x"`, `-new.id`, `1 ?? new.b + 1`, `new.ok ? 1 : 2`, `new.a ? "x" : "y"`,
		`"yes"`, `1 + 1`, `len(new.title)`, `upper(new.x)`, `[new.a]`, `{"a": new.a}`, `nil`, `1..3`, `new.list[1:2]`,
	} {
		_, err := New([]Rule{{Event: "e", Table: "t", When: when}}, Options{})
		var re *RuleError
		if err == nil || !strings.Contains(err.Error(), "when") {
			t.Errorf("when: %s accepted (%v)", when, err)
		} else if errorsAs(err, &re) && re.Field != "when" {
			t.Errorf("when: %s: field %q", when, re.Field)
		}
	}
	for _, when := range []string{
		`new.active`, `not new.active`, `new.id > 1`, `new.status == "completed" && old.status != "completed"`,
		`new.a ?? false`, `new.a in [1, 2]`, `"x" in new`, `new.ok ? new.a : false`, `new.title startsWith "A"`,
	} {
		if _, err := New([]Rule{{Event: "e", Table: "t", When: when}}, Options{}); err != nil {
			t.Errorf("when: %s refused: %v", when, err)
		}
	}
}

// TestTableNames: a rule's table must be a name a table of schema public
// can have as the relay sees it.
func TestTableNames(t *testing.T) {
	for table, want := range map[string]string{
		"public.tasks":            `write the table's name alone (tasks)`,
		"Tasks":                   `write "tasks"`,
		"tasks; DROP TABLE users": "cannot be a table name",
		"task list":               "cannot be a table name",
		"1tasks":                  "cannot be a table name",
		"tasks\x00":               "cannot be a table name",
		strings.Repeat("t", 64):   "longer than a PostgreSQL name can be",
	} {
		_, err := New([]Rule{{Event: "e", Table: table}}, Options{})
		if err == nil || !strings.Contains(err.Error(), "table: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("table %q: %v, want %q", table, err, want)
		}
	}
	for _, table := range []string{"tasks", "activity_log_exports", "_t", "t$1", strings.Repeat("t", 63)} {
		if _, err := New([]Rule{{Event: "e", Table: table}}, Options{}); err != nil {
			t.Errorf("table %q refused: %v", table, err)
		}
	}
}

// TestPlainColumnFields checks the payload fields that eval reads without
// the VM (plainColumn): which expressions are taken for a plain column
// read, and that every payload comes out the same bytes as through the
// VM, for the default rules and for a rule with each form, on inserts,
// updates and deletes, with and without the columns read.
func TestPlainColumnFields(t *testing.T) {
	type plain struct {
		col      string
		old, yes bool
	}
	for src, want := range map[string]plain{
		"new.id":           {"id", false, true},
		`new["id"]`:        {"id", false, true},
		"new?.id":          {"id", false, true},
		"old.status":       {"status", true, true},
		`old["status"]`:    {"status", true, true},
		"new.id + 1":       {},
		"new.a.b":          {},
		"new":              {},
		"op":               {},
		"new[op]":          {},
		"new.id ?? 0":      {},
		`new["id"].String`: {},
	} {
		col, old, ok := plainColumn(src)
		if got := (plain{col, old, ok}); got != want {
			t.Errorf("plainColumn(%q) = %+v, want %+v", src, got, want)
		}
	}

	rules := append(DefaultRules(), Rule{Event: "task.read", Table: "tasks", On: []string{"insert", "update", "delete"}, Data: []map[string]string{
		{"id": "new.id"}, {"title": `new["title"]`}, {"missing": "new?.nothing"}, {"was": "old.status"},
		{"old_missing": `old["nothing"]`}, {"either": "new.id ?? old.id"}, {"tech": "new?.technician_id"},
	}})
	fast, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	plainFields := 0
	for _, r := range slow.rules {
		for i := range r.fields {
			if r.fields[i].column != "" {
				plainFields++
			}
			r.fields[i].column = ""
		}
	}
	if plainFields < 10 {
		t.Fatalf("%d fields read without the VM; the default rules alone have more", plainFields)
	}
	dir := directory()
	completed := with(taskRow, "status", "completed", "completed_at", "2026-04-24T02:10:00Z")
	prior := event.Row{"status": "in_progress", "technician_id": int64(42)}
	for _, c := range []struct {
		name   string
		change *event.Change
		prior  event.Row
	}{
		{"task inserted", insert("tasks", completed), nil},
		{"task completed", update("tasks", completed), prior},
		{"task without its title", update("tasks", with(completed, "title", nil)), prior},
		{"task with unchanged columns", &event.Change{CommitTime: commitTime, Table: "tasks", Op: event.Update, New: with(completed), Unchanged: []string{"description"}}, prior},
		{"task deleted", del("tasks", taskRow), with(prior, "company_id", int64(1))},
		{"repair request filed", insert("repair_requests", repairRow), nil},
		{"shutdown reported", insert("shutdowns", shutdownRow), nil},
	} {
		want, _, wantErr := slow.Map(c.change, c.prior, dir)
		got, _, gotErr := fast.Map(c.change, c.prior, dir)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%s: error %v, through the VM %v", c.name, gotErr, wantErr)
		}
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("%s: %d drafts, through the VM %d", c.name, len(got), len(want))
		}
		for i := range got {
			if string(got[i].Body) != string(want[i].Body) {
				t.Errorf("%s, %s:\n got %s\nwant %s", c.name, got[i].Type, got[i].Body, want[i].Body)
			}
		}
	}
}
