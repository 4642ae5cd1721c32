package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/mapper"
)

// jsonKind names a JSON value's type as a strict receiver's schema would:
// integer and number apart, strings holding an RFC 3339 time apart.
func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case string:
		if _, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return "date-time"
		}
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

// orderedData decodes a payload's data object, keeping its key order.
func orderedData(t *testing.T, body []byte) ([]string, map[string]any) {
	t.Helper()
	var p struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("payload %s: %v", body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(p.Data))
	dec.UseNumber()
	var keys []string
	vals := map[string]any{}
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		vals[k.(string)] = v
	}
	return keys, vals
}

// TestTestEventsHaveRealTypes: for every event type, a test event's data has
// the fields of a real event produced by a real row change, in the same
// order, each with the same JSON type (an integer where the column is a
// bigint, a date-time where it is a timestamptz, ...), so that a receiver
// with a strict schema accepts the test. The example in docs/ADMIN.md has
// the shape and types of a real test body.
func TestTestEventsHaveRealTypes(t *testing.T) {
	e := newRelay(t)
	api := e.withAdminAPI()
	// A custom rule over a table with more column types than the platform's,
	// and expressions that compute rather than copy.
	e.exec(`CREATE TYPE meter_kind AS ENUM ('power', 'water')`)
	e.exec(`CREATE DOMAIN meter_code AS integer`)
	e.exec(`CREATE TABLE meter_readings (
		id bigserial PRIMARY KEY, company_id bigint NOT NULL, reading numeric(12,3) NOT NULL, ratio double precision NOT NULL,
		small smallint NOT NULL, ok boolean NOT NULL, kind meter_kind NOT NULL, code meter_code NOT NULL, unit varchar(8) NOT NULL,
		tags text[] NOT NULL, meta jsonb NOT NULL, ref uuid NOT NULL, day date NOT NULL, at timestamptz NOT NULL,
		local_at timestamp NOT NULL, note text NOT NULL)`)
	custom := "meter.read"
	e.cfg.Mapping.Rules = []mapper.Rule{{Event: custom, Table: "meter_readings", On: []string{"insert"}, Data: []map[string]string{
		{"reading_id": "new.id"}, {"reading": "new.reading"}, {"ratio": "new.ratio"}, {"small": "new.small"}, {"ok": "new.ok"},
		{"kind": "new.kind"}, {"code": "new.code"}, {"unit": "new.unit"}, {"tags": "new.tags"}, {"meta": "new.meta"},
		{"ref": "new.ref"}, {"day": "new.day"}, {"at": "new.at"}, {"local_at": "new.local_at"},
		{"label": `upper(new.unit) + " " + new.note`}, {"next_small": "new.small + 1"}, {"high": "new.ratio > 0.5"},
		{"first_tag": "new.tags[0]"},
	}}}
	e.cfg.Webhooks.Endpoints[0].Events = append(slices.Clone(allEvents), custom)
	e.start()

	// Real changes that fill every column the rules read (both tasks'
	// task.assigned events: either may reach the receiver first).
	ctx := context.Background()
	var task, task2, user int64
	e.pool.QueryRow(ctx, `INSERT INTO tasks (company_id, asset_id, title, priority, due_at) VALUES (1, 1, 'Replace belt', 'high', now() + interval '1 day') RETURNING id`).Scan(&task)
	e.exec(`UPDATE tasks SET technician_id = 3, assigned_by = 2, status = 'assigned' WHERE id = $1`, task)
	e.exec(`UPDATE tasks SET status = 'completed', completed_at = now() WHERE id = $1`, task)
	e.exec(`UPDATE tasks SET status = 'approved', reviewed_by = 2, reviewed_at = now() WHERE id = $1`, task)
	e.pool.QueryRow(ctx, `INSERT INTO tasks (company_id, asset_id, title, status, technician_id, assigned_by, due_at) VALUES (1, 1, 'Oil', 'assigned', 3, 2, now()) RETURNING id`).Scan(&task2)
	e.exec(`UPDATE tasks SET status = 'rejected', reviewed_by = 2, reviewed_at = now(), rejection_reason = 'no photo' WHERE id = $1`, task2)
	e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES (1, 1, 'Noise', 'critical', 3)`)
	e.exec(`UPDATE repair_requests SET status = 'in_review', updated_by = 2 WHERE company_id = 1`)
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason, reported_by) VALUES (1, 1, 'Overheating', 3)`)
	e.exec(`UPDATE shutdowns SET status = 'resolved', resolution = 'fan replaced', resolved_at = now(), resolved_by = 2 WHERE company_id = 1`)
	e.pool.QueryRow(ctx, `INSERT INTO users (company_id, email, full_name, created_by) VALUES (1, 'x@example.com', 'X', 2) RETURNING id`).Scan(&user)
	e.exec(`UPDATE users SET active = false, deactivated_by = 2, deactivated_at = now() WHERE id = $1`, user)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, format, range_from, range_to, row_count) VALUES (1, 2, 'xlsx', now() - interval '7 days', now(), 10)`)
	e.exec(`INSERT INTO meter_readings (company_id, reading, ratio, small, ok, kind, code, unit, tags, meta, ref, day, at, local_at, note)
		VALUES (1, 12.5, 0.75, 3, false, 'water', 42, 'kwh', '{a,b}', '{"k": 1}', gen_random_uuid(), current_date, now(), now(), 'n')`)
	events := append(slices.Clone(allEvents), custom)
	real := map[string][]byte{}
	for _, typ := range events {
		e.waitEvents("/one", typ, 1)
		for _, r := range e.recv.requests("/one") {
			if p := decode(t, r); p.Event == typ && real[typ] == nil {
				real[typ] = r.Body
			}
		}
	}

	call := func(method, path string, body any) []byte {
		status, out := api.do(method, path, body)
		if status != 200 {
			t.Fatalf("%s %s: %d %s", method, path, status, out)
		}
		return out
	}
	var list struct {
		Webhooks []struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
		} `json:"webhooks"`
	}
	json.Unmarshal(call("GET", "/v1/webhooks", nil), &list)
	var hook int64
	for _, w := range list.Webhooks {
		if w.Name == "one" {
			hook = w.ID
		}
	}
	tests := map[string][]byte{}
	for _, typ := range events {
		var res struct {
			OK      bool            `json:"ok"`
			Payload json.RawMessage `json:"payload"`
		}
		json.Unmarshal(call("POST", "/v1/webhooks/"+itoa(hook)+"/test", map[string]any{"event_type": typ}), &res)
		if !res.OK {
			t.Errorf("%s: test event not delivered", typ)
		}
		tests[typ] = res.Payload

		realKeys, realVals := orderedData(t, real[typ])
		testKeys, testVals := orderedData(t, res.Payload)
		if strings.Join(realKeys, ",") != strings.Join(testKeys, ",") {
			t.Errorf("%s: test data fields %v, real %v", typ, testKeys, realKeys)
		}
		for _, k := range realKeys {
			if realVals[k] == nil {
				t.Errorf("%s: real data.%s is null; the changes above must fill it", typ, k)
				continue
			}
			if rk, tk := jsonKind(realVals[k]), jsonKind(testVals[k]); rk != tk {
				t.Errorf("%s: data.%s is %s (%v) in a test event, %s (%v) in a real one", typ, k, tk, testVals[k], rk, realVals[k])
			}
		}
	}

	// A test event reads like the change that fires its rule: a test
	// task.completed is of a completed task, a test task.assigned has a
	// technician, not the first value of every column.
	for typ, want := range map[string][2]any{
		"task.completed":         {"status", "completed"},
		"task.approved":          {"status", "approved"},
		"task.rejected":          {"status", "rejected"},
		"task.assigned":          {"technician_id", 1},
		"repair_request.updated": {"status", "in_review"},
	} {
		_, vals := orderedData(t, tests[typ])
		if got := vals[want[0].(string)]; fmt.Sprint(got) != fmt.Sprint(want[1]) {
			t.Errorf("%s: test data.%s = %v, want %v (a change that fires the rule)", typ, want[0], got, want[1])
		}
	}

	// The guide's example is a real test body in shape and types.
	doc, err := os.ReadFile(filepath.Join("..", "docs", "ADMIN.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n *(\\{\"event\": \"task.assigned\".*?)\n *```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/ADMIN.md has no example test body for task.assigned")
	}
	example := m[1]
	exKeys, exVals := orderedData(t, example)
	testKeys, testVals := orderedData(t, tests["task.assigned"])
	if strings.Join(exKeys, ",") != strings.Join(testKeys, ",") {
		t.Errorf("docs/ADMIN.md example data fields %v, a test body has %v", exKeys, testKeys)
	}
	for _, k := range testKeys {
		if ek, tk := jsonKind(exVals[k]), jsonKind(testVals[k]); ek != tk {
			t.Errorf("docs/ADMIN.md example data.%s is %s, a test body's is %s", k, ek, tk)
		}
	}
	var exTop, testTop map[string]any
	json.Unmarshal(example, &exTop)
	json.Unmarshal(tests["task.assigned"], &testTop)
	for k := range testTop {
		if _, ok := exTop[k]; !ok || len(exTop) != len(testTop) {
			t.Errorf("docs/ADMIN.md example has keys %v, a test body %v", exTop, testTop)
			break
		}
	}
	var compact bytes.Buffer
	json.Compact(&compact, tests["task.assigned"])
	t.Logf("test body: %s", compact.Bytes())
	compact.Reset()
	json.Compact(&compact, tests[custom])
	t.Logf("custom rule's test body: %s", compact.Bytes())
}
