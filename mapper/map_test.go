package mapper

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// TestMapDefaultRules drives every default event type through changes that
// must and must not fire it.
func TestMapDefaultRules(t *testing.T) {
	m := newDefault(t)
	open := with(taskRow, "status", "open", "technician_id", nil, "assigned_by", nil)
	completed := with(taskRow, "status", "completed", "completed_at", "2026-04-24T02:15:30Z")
	full := func(c *event.Change, old event.Row) *event.Change { c.Old = old; return c }

	tests := []struct {
		name  string
		c     *event.Change
		prior event.Row
		want  []string
	}{
		// task.assigned
		{"task inserted unassigned", insert("tasks", open), nil, nil},
		{"task inserted assigned", insert("tasks", taskRow), nil, []string{"task.assigned"}},
		{"task assigned", update("tasks", with(taskRow, "status", "assigned")), event.Row{"status": "open", "technician_id": nil}, []string{"task.assigned"}},
		{"task reassigned to another technician", update("tasks", with(taskRow, "technician_id", int64(43))), event.Row{"status": "in_progress", "technician_id": int64(42)}, []string{"task.assigned"}},
		{"task saved with the same technician", update("tasks", with(taskRow, "title", "Replace belt")), event.Row{"status": "in_progress", "technician_id": int64(42)}, nil},
		{"same technician, prior read back from JSON", update("tasks", taskRow), event.Row{"status": "in_progress", "technician_id": float64(42)}, nil},
		{"same technician, prior as json.Number", update("tasks", taskRow), event.Row{"status": "in_progress", "technician_id": json.Number("42")}, nil},
		{"task unassigned", update("tasks", with(taskRow, "technician_id", nil)), event.Row{"status": "in_progress", "technician_id": int64(42)}, nil},

		// task.completed
		{"task completed", update("tasks", completed), event.Row{"status": "in_progress", "technician_id": int64(42)}, []string{"task.completed"}},
		{"completed task edited", update("tasks", with(completed, "title", "Replaced belt")), event.Row{"status": "completed", "technician_id": int64(42)}, nil},
		{"task inserted assigned and completed", insert("tasks", completed), nil, []string{"task.assigned", "task.completed"}},
		{"task completed and reassigned at once", update("tasks", with(completed, "technician_id", int64(43))), event.Row{"status": "in_progress", "technician_id": int64(42)}, []string{"task.assigned", "task.completed"}},
		{"insert ignores a stale record", insert("tasks", completed), event.Row{"status": "completed", "technician_id": int64(42)}, []string{"task.assigned", "task.completed"}},

		// task.approved, task.rejected
		{"task approved", update("tasks", with(completed, "status", "approved", "reviewed_by", int64(2))), event.Row{"status": "completed", "technician_id": int64(42)}, []string{"task.approved"}},
		{"approved task edited", update("tasks", with(completed, "status", "approved")), event.Row{"status": "approved", "technician_id": int64(42)}, nil},
		{"task rejected", update("tasks", with(completed, "status", "rejected", "rejection_reason", "Photo missing")), event.Row{"status": "completed", "technician_id": int64(42)}, []string{"task.rejected"}},
		{"rejected task edited", update("tasks", with(completed, "status", "rejected")), event.Row{"status": "rejected", "technician_id": int64(42)}, nil},
		{"task deleted", del("tasks", taskRow), event.Row{"status": "completed", "technician_id": int64(42)}, nil},

		// REPLICA IDENTITY FULL: the old row the server sent wins over the record.
		{"full old row: completed task edited, no record", full(update("tasks", completed), completed), nil, nil},
		{"full old row: completed, stale record", full(update("tasks", completed), taskRow), event.Row{"status": "completed", "technician_id": int64(42)}, []string{"task.completed"}},

		// repair_request.created, repair_request.updated
		{"repair request filed", insert("repair_requests", repairRow), nil, []string{"repair_request.created"}},
		{"repair request status changed", update("repair_requests", with(repairRow, "status", "in_review", "updated_by", int64(2))), event.Row{"status": "open"}, []string{"repair_request.updated"}},
		{"repair request title edited", update("repair_requests", with(repairRow, "title", "Loom 12 vibrates")), event.Row{"status": "open"}, nil},
		{"repair request deleted", del("repair_requests", repairRow), event.Row{"status": "open"}, nil},

		// shutdown.reported, shutdown.resolved
		{"shutdown reported", insert("shutdowns", shutdownRow), nil, []string{"shutdown.reported"}},
		{"shutdown recorded already resolved", insert("shutdowns", with(shutdownRow, "status", "resolved")), nil, []string{"shutdown.reported", "shutdown.resolved"}},
		{"shutdown resolved", update("shutdowns", with(shutdownRow, "status", "resolved")), event.Row{"status": "open"}, []string{"shutdown.resolved"}},
		{"resolved shutdown edited", update("shutdowns", with(shutdownRow, "status", "resolved", "resolution", "Fan replaced")), event.Row{"status": "resolved"}, nil},
		{"open shutdown edited", update("shutdowns", with(shutdownRow, "reason", "Overheating")), event.Row{"status": "open"}, nil},

		// user.created, user.deactivated
		{"user created", insert("users", userRow), nil, []string{"user.created"}},
		{"user created inactive", insert("users", with(userRow, "active", false)), nil, []string{"user.created"}},
		{"user deactivated", update("users", with(userRow, "active", false)), event.Row{"active": true}, []string{"user.deactivated"}},
		{"inactive user edited", update("users", with(userRow, "active", false, "full_name", "Mia Schulz-Berg")), event.Row{"active": false}, nil},
		{"user reactivated", update("users", userRow), event.Row{"active": false}, nil},
		{"active user edited", update("users", with(userRow, "role", "supervisor")), event.Row{"active": true}, nil},
		{"unknown active user edited", update("users", userRow), nil, nil},

		// audit.exported
		{"activity log exported", insert("activity_log_exports", exportRow), nil, []string{"audit.exported"}},
		{"export row updated", update("activity_log_exports", exportRow), nil, nil},

		// Changes that never produce events.
		{"company renamed", update("companies", with(companyRow, "name", "PT Kahatex Tbk")), event.Row{"name": "PT Kahatex", "time_zone": "Asia/Jakarta"}, nil},
		{"table without rules", insert("assets", event.Row{"id": int64(1), "company_id": int64(1)}), nil, nil},
		{"truncate", &event.Change{Table: "tasks", Op: event.Truncate}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, _, err := m.Map(tt.c, tt.prior, directory())
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if got := types(drafts); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("events = %v, want %v", got, tt.want)
			}
			for _, d := range drafts {
				if !json.Valid(d.Body) {
					t.Errorf("%s: body is not JSON: %s", d.Type, d.Body)
				}
			}
		})
	}
}

// TestMapUnknownPrior follows rows the relay has no record of: a transition
// rule fires on the first change it sees of a row already in the target
// state, and the record Map returns stops it from firing again.
func TestMapUnknownPrior(t *testing.T) {
	m := newDefault(t)
	tests := []struct {
		name        string
		c           *event.Change
		first, then []string
	}{
		{"completed task", update("tasks", with(taskRow, "status", "completed")), []string{"task.assigned", "task.completed"}, nil},
		{"open unassigned task", update("tasks", with(taskRow, "status", "open", "technician_id", nil)), nil, nil},
		{"repair request", update("repair_requests", repairRow), []string{"repair_request.updated"}, nil},
		{"resolved shutdown", update("shutdowns", with(shutdownRow, "status", "resolved")), []string{"shutdown.resolved"}, nil},
		{"inactive user", update("users", with(userRow, "active", false)), []string{"user.deactivated"}, nil},
		{"active user", update("users", userRow), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drafts, next, err := m.Map(tt.c, nil, directory())
			if err != nil {
				t.Fatal(err)
			}
			if got := types(drafts); !slices.Equal(got, append([]string{}, tt.first...)) {
				t.Errorf("first change: events = %v, want %v", got, tt.first)
			}
			for i := range 2 { // the same edit again, twice
				drafts, next, err = m.Map(tt.c, next, directory())
				if err != nil {
					t.Fatal(err)
				}
				if got := types(drafts); !slices.Equal(got, append([]string{}, tt.then...)) {
					t.Errorf("edit %d with the record: events = %v, want %v", i+1, got, tt.then)
				}
			}
		})
	}
}

// TestMapPreviousStatus checks old values in the payload: the record's, and
// null when there is none.
func TestMapPreviousStatus(t *testing.T) {
	m := newDefault(t)
	c := update("repair_requests", with(repairRow, "status", "in_review"))
	for _, tt := range []struct {
		prior event.Row
		want  string
	}{
		{event.Row{"status": "open"}, `"previous_status":"open"`},
		{nil, `"previous_status":null`},
	} {
		drafts, _, err := m.Map(c, tt.prior, nil)
		if err != nil || len(drafts) != 1 {
			t.Fatalf("Map = %v, %v", types(drafts), err)
		}
		if !strings.Contains(string(drafts[0].Body), tt.want) {
			t.Errorf("prior %v: body %s lacks %s", tt.prior, drafts[0].Body, tt.want)
		}
	}
}

func TestMapNext(t *testing.T) {
	m := newDefault(t)
	tests := []struct {
		name  string
		c     *event.Change
		prior event.Row
		want  event.Row
	}{
		{"insert", insert("tasks", taskRow), nil, event.Row{"status": "in_progress", "technician_id": int64(42)}},
		{"update", update("tasks", with(taskRow, "status", "completed")), event.Row{"status": "in_progress", "technician_id": int64(42)}, event.Row{"status": "completed", "technician_id": int64(42)}},
		{"null is recorded as null", update("tasks", with(taskRow, "technician_id", nil)), nil, event.Row{"status": "in_progress", "technician_id": nil}},
		{"delete drops the record", del("tasks", taskRow), event.Row{"status": "completed"}, nil},
		{"table that tracks nothing", insert("activity_log_exports", exportRow), nil, nil},
		{"companies", insert("companies", companyRow), nil, event.Row{"name": "PT Kahatex", "time_zone": "Asia/Jakarta"}},
		{"unwatched table", insert("assets", event.Row{"id": int64(1)}), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, next, err := m.Map(tt.c, tt.prior, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(next, tt.want) {
				t.Errorf("next = %#v, want %#v", next, tt.want)
			}
		})
	}
}

// TestMapUnchangedTOAST: a column the server did not send is filled from the
// record when the record has it, and otherwise left out of the payload and
// of the next record: unknown, never null.
func TestMapUnchangedTOAST(t *testing.T) {
	rules := []Rule{{
		Event: "task.noted",
		Table: "tasks",
		On:    []string{"update"},
		When:  `new.status != old.status`,
		Data: []map[string]string{
			{"task_id": "new.id"},
			{"description": "new.description"},
			{"previous_description": "old.description"},
			{"notes": `new.description + " / " + new.title`},
			{"status": "new.status"},
		},
	}}
	m, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Tables()["tasks"].Tracked; !slices.Equal(got, []string{"description", "status"}) {
		t.Fatalf("tracked = %v", got)
	}
	row := with(taskRow, "status", "completed")
	delete(row, "description")
	c := update("tasks", row)
	c.Unchanged = []string{"description"}

	t.Run("not in the record: omitted", func(t *testing.T) {
		prior := event.Row{"status": "in_progress"}
		drafts, next, err := m.Map(c, prior, nil)
		if err != nil || len(drafts) != 1 {
			t.Fatalf("Map = %v, %v", types(drafts), err)
		}
		data := payloadData(t, drafts[0].Body)
		if _, ok := data["description"]; ok {
			t.Errorf("description present: %s", drafts[0].Body)
		}
		if _, ok := data["notes"]; ok {
			t.Errorf("notes (reads description) present: %s", drafts[0].Body)
		}
		if v, ok := data["previous_description"]; !ok || v != nil {
			t.Errorf("previous_description = %v, %v; want null (old values are not TOAST-omitted)", v, ok)
		}
		if data["status"] != "completed" || data["task_id"] != float64(12345) {
			t.Errorf("other fields wrong: %s", drafts[0].Body)
		}
		if _, ok := next["description"]; ok {
			t.Errorf("next invents description: %#v", next)
		}
		if !maps.Equal(c.New, row) {
			t.Errorf("Map changed c.New")
		}
	})
	t.Run("in the record: filled", func(t *testing.T) {
		prior := event.Row{"status": "in_progress", "description": "Belt is frayed."}
		drafts, next, err := m.Map(c, prior, nil)
		if err != nil || len(drafts) != 1 {
			t.Fatalf("Map = %v, %v", types(drafts), err)
		}
		data := payloadData(t, drafts[0].Body)
		if data["description"] != "Belt is frayed." || data["notes"] != "Belt is frayed. / Replace drive belt & tensioner" {
			t.Errorf("description not filled: %s", drafts[0].Body)
		}
		if next["description"] != "Belt is frayed." {
			t.Errorf("next lost description: %#v", next)
		}
		if prior["status"] != "in_progress" || len(prior) != 2 {
			t.Errorf("Map changed prior: %#v", prior)
		}
	})
	t.Run("default rules omit an unchanged title", func(t *testing.T) {
		row := with(taskRow, "status", "completed")
		delete(row, "title")
		c := update("tasks", row)
		c.Unchanged = []string{"title"}
		drafts, _, err := newDefault(t).Map(c, event.Row{"status": "in_progress", "technician_id": int64(42)}, directory())
		if err != nil || len(drafts) != 1 {
			t.Fatalf("Map = %v, %v", types(drafts), err)
		}
		want := `{"event":"task.completed","timestamp":"2026-04-24T09:15:30.987654+07:00","company_id":1,"company_name":"PT Kahatex",` +
			`"data":{"task_id":12345,"asset_id":678,"technician_id":42,"status":"completed","priority":"high","completed_at":null}}`
		if string(drafts[0].Body) != want {
			t.Errorf("body\n got %s\nwant %s", drafts[0].Body, want)
		}
	})
	t.Run("tracked column unchanged and unknown stays absent", func(t *testing.T) {
		row := with(taskRow)
		delete(row, "status")
		c := update("tasks", row)
		c.Unchanged = []string{"status"}
		_, next, err := newDefault(t).Map(c, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := next["status"]; ok {
			t.Errorf("next = %#v, want no status", next)
		}
		_, next, _ = newDefault(t).Map(c, event.Row{"status": "assigned"}, nil)
		if next["status"] != "assigned" {
			t.Errorf("next = %#v, want status kept from the record", next)
		}
	})
}

func payloadData(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var p struct{ Data map[string]any }
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return p.Data
}

func TestMapTimestamp(t *testing.T) {
	jakarta, _ := time.LoadLocation("Asia/Jakarta")
	dir := directory()
	dir.Set(3, event.Row{"name": "No Zone Ltd", "time_zone": "Mars/Olympus_Mons"})
	dir.Set(4, event.Row{"name": "Local Ltd", "time_zone": "Local"})
	tests := []struct {
		name    string
		opts    Options
		company int64
		at      time.Time
		want    string
	}{
		{"Jakarta", Options{}, 1, commitTime, `"timestamp":"2026-04-24T09:15:30.987654+07:00","company_id":1,"company_name":"PT Kahatex"`},
		{"Berlin summer time", Options{}, 2, commitTime, `"timestamp":"2026-04-24T04:15:30.987654+02:00","company_id":2,"company_name":"Nordwerk GmbH"`},
		{"Berlin winter time", Options{}, 2, time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), `"timestamp":"2026-01-15T13:00:00.000000+01:00"`},
		{"Berlin before the switch", Options{}, 2, time.Date(2026, 3, 29, 0, 59, 59, 999999999, time.UTC), `"timestamp":"2026-03-29T01:59:59.999999+01:00"`},
		{"Berlin after the switch", Options{}, 2, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC), `"timestamp":"2026-03-29T03:00:00.000000+02:00"`},
		{"unknown company, UTC", Options{}, 99, commitTime, `"timestamp":"2026-04-24T02:15:30.987654+00:00","company_id":99,"company_name":""`},
		{"unknown company, default location", Options{DefaultLocation: jakarta}, 99, commitTime, `"timestamp":"2026-04-24T09:15:30.987654+07:00","company_id":99,"company_name":""`},
		{"invalid time zone", Options{DefaultLocation: jakarta}, 3, commitTime, `"timestamp":"2026-04-24T09:15:30.987654+07:00","company_id":3,"company_name":"No Zone Ltd"`},
		{"Local is not a company time zone", Options{}, 4, commitTime, `"timestamp":"2026-04-24T02:15:30.987654+00:00","company_id":4,"company_name":"Local Ltd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(DefaultRules(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			c := insert("activity_log_exports", with(exportRow, "company_id", tt.company))
			c.CommitTime = tt.at
			drafts, _, err := m.Map(c, nil, dir)
			if err != nil || len(drafts) != 1 {
				t.Fatalf("Map = %v, %v", types(drafts), err)
			}
			if drafts[0].CompanyID != tt.company {
				t.Errorf("CompanyID = %d", drafts[0].CompanyID)
			}
			if !strings.Contains(string(drafts[0].Body), tt.want) {
				t.Errorf("body %s\nlacks %s", drafts[0].Body, tt.want)
			}
		})
	}
}

// TestMapTimestampOrdersTransactions: transactions committed within the
// same second, even a microsecond apart, carry increasing timestamps, and
// their strings sort as their times do (the fraction has a fixed width).
func TestMapTimestampOrdersTransactions(t *testing.T) {
	m := newDefault(t)
	base := time.Date(2026, 4, 24, 2, 15, 30, 0, time.UTC)
	var got []string
	for _, at := range []time.Time{base, base.Add(time.Microsecond), base.Add(40 * time.Millisecond), base.Add(130 * time.Millisecond),
		base.Add(999999 * time.Microsecond), base.Add(time.Second)} {
		c := insert("activity_log_exports", exportRow)
		c.CommitTime = at
		drafts, _, err := m.Map(c, nil, directory())
		if err != nil || len(drafts) != 1 {
			t.Fatalf("Map = %v, %v", types(drafts), err)
		}
		var p struct{ Timestamp string }
		if err := json.Unmarshal(drafts[0].Body, &p); err != nil {
			t.Fatal(err)
		}
		parsed, err := time.Parse(time.RFC3339, p.Timestamp)
		if err != nil || !parsed.Equal(at) {
			t.Errorf("timestamp %q reads as %v (%v), want %v", p.Timestamp, parsed, err, at)
		}
		got = append(got, p.Timestamp)
	}
	want := []string{"2026-04-24T09:15:30.000000+07:00", "2026-04-24T09:15:30.000001+07:00", "2026-04-24T09:15:30.040000+07:00",
		"2026-04-24T09:15:30.130000+07:00", "2026-04-24T09:15:30.999999+07:00", "2026-04-24T09:15:31.000000+07:00"}
	if !slices.Equal(got, want) {
		t.Errorf("timestamps\n got %q\nwant %q", got, want)
	}
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("timestamps do not sort strictly as strings: %q", got)
	}
}

func TestMapCompany(t *testing.T) {
	rule := func(company string, on ...string) []Rule {
		return []Rule{{Event: "asset.changed", Table: "assets", On: on, Company: company, Data: []map[string]string{{"asset_id": "new.id ?? old.id"}}}}
	}
	tests := []struct {
		name    string
		rules   []Rule
		c       *event.Change
		prior   event.Row
		want    int64
		wantErr string
	}{
		{"default", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": int64(2)}), nil, 2, ""},
		{"default on delete reads the record", rule("", "delete"), del("assets", event.Row{"id": int64(1)}), event.Row{"company_id": int64(2)}, 2, ""},
		{"default on delete, full old row", rule("", "delete"), &event.Change{Table: "assets", Op: event.Delete, Old: event.Row{"id": int64(1), "company_id": int64(2)}}, nil, 2, ""},
		{"default on delete, nothing known", rule("", "delete"), del("assets", event.Row{"id": int64(1)}), nil, 0, `rule "asset.changed": company: old.company_id is unknown`},
		{"missing column", rule(""), insert("assets", event.Row{"id": int64(1)}), nil, 0, `rule "asset.changed": company: new.company_id is unknown`},
		{"null", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": nil}), nil, 0, `rule "asset.changed": company: company id is null`},
		{"numeric text", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": "17"}), nil, 17, ""},
		{"numeric text with scale", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": "17.000"}), nil, 17, ""},
		{"integral float", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": float64(17)}), nil, 17, ""},
		{"fractional float", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": 1.5}), nil, 0, `company id 1.5 (float64) is not an integer`},
		{"text", rule(""), insert("assets", event.Row{"id": int64(1), "company_id": "acme"}), nil, 0, `company id acme (string) is not an integer`},
		{"expression", rule("new.owner_id * 1"), insert("assets", event.Row{"id": int64(1), "owner_id": int64(5)}), nil, 5, ""},
		{"constant", rule("1"), insert("assets", event.Row{"id": int64(1)}), nil, 1, ""},
		{"expression fails", rule("new.owner.id"), insert("assets", event.Row{"id": int64(1)}), nil, 0, `rule "asset.changed": company: cannot fetch id from <nil>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.rules, Options{})
			if err != nil {
				t.Fatal(err)
			}
			drafts, _, err := m.Map(tt.c, tt.prior, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if len(drafts) != 0 {
					t.Errorf("drafts = %v, want none", types(drafts))
				}
				return
			}
			if err != nil || len(drafts) != 1 {
				t.Fatalf("Map = %v, %v", types(drafts), err)
			}
			if drafts[0].CompanyID != tt.want {
				t.Errorf("CompanyID = %d, want %d", drafts[0].CompanyID, tt.want)
			}
		})
	}
}

// TestMapRuleErrors: a failing rule costs its own event only.
func TestMapRuleErrors(t *testing.T) {
	rules := []Rule{
		{Event: "a.first", Table: "things", Data: []map[string]string{{"id": "new.id"}}},
		{Event: "a.not_bool", Table: "things", When: "new.flag"},
		{Event: "a.runtime", Table: "things", Data: []map[string]string{{"x": "new.nested.deep"}}},
		{Event: "a.last", Table: "things", Data: []map[string]string{{"id": "new.id"}}},
	}
	m, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	drafts, next, err := m.Map(insert("things", event.Row{"id": int64(1), "company_id": int64(1), "flag": "yes"}), nil, nil)
	if got := types(drafts); !slices.Equal(got, []string{"a.first", "a.last"}) {
		t.Errorf("events = %v", got)
	}
	if next != nil {
		t.Errorf("next = %v", next)
	}
	var re *RuleError
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`rule "a.not_bool": when:`, `rule "a.runtime": data.x: cannot fetch deep from <nil>`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
	if !errorsAs(err, &re) {
		t.Errorf("err %T does not hold a *RuleError", err)
	}
	if strings.Contains(err.Error(), "\n |") {
		t.Errorf("err carries an expression snippet: %q", err)
	}
}

// TestMapEncoding: values are JSON as encoding/json writes them, without
// HTML escaping; floats JSON cannot hold become PostgreSQL's text for them.
func TestMapEncoding(t *testing.T) {
	rules := []Rule{{Event: "thing.seen", Table: "things", Data: []map[string]string{
		{"text": "new.text"}, {"float": "new.float"}, {"nan": "new.nan"}, {"inf": "new.inf"},
		{"list": "new.list"}, {"object": "new.object"}, {"int": "1 + 2"}, {"ratio": "1 / 4"},
		{"bad_utf8": "new.bad"},
	}}}
	m, err := New(rules, Options{})
	if err != nil {
		t.Fatal(err)
	}
	row := event.Row{
		"company_id": int64(1), "text": "<b>Tom & Jerry</b>\n\"q\"\u2028", "float": 1.5e-7,
		"nan": nan(), "inf": inf(-1), "bad": "a\xffb",
		"list": []any{int64(1), "x", nil, inf(1)}, "object": map[string]any{"b": true, "a": []any{}},
	}
	list := row["list"].([]any)
	drafts, _, err := m.Map(insert("things", row), nil, nil)
	if err != nil || len(drafts) != 1 {
		t.Fatalf("Map = %v, %v", types(drafts), err)
	}
	want := `"data":{"text":"<b>Tom & Jerry</b>\n\"q\"\u2028","float":1.5e-7,"nan":"NaN","inf":"-Infinity",` +
		`"list":[1,"x",null,"Infinity"],"object":{"a":[],"b":true},"int":3,"ratio":0.25,"bad_utf8":"a\ufffdb"}}`
	if !strings.HasSuffix(string(drafts[0].Body), want) {
		t.Errorf("body %s\nwant suffix %s", drafts[0].Body, want)
	}
	if f, ok := list[3].(float64); !ok || f == 0 {
		t.Errorf("Map changed the row's list: %v", list)
	}
}

// TestMapConcurrent runs one Mapper from several goroutines (run with -race).
func TestMapConcurrent(t *testing.T) {
	m := newDefault(t)
	want, _, err := m.Map(update("tasks", with(taskRow, "status", "completed")), event.Row{"status": "in_progress", "technician_id": int64(42)}, directory())
	if err != nil || len(want) != 1 {
		t.Fatal(types(want), err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := directory()
			for range 200 {
				got, _, err := m.Map(update("tasks", with(taskRow, "status", "completed")), event.Row{"status": "in_progress", "technician_id": int64(42)}, dir)
				if err != nil || len(got) != 1 || string(got[0].Body) != string(want[0].Body) {
					t.Errorf("concurrent Map = %v, %v", types(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
