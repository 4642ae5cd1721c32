package mapper

import (
	"strings"
	"testing"
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
