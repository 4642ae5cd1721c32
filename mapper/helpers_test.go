package mapper

import (
	"errors"
	"flag"
	"maps"
	"math"
	"testing"
	"time"

	// The time zone tests must not depend on the host's zoneinfo files.
	_ "time/tzdata"

	"github.com/smartmaintenance/relay/event"
)

var rewrite = flag.Bool("update", false, "rewrite testdata/golden and the generated parts of docs/EVENTS.md")

// commitTime is 09:15:30.987654 in Jakarta (+07:00). PostgreSQL's commit
// times have microseconds; the nanoseconds beyond are there to show that
// payloads drop them rather than round.
var commitTime = time.Date(2026, 4, 24, 2, 15, 30, 987654321, time.UTC)

func newDefault(tb testing.TB) *Mapper {
	tb.Helper()
	m, err := New(DefaultRules(), Options{})
	if err != nil {
		tb.Fatalf("New(DefaultRules()): %v", err)
	}
	return m
}

// directory holds the two companies of platform/sample.sql.
func directory() *Companies {
	dir := NewCompanies()
	dir.Set(1, event.Row{"name": "PT Kahatex", "time_zone": "Asia/Jakarta"})
	dir.Set(2, event.Row{"name": "Nordwerk GmbH", "time_zone": "Europe/Berlin"})
	return dir
}

// with returns a copy of row with kv (column, value, column, value, ...)
// set; a nil row starts empty.
func with(row event.Row, kv ...any) event.Row {
	out := maps.Clone(row)
	if out == nil {
		out = event.Row{}
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// Whole rows of the reference schema, as the change feed normalises them.
var (
	taskRow = event.Row{
		"id": int64(12345), "company_id": int64(1), "asset_id": int64(678),
		"title": "Replace drive belt & tensioner", "description": "Belt is frayed on the left side.",
		"status": "in_progress", "priority": "high",
		"technician_id": int64(42), "assigned_by": int64(2), "reviewed_by": nil,
		"rejection_reason": nil, "due_at": "2026-04-25T03:00:00Z",
		"completed_at": nil, "reviewed_at": nil,
		"created_at": "2026-04-20T01:00:00Z", "updated_at": "2026-04-24T02:15:30Z",
	}
	repairRow = event.Row{
		"id": int64(3021), "company_id": int64(1), "asset_id": int64(678),
		"title": "Loom 12 vibrates above 300 rpm", "description": "",
		"priority": "critical", "status": "open",
		"requested_by": int64(3), "updated_by": nil,
		"created_at": "2026-04-24T02:15:30Z", "updated_at": "2026-04-24T02:15:30Z",
	}
	shutdownRow = event.Row{
		"id": int64(88), "company_id": int64(2), "asset_id": int64(4),
		"reason": "Compressor K1 overheating", "status": "open",
		"reported_by": int64(7), "resolved_by": nil, "resolution": nil,
		"started_at": "2026-04-24T02:10:00Z", "resolved_at": nil,
	}
	userRow = event.Row{
		"id": int64(7), "company_id": int64(2), "email": "tech1@nordwerk.example",
		"full_name": "Mia Schulz", "role": "technician", "active": true,
		"created_by": int64(5), "deactivated_by": nil, "deactivated_at": nil,
		"created_at": "2026-01-05T08:00:00Z", "updated_at": "2026-01-05T08:00:00Z",
	}
	exportRow = event.Row{
		"id": int64(501), "company_id": int64(1), "exported_by": int64(1),
		"format": "xlsx", "range_from": "2026-03-31T17:00:00Z", "range_to": "2026-04-23T17:00:00Z",
		"row_count": int64(1842), "created_at": "2026-04-24T02:15:30Z",
	}
	companyRow = event.Row{
		"id": int64(1), "name": "PT Kahatex", "time_zone": "Asia/Jakarta", "created_at": "2025-11-01T00:00:00Z",
	}
)

func insert(table string, row event.Row) *event.Change {
	return &event.Change{CommitTime: commitTime, Schema: "public", Table: table, Op: event.Insert, New: row}
}

// update is an update under the default replica identity: the new row only.
func update(table string, row event.Row) *event.Change {
	return &event.Change{CommitTime: commitTime, Schema: "public", Table: table, Op: event.Update, New: row}
}

// del is a delete under the default replica identity: the key only.
func del(table string, row event.Row) *event.Change {
	return &event.Change{CommitTime: commitTime, Schema: "public", Table: table, Op: event.Delete, Old: event.Row{"id": row["id"]}}
}

func types(drafts []Draft) []string {
	out := []string{}
	for _, d := range drafts {
		out = append(out, d.Type)
	}
	return out
}

func nan() float64                        { return math.NaN() }
func inf(sign int) float64                { return math.Inf(sign) }
func errorsAs(err error, target any) bool { return errors.As(err, target) }
