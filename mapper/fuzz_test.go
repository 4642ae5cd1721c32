package mapper

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// fuzzTables are the tables FuzzMap changes: the default rules' tables, the
// companies table and one no rule uses.
var fuzzTables = []string{"tasks", "repair_requests", "shutdowns", "users", "activity_log_exports", "companies", "assets"}

var fuzzColumns = []string{"id", "company_id", "status", "technician_id", "active", "title", "description", "name", "time_zone", "payload"}

// FuzzMap feeds arbitrary rows, records and unchanged-column lists through
// the default rules and a few extra ones. Map must not panic or hang, must
// give valid JSON of the contract's shape, must not change its inputs, and
// must give the same bytes twice.
func FuzzMap(f *testing.F) {
	f.Add(uint8(0), uint8(1), "completed", "in_progress", int64(1), 42.0, true, uint16(0x0f0f), uint16(0x00ff), uint8(0))
	f.Add(uint8(3), uint8(1), "", "\xff<&>", int64(-1), math.NaN(), false, uint16(0xffff), uint16(0), uint8(3))
	f.Add(uint8(5), uint8(2), "Asia/Jakarta", "Mars/Base", int64(math.MaxInt64), math.Inf(1), true, uint16(0x1234), uint16(0x4321), uint8(7))
	f.Add(uint8(1), uint8(0), "open", "12.000", int64(0), -0.0, false, uint16(0xaaaa), uint16(0x5555), uint8(1))

	rules := append(DefaultRules(),
		Rule{Event: "fuzz.any", Table: "tasks", On: []string{"insert", "update", "delete"},
			When: `"status" in old || new.description != old.description`,
			Data: []map[string]string{{"row": "new"}, {"d": "new.description"}, {"len": "len(string(new.title ?? old.title ?? \"\"))"}}},
		Rule{Event: "fuzz.company", Table: "users", On: []string{"delete"}, Company: "old.company_id ?? 0",
			Data: []map[string]string{{"payload": "old.payload"}}},
	)
	m, err := New(rules, Options{})
	if err != nil {
		f.Fatal(err)
	}
	tables := m.Tables()
	dir := directory()

	f.Fuzz(func(t *testing.T, tableSel, opSel uint8, s1, s2 string, n int64, fl float64, b bool, newMask, priorMask uint16, kinds uint8) {
		table := fuzzTables[int(tableSel)%len(fuzzTables)]
		op := []event.Op{event.Insert, event.Update, event.Delete, event.Truncate}[int(opSel)%4]
		value := func(i int) any {
			switch (int(kinds) + i) % 9 {
			case 0:
				return nil
			case 1:
				return b
			case 2:
				return n + int64(i)
			case 3:
				return fl
			case 4:
				return s1
			case 5:
				return s2
			case 6:
				return []any{s1, n, fl, nil}
			case 7:
				return map[string]any{s1: fl, "k": []any{b}}
			default:
				return json.Number(s2)
			}
		}
		row := func(mask uint16, salt int) event.Row {
			r := event.Row{}
			for i, col := range fuzzColumns {
				if mask&(1<<i) != 0 {
					r[col] = value(i + salt)
				}
			}
			if mask&(1<<15) != 0 {
				r[s1] = s2
			}
			return r
		}
		c := &event.Change{CommitTime: commitTime.Add(durationOf(n)), Table: table, Op: op}
		if op == event.Insert || op == event.Update {
			c.New = row(newMask, 0)
			for i, col := range fuzzColumns {
				if newMask&(1<<(i+5)) != 0 && (i+int(kinds))%3 == 0 {
					delete(c.New, col)
					c.Unchanged = append(c.Unchanged, col)
				}
			}
		}
		if op == event.Delete || (op == event.Update && kinds&0x80 != 0) {
			c.Old = row(priorMask>>3, 1)
		}
		var prior event.Row
		if priorMask&1 != 0 {
			prior = row(priorMask, 2)
		}
		before := fmt.Sprintf("%#v|%#v|%#v", c.New, c.Old, prior)

		drafts, next, err := m.Map(c, prior, dir)
		if after := fmt.Sprintf("%#v|%#v|%#v", c.New, c.Old, prior); after != before {
			t.Fatalf("Map changed its input:\n%s\n%s", before, after)
		}
		for _, d := range drafts {
			if !json.Valid(d.Body) {
				t.Fatalf("%s: invalid JSON %q", d.Type, d.Body)
			}
			var p struct {
				Event     string
				Timestamp string
				CompanyID int64 `json:"company_id"`
				Data      map[string]json.RawMessage
			}
			if err := json.Unmarshal(d.Body, &p); err != nil || p.Event != d.Type || p.CompanyID != d.CompanyID || p.Data == nil {
				t.Fatalf("%s: payload %s: %v", d.Type, d.Body, err)
			}
			if !bytes.HasPrefix(d.Body, []byte(`{"event":`)) || !strings.Contains(string(d.Body), `","company_id":`) {
				t.Fatalf("payload key order: %s", d.Body)
			}
		}
		spec, watched := tables[table]
		for col := range next {
			if !watched || !slices.Contains(spec.Tracked, col) {
				t.Fatalf("next holds untracked column %q: %v", col, next)
			}
		}
		if (op == event.Delete || op == event.Truncate) && next != nil {
			t.Fatalf("next after %s = %v", op, next)
		}

		again, _, err2 := m.Map(c, prior, dir)
		if fmt.Sprint(err) != fmt.Sprint(err2) || len(again) != len(drafts) {
			t.Fatalf("second Map differs: %v / %v", err, err2)
		}
		for i := range again {
			if !bytes.Equal(again[i].Body, drafts[i].Body) {
				t.Fatalf("second Map gave other bytes:\n%s\n%s", drafts[i].Body, again[i].Body)
			}
		}
	})
}

// durationOf spreads commit times over a few centuries either way.
func durationOf(n int64) time.Duration {
	return time.Duration(n%(300*365*24*3600)) * time.Second
}

// FuzzAppendTimestamp checks the payload's timestamp against AppendFormat
// with TimestampLayout, in zones with offsets of whole hours, minutes and
// seconds (as local mean times have), either side of UTC, up to 120 hours
// (more than any zone has).
func FuzzAppendTimestamp(f *testing.F) {
	f.Add(int64(1777000530123456789), int32(7*3600))
	f.Add(int64(0), int32(0))
	f.Add(int64(-62135596800), int32(-1830)) // year 1 (as seconds), -00:30:30
	f.Add(int64(253402300799), int32(20700)) // 9999-12-31 (as seconds), +05:45
	f.Add(int64(-9223372036854775808), int32(-43200))
	f.Add(int64(1777000530), int32(100*3600))
	f.Fuzz(func(t *testing.T, nanos int64, offset int32) {
		zone := time.FixedZone("z", int(offset)%(120*3600))
		for _, tm := range []time.Time{time.Unix(0, nanos).In(zone), time.Unix(nanos, 0).In(zone)} {
			want := tm.AppendFormat(nil, TimestampLayout)
			if got := appendTimestamp(nil, tm); !bytes.Equal(got, want) {
				t.Fatalf("appendTimestamp(%v) = %s, want %s", tm, got, want)
			}
		}
	})
}

// FuzzValueString checks the payload's strings against encoding/json,
// which writes those with anything to escape.
func FuzzValueString(f *testing.F) {
	for _, s := range []string{"", "Replace drive belt", `say "hi"`, `a\b`, "<b>&</b>", "tab\there", "é", "\u2028", "\xff", "\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc := newScratch()
		if err := sc.value(s); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := sc.buf.String(); got != strings.TrimSuffix(want.String(), "\n") {
			t.Fatalf("value(%q) = %s, want %s", s, got, want.String())
		}
	})
}
