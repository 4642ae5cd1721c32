package mapper

import (
	"testing"

	"github.com/smartmaintenance/relay/event"
)

// BenchmarkMap maps an update of a task that completes it: task.completed
// fires, the other task rules are evaluated and do not.
func BenchmarkMap(b *testing.B) {
	m := newDefault(b)
	dir := directory()
	c := update("tasks", with(taskRow, "status", "completed", "completed_at", "2026-04-24T02:15:30Z"))
	prior := event.Row{"status": "in_progress", "technician_id": int64(42)}
	b.ReportAllocs()
	for b.Loop() {
		drafts, _, err := m.Map(c, prior, dir)
		if err != nil || len(drafts) != 1 {
			b.Fatalf("Map = %v, %v", types(drafts), err)
		}
	}
}

// BenchmarkMapNoEvent maps an edit that fires nothing, the common case.
func BenchmarkMapNoEvent(b *testing.B) {
	m := newDefault(b)
	dir := directory()
	c := update("tasks", with(taskRow, "title", "Replace belt"))
	prior := event.Row{"status": "in_progress", "technician_id": int64(42)}
	b.ReportAllocs()
	for b.Loop() {
		drafts, _, err := m.Map(c, prior, dir)
		if err != nil || len(drafts) != 0 {
			b.Fatalf("Map = %v, %v", types(drafts), err)
		}
	}
}
