package mapper

import (
	"strings"
	"testing"
)

func TestCompileFilterRefusesWithAPointer(t *testing.T) {
	fields := map[string][]string{"repair_request.created": {"repair_request_id", "title", "priority"}}
	for _, tc := range []struct{ src, want string }{
		{``, "empty expression"},
		{`data.priorty == "critical"`, "unknown field data.priorty: the subscribed events have data.priority, data.repair_request_id, data.title (1:1)"},
		{`priority == "critical"`, "unknown name priority (1:1)"},
		{`data.priority ==`, "(1:"},
		{`company_id + 1`, `the result is not true or false (expected bool, but got int); write a condition such as data.priority == "critical"`},
		{`"critical"`, "not true or false (expected bool, but got string)"},
		{`1 + 2`, "not true or false (expected bool, but got int)"},
		{`data.count + 1`, "not true or false"},
		{`$env.event == "x"`, "$env is not supported"},
		{`company_id == "PT Kahatex"`, "mismatched types"},
		// Filters whose work could grow without bound, or beyond what the
		// filter's length and the event's data make.
		{`all(data.title, {all(data.title, {# != data.priority})})`, "a predicate ({...}) inside another one's {...} is not supported in filters: its cost is the product of the lists' lengths (1:34)"},
		{`let a = split(repeat("a,", 999), ","); all(a, {all(a, {# != data.priority})})`, "unknown name repeat"},
		{`let s = "a"; s != ""`, "variables (let) are not supported in filters (1:5)"},
		{`reduce(data.title, {#acc + #acc}, "a") != ""`, "reduce is not supported in filters (1:1)"},
		{`repeat("a", 1000000) != ""`, "unknown name repeat"},
		{`join(data.title, ",") != ""`, "join is not supported in filters (1:1)"},
		{`replace(data.title, "a", "bbbbbbbb") != ""`, "replace is not supported in filters"},
		{`len(split(data.title, "")) > 1`, "split is not supported in filters"},
		{`data.title matches data.priority`, `the pattern of matches must be a text in quotes (data.title matches "^Pump") (1:12)`},
		{`data.title matches ("^" + data.priority)`, `the pattern of matches must be a text in quotes`},
		{`any(1..1000000, {# == company_id})`, "ranges (a..b) are not supported in filters"},
		{strings.Repeat(`any(data.title, {# == "x"}) || `, 8) + `any(data.title, {# == "y"})`, "9 predicates ({...}) is too many; a filter may use at most 8"},
	} {
		_, err := CompileFilter(tc.src, fields)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CompileFilter(%q) = %v, want an error containing %q", tc.src, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("CompileFilter(%q): error of more than one line: %q", tc.src, err)
		}
	}
}

func TestFilterMatches(t *testing.T) {
	payload := []byte(`{"event":"repair_request.created","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"repair_request_id":431,"priority":"critical","title":"Boiler 2 leaking"}}`)
	env, err := NewFilterEnv(payload)
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]bool{
		`data.priority == "critical"`:                               true,
		`data.priority == "low"`:                                    false,
		`event == "repair_request.created" && company_id == 1`:      true,
		`company_name startsWith "PT"`:                              true,
		`data.repair_request_id > 400`:                              true,
		`data.priority in ["critical", "high"]`:                     true,
		`data.missing == nil`:                                       true,
		`data.title contains "Boiler" and timestamp > "2026-04-01"`: true,
	} {
		f, err := CompileFilter(src, nil)
		if err != nil {
			t.Fatalf("CompileFilter(%q): %v", src, err)
		}
		got, err := f.Match(env)
		if err != nil || got != want {
			t.Errorf("%s: Match = %v, %v, want %v", src, got, err, want)
		}
	}
	// A runtime error is no match.
	f, err := CompileFilter(`data.title > 3`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Match(env); ok || err == nil {
		t.Errorf("a filter that fails on the event: Match = %v, %v, want false and an error", ok, err)
	}
}

// BenchmarkFilter decides a filter on a payload, as the ingester does for
// each event of a webhook with a filter: decode it, run the expression.
func BenchmarkFilter(b *testing.B) {
	payload := []byte(`{"event":"repair_request.created","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"repair_request_id":431,"asset_id":678,"title":"Boiler 2 leaking","priority":"low","status":"open","requested_by":42}}`)
	f, err := CompileFilter(`data.priority == "critical"`, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		env, err := NewFilterEnv(payload)
		if err != nil {
			b.Fatal(err)
		}
		if ok, _ := f.Match(env); ok {
			b.Fatal("matched")
		}
	}
}

// Filters that read the event's data, compare, match text and look into
// its lists, each predicate on its own, are what filters are for.
func TestCompileFilterTakesCommonFilters(t *testing.T) {
	for _, src := range []string{
		`lower(data.priority) == "high" && len(data.title) > 3 && any(data.tags, {# == "x"})`,
		`data.priority in ["high", "critical"] and event startsWith "repair_request."`,
		`data.title matches "^Pump" || data.title contains "valve"`,
		`count(data.tags, {# == "a"}) > 1 && date(timestamp) > date("2026-01-01T00:00:00Z")`,
		`company_id == 1 ? data.priority == "critical" : true`,
		strings.Repeat(`any(data.tags, {# == "x"}) || `, 7) + `none(data.tags, {# == "y"})`,
	} {
		if _, err := CompileFilter(src, nil); err != nil {
			t.Errorf("CompileFilter(%q): %v", src, err)
		}
	}
}

// TestFilterDataFields: a filter names the data fields it reads, so that
// the admin API can say which subscribed events lack them.
func TestFilterDataFields(t *testing.T) {
	f, err := CompileFilter(`data.priority == "critical" || data["title"] contains "Pump" || data.priority == "high" || company_id == 1`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.DataFields(), ","); got != "priority,title" {
		t.Errorf("DataFields = %q, want priority,title", got)
	}
}
