package mapper

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/event"
)

var defaultEvents = []string{
	"audit.exported",
	"repair_request.created", "repair_request.updated",
	"shutdown.reported", "shutdown.resolved",
	"task.approved", "task.assigned", "task.completed", "task.rejected",
	"user.created", "user.deactivated",
}

func TestDefaultRules(t *testing.T) {
	rules := DefaultRules()
	var names []string
	for _, r := range rules {
		names = append(names, r.Event)
		if len(r.Data) == 0 {
			t.Errorf("%s: no data fields", r.Event)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, defaultEvents) {
		t.Errorf("default events = %v, want %v", names, defaultEvents)
	}
	if got := newDefault(t).EventTypes(); !slices.Equal(got, defaultEvents) {
		t.Errorf("EventTypes = %v", got)
	}

	// Each call returns a copy.
	rules[0].Event = "changed"
	rules[0].On[0] = "delete"
	rules[0].Data[0]["task_id"] = "1"
	if again := DefaultRules(); again[0].Event == "changed" || again[0].On[0] == "delete" || again[0].Data[0]["task_id"] == "1" {
		t.Errorf("DefaultRules shares memory between calls")
	}
}

// TestDefaultRulesTables pins what the relay records per row for the default
// rules: the columns compared as old.<col>, nothing more.
func TestDefaultRulesTables(t *testing.T) {
	want := map[string]TableSpec{
		"tasks":                {Key: []string{"id"}, Tracked: []string{"status", "technician_id"}},
		"repair_requests":      {Key: []string{"id"}, Tracked: []string{"status"}},
		"shutdowns":            {Key: []string{"id"}, Tracked: []string{"status"}},
		"users":                {Key: []string{"id"}, Tracked: []string{"active"}},
		"activity_log_exports": {Key: []string{"id"}},
		"companies":            {Key: []string{"id"}, Tracked: []string{"name", "time_zone"}},
	}
	got := newDefault(t).Tables()
	for name, spec := range got {
		if len(spec.Tracked) == 0 {
			spec.Tracked = nil
			got[name] = spec
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tables() = %#v\nwant %#v", got, want)
	}
}

func TestTablesTracked(t *testing.T) {
	rules := []Rule{
		{Event: "a.one", Table: "a", When: `old.x != new.x && old["y"] == nil && old?.z == 1`},
		{Event: "a.two", Table: "a", Company: "old.owner", Data: []map[string]string{{"w": "old.w"}, {"v": `"v" in old`}}},
		{Event: "a.gone", Table: "a", On: []string{"delete"}},
		{Event: "b.gone", Table: "b", On: []string{"delete"}, Company: "old.tenant"},
		{Event: "c.new", Table: "c", When: `new.status == "x"`},
		{Event: "companies.renamed", Table: "orgs", When: `new.label != old.label`},
	}
	m, err := New(rules, Options{CompaniesTable: "orgs", Keys: map[string][]string{"b": {"tenant", "code"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]TableSpec{
		"a":    {Key: []string{"id"}, Tracked: []string{"company_id", "owner", "v", "w", "x", "y", "z"}},
		"b":    {Key: []string{"tenant", "code"}, Tracked: []string{"tenant"}},
		"c":    {Key: []string{"id"}, Tracked: nil},
		"orgs": {Key: []string{"id"}, Tracked: []string{"label", "name", "time_zone"}},
	}
	got := m.Tables()
	if spec := got["c"]; len(spec.Tracked) == 0 {
		spec.Tracked = nil
		got["c"] = spec
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tables() = %#v\nwant %#v", got, want)
	}
	// The result is a copy.
	got["a"].Tracked[0] = "zzz"
	if m.Tables()["a"].Tracked[0] != "company_id" {
		t.Errorf("Tables shares memory")
	}
}

func TestNewErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/bad_rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line %q is not '# want: <error>'", first)
			}
			rules, err := parseRules(data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			m, err := New(rules, Options{})
			if err == nil {
				t.Fatalf("New succeeded (%v), want %q", m.EventTypes(), want)
			}
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %q\nwant prefix %q", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("err spans lines: %q", err)
			}
		})
	}
}

func TestParseRulesRejectsUnknownKeys(t *testing.T) {
	_, err := parseRules([]byte("- event: task.completed\n  table: tasks\n  condition: new.x\n"))
	if err == nil || !strings.Contains(err.Error(), "condition") {
		t.Errorf("err = %v, want one naming the unknown key", err)
	}
}

func TestNewValidRules(t *testing.T) {
	rules := []Rule{
		{Event: "a.any", Table: "a"}, // no when, no data: always, empty data
		{Event: "a.in", Table: "a", When: `"x" in new && op in ["insert", "update"] && table == "a"`},
		{Event: "a.closure", Table: "a", When: `all(new.tags ?? [], {# != "x"})`, Data: []map[string]string{{"n": "len(new.tags ?? [])"}}},
		{Event: "a.let", Table: "a", When: `let s = new.status; s == "x" && old.status != s`},
	}
	m, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	drafts, _, err := m.Map(insert("a", event.Row{"company_id": int64(1), "x": 1, "tags": []any{"y"}, "status": "x"}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := types(drafts); !slices.Equal(got, []string{"a.any", "a.in", "a.closure", "a.let"}) {
		t.Errorf("events = %v", got)
	}
	if want := `"data":{}}`; !strings.HasSuffix(string(drafts[0].Body), want) {
		t.Errorf("body %s, want suffix %s", drafts[0].Body, want)
	}
}

func TestMerge(t *testing.T) {
	defaults := []Rule{
		{Event: "a", Table: "t", When: "true"},
		{Event: "b", Table: "t", On: []string{"insert"}},
		{Event: "c", Table: "t"},
	}
	extra := []Rule{
		{Event: "d", Table: "u"},
		{Event: "b", Table: "t", On: []string{"update"}, When: "new.x != old.x"},
	}
	events := func(rules []Rule) (out []string) {
		for _, r := range rules {
			out = append(out, r.Event+":"+r.When)
		}
		return out
	}

	got := Merge(defaults, extra, false)
	if want := []string{"a:true", "b:new.x != old.x", "c:", "d:"}; !slices.Equal(events(got), want) {
		t.Errorf("Merge = %v, want %v", events(got), want)
	}
	if got[1].On[0] != "update" {
		t.Errorf("override kept the default's On: %v", got[1].On)
	}
	if got := Merge(defaults, extra, true); !slices.Equal(events(got), []string{"d:", "b:new.x != old.x"}) {
		t.Errorf("Merge(replace) = %v", events(got))
	}
	if got := Merge(defaults, nil, true); len(got) != 0 {
		t.Errorf("Merge(nil, replace) = %v", got)
	}
	if got := Merge(defaults, nil, false); !slices.Equal(events(got), []string{"a:true", "b:", "c:"}) {
		t.Errorf("Merge(nil) = %v", events(got))
	}

	// Inputs are left alone.
	got[0].When = "false"
	if defaults[0].When != "true" || defaults[1].On[0] != "insert" || len(defaults) != 3 {
		t.Errorf("Merge changed defaults: %v", defaults)
	}

	// Two overrides of the same event in config reach New, which says so.
	twice := Merge(defaults, []Rule{{Event: "b", Table: "t"}, {Event: "b", Table: "t", When: "false"}}, false)
	if _, err := New(twice, Options{}); err == nil || !strings.Contains(err.Error(), `rule "b": event: another rule has the same event`) {
		t.Errorf("New(duplicate overrides) err = %v", err)
	}

	// Overriding a default changes what fires.
	merged := Merge(DefaultRules(), []Rule{{Event: "task.completed", Table: "tasks", When: "false"}}, false)
	m, err := New(merged, Options{})
	if err != nil {
		t.Fatal(err)
	}
	drafts, _, _ := m.Map(update("tasks", with(taskRow, "status", "completed")), event.Row{"status": "in_progress", "technician_id": int64(42)}, nil)
	if len(drafts) != 0 {
		t.Errorf("disabled task.completed fired: %v", types(drafts))
	}
	if len(m.EventTypes()) != len(defaultEvents) {
		t.Errorf("EventTypes = %v", m.EventTypes())
	}
}

// referenceSchema reads platform/schema.sql: table -> columns.
func referenceSchema(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("../platform/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tableRE := regexp.MustCompile(`^CREATE TABLE (\w+) \($`)
	columnRE := regexp.MustCompile(`^    (\w+)\s+\w`) // continuation lines are indented further
	out := map[string][]string{}
	var table string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := tableRE.FindStringSubmatch(line); m != nil {
			table = m[1]
			out[table] = nil
			continue
		}
		if strings.HasPrefix(line, ");") {
			table = ""
			continue
		}
		if m := columnRE.FindStringSubmatch(line); table != "" && m != nil {
			out[table] = append(out[table], m[1])
		}
	}
	if len(out["tasks"]) < 10 || !slices.Contains(out["tasks"], "rejection_reason") {
		t.Fatalf("schema.sql parsed badly: %v", out)
	}
	return out
}

func TestAvailable(t *testing.T) {
	m := newDefault(t)
	schema := referenceSchema(t)

	t.Run("reference schema", func(t *testing.T) {
		available, problems := m.Available(schema)
		if !slices.Equal(available, defaultEvents) || len(problems) != 0 {
			t.Errorf("Available = %v, %v; want every event, no problems", available, problems)
		}
	})
	t.Run("missing table", func(t *testing.T) {
		s := cloneSchema(schema)
		delete(s, "activity_log_exports")
		available, problems := m.Available(s)
		if slices.Contains(available, "audit.exported") || len(available) != len(defaultEvents)-1 {
			t.Errorf("available = %v", available)
		}
		if len(problems) != 0 {
			t.Errorf("problems = %v, want none", problems)
		}
	})
	t.Run("missing column", func(t *testing.T) {
		s := cloneSchema(schema)
		s["tasks"] = slices.DeleteFunc(s["tasks"], func(c string) bool { return c == "status" })
		s["users"] = slices.DeleteFunc(s["users"], func(c string) bool { return c == "deactivated_at" })
		available, problems := m.Available(s)
		if !slices.Equal(available, defaultEvents) {
			t.Errorf("available = %v", available)
		}
		want := []string{
			`rule "task.assigned" reads tasks.status, which does not exist: override the rule under mapping.rules`,
			`rule "task.completed" reads tasks.status, which does not exist: override the rule under mapping.rules`,
			`rule "task.approved" reads tasks.status, which does not exist: override the rule under mapping.rules`,
			`rule "task.rejected" reads tasks.status, which does not exist: override the rule under mapping.rules`,
			`rule "user.deactivated" reads users.deactivated_at, which does not exist: override the rule under mapping.rules`,
		}
		if !slices.Equal(problems, want) {
			t.Errorf("problems =\n%s\nwant\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("company column", func(t *testing.T) {
		s := cloneSchema(schema)
		s["shutdowns"] = slices.DeleteFunc(s["shutdowns"], func(c string) bool { return c == "company_id" })
		s["companies"] = []string{"id", "name"}
		_, problems := m.Available(s)
		want := []string{
			`rule "shutdown.reported" reads shutdowns.company_id, which does not exist: override the rule under mapping.rules`,
			`rule "shutdown.resolved" reads shutdowns.company_id, which does not exist: override the rule under mapping.rules`,
			`table companies has no column time_zone: payloads fall back to an empty company name or the default time zone`,
		}
		if !slices.Equal(problems, want) {
			t.Errorf("problems =\n%s\nwant\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("nothing exists", func(t *testing.T) {
		available, problems := m.Available(nil)
		if len(available) != 0 || len(problems) != 0 {
			t.Errorf("Available(nil) = %v, %v", available, problems)
		}
	})
}

func cloneSchema(s map[string][]string) map[string][]string {
	out := make(map[string][]string, len(s))
	for k, v := range s {
		out[k] = slices.Clone(v)
	}
	return out
}

func TestRowKey(t *testing.T) {
	rules := append(DefaultRules(), Rule{Event: "task_tag.added", Table: "task_tags", On: []string{"insert", "delete"}})
	m, err := New(rules, Options{Keys: map[string][]string{"task_tags": {"task_id", "tag"}}})
	if err != nil {
		t.Fatal(err)
	}
	tag := event.Row{"task_id": int64(12345), "tag": "urgent \"now\"", "company_id": int64(1)}
	tests := []struct {
		name       string
		c          *event.Change
		key, prior string
		ok         bool
	}{
		{"insert", insert("tasks", taskRow), "12345", "12345", true},
		{"update", update("tasks", taskRow), "12345", "12345", true},
		{"delete reads Old", del("tasks", taskRow), "12345", "12345", true},
		{"update that changes the key", &event.Change{Table: "tasks", Op: event.Update, New: with(taskRow, "id", int64(9)), Old: event.Row{"id": int64(12345)}}, "9", "12345", true},
		{"text key", insert("users", with(userRow, "id", "7f1c2a4e-0b1d-4c55-9a3e-2f6a1b9c0d11")), "7f1c2a4e-0b1d-4c55-9a3e-2f6a1b9c0d11", "7f1c2a4e-0b1d-4c55-9a3e-2f6a1b9c0d11", true},
		{"composite", insert("task_tags", tag), `[12345,"urgent \"now\""]`, `[12345,"urgent \"now\""]`, true},
		{"composite delete", &event.Change{Table: "task_tags", Op: event.Delete, Old: tag}, `[12345,"urgent \"now\""]`, `[12345,"urgent \"now\""]`, true},
		{"composite, column missing", insert("task_tags", event.Row{"task_id": int64(1)}), "", "", false},
		{"key column null", insert("tasks", with(taskRow, "id", nil)), "", "", false},
		{"delete without key", &event.Change{Table: "tasks", Op: event.Delete}, "", "", false},
		{"companies table", insert("companies", companyRow), "1", "1", true},
		{"unwatched table", insert("assets", event.Row{"id": int64(1)}), "", "", false},
		{"truncate", &event.Change{Table: "tasks", Op: event.Truncate}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, ok := m.RowKey(tt.c)
			if key != tt.key || ok != tt.ok {
				t.Errorf("RowKey = %q, %v; want %q, %v", key, ok, tt.key, tt.ok)
			}
			key, ok = m.PriorKey(tt.c)
			if key != tt.prior || ok != tt.ok {
				t.Errorf("PriorKey = %q, %v; want %q, %v", key, ok, tt.prior, tt.ok)
			}
		})
	}
}

func TestState(t *testing.T) {
	m := newDefault(t)
	if got, want := m.State("tasks", taskRow), (event.Row{"status": "in_progress", "technician_id": int64(42)}); !reflect.DeepEqual(got, want) {
		t.Errorf("State(tasks) = %v, want %v", got, want)
	}
	if got := m.State("tasks", event.Row{"id": int64(1)}); len(got) != 0 {
		t.Errorf("State of a partial row invents columns: %v", got)
	}
	if got := m.State("activity_log_exports", exportRow); got != nil {
		t.Errorf("State(activity_log_exports) = %v, want nil", got)
	}
	if got := m.State("assets", event.Row{"id": int64(1)}); got != nil {
		t.Errorf("State(assets) = %v, want nil", got)
	}
	// State of a row agrees with what Map records after inserting it.
	_, next, _ := m.Map(insert("users", userRow), nil, nil)
	if got := m.State("users", userRow); !reflect.DeepEqual(got, next) {
		t.Errorf("State = %v, Map next = %v", got, next)
	}
}

func TestCompanies(t *testing.T) {
	dir := NewCompanies()
	if _, ok := dir.Lookup(1); ok {
		t.Fatal("empty directory knows company 1")
	}
	dir.Set(1, event.Row{"name": "PT Kahatex", "time_zone": "Asia/Jakarta"})
	dir.Set(2, event.Row{"name": "Nordwerk GmbH", "time_zone": "Europe/Atlantis"})
	dir.Set(3, event.Row{"name": nil})
	c, ok := dir.Lookup(1)
	if !ok || c.ID != 1 || c.Name != "PT Kahatex" || c.Location == nil || c.Location.String() != "Asia/Jakarta" {
		t.Errorf("Lookup(1) = %+v, %v", c, ok)
	}
	if c, _ := dir.Lookup(2); c.Location != nil || c.TimeZone != "Europe/Atlantis" {
		t.Errorf("invalid time zone: %+v", c)
	}
	if c, ok := dir.Lookup(3); !ok || c.Name != "" || c.Location != nil {
		t.Errorf("Lookup(3) = %+v, %v", c, ok)
	}
	dir.Delete(1)
	if _, ok := dir.Lookup(1); ok || dir.Len() != 2 {
		t.Errorf("Delete(1) left %d companies", dir.Len())
	}
	var none *Companies
	if _, ok := none.Lookup(1); ok {
		t.Error("nil directory knows a company")
	}
}

func TestUpdateCompanies(t *testing.T) {
	m := newDefault(t)
	dir := NewCompanies()
	apply := func(c *event.Change, prior event.Row) {
		t.Helper()
		_, next, err := m.Map(c, prior, dir)
		if err != nil {
			t.Fatal(err)
		}
		if !m.UpdateCompanies(dir, c, next) {
			t.Fatalf("UpdateCompanies(%s) = false", c.Table)
		}
	}
	apply(insert("companies", companyRow), nil)
	apply(update("companies", with(companyRow, "id", int64(2), "name", "Nordwerk GmbH", "time_zone", "Europe/Berlin")), nil)
	if c, ok := dir.Lookup(1); !ok || c.Name != "PT Kahatex" || c.Location.String() != "Asia/Jakarta" {
		t.Errorf("company 1 = %+v, %v", c, ok)
	}
	// A company renamed: the event's company_name follows.
	apply(update("companies", with(companyRow, "name", "PT Kahatex Tbk")), event.Row{"name": "PT Kahatex", "time_zone": "Asia/Jakarta"})
	drafts, _, err := m.Map(insert("activity_log_exports", exportRow), nil, dir)
	if err != nil || len(drafts) != 1 || !strings.Contains(string(drafts[0].Body), `"company_name":"PT Kahatex Tbk"`) {
		t.Errorf("after rename: %v %v", drafts, err)
	}
	// The key changes: the old id goes.
	apply(&event.Change{Table: "companies", Op: event.Update, New: with(companyRow, "id", int64(5)), Old: event.Row{"id": int64(1)}}, nil)
	if _, ok := dir.Lookup(1); ok {
		t.Error("company 1 kept after its id changed")
	}
	if _, ok := dir.Lookup(5); !ok {
		t.Error("company 5 missing")
	}
	apply(del("companies", event.Row{"id": int64(5)}), nil)
	if _, ok := dir.Lookup(5); ok || dir.Len() != 1 {
		t.Errorf("delete left %d companies", dir.Len())
	}
	apply(&event.Change{Table: "companies", Op: event.Truncate}, nil)
	if dir.Len() != 0 {
		t.Errorf("truncate left %d companies", dir.Len())
	}
	if m.UpdateCompanies(dir, insert("tasks", taskRow), nil) {
		t.Error("UpdateCompanies(tasks) = true")
	}
}
