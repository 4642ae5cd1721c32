package mapper

import (
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/event"
)

// TestSampleData: a rule's data evaluated on one row, whatever its When
// says, encoded as Map encodes it; a field whose expression fails is null
// and its error returned.
func TestSampleData(t *testing.T) {
	m, err := New([]Rule{{Event: "t.done", Table: "t", When: `new.status == "done" && old.status != "done"`,
		Data: []map[string]string{{"id": "new.id"}, {"by": "new.by"}, {"at": "new.at"}, {"ok": "new.ok"},
			{"prev": "old.status"}, {"n": "new.n * 2"}, {"bad": "new.id / new.missing.x"}, {"tags": "new.tags"}}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	row := event.Row{"id": int64(0), "by": int64(0), "at": "2026-04-24T02:15:30.5Z", "ok": true, "status": "open",
		"n": 0.5, "tags": []any{"a"}}
	got, err := m.SampleData("t.done", row)
	want := `{"id":0,"by":0,"at":"2026-04-24T02:15:30.5Z","ok":true,"prev":"open","n":1,"bad":null,"tags":["a"]}`
	if string(got) != want {
		t.Errorf("SampleData =\n%s\nwant\n%s", got, want)
	}
	if err == nil || !strings.Contains(err.Error(), "data.bad") {
		t.Errorf("error %v, want one naming data.bad", err)
	}
	if table, ok := m.RuleTable("t.done"); !ok || table != "t" {
		t.Errorf("RuleTable = %q %v", table, ok)
	}
	if _, err := m.SampleData("t.other", row); err == nil {
		t.Error("SampleData of an unknown event type succeeded")
	}
}
