package store

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// BenchmarkWriteCommitOne measures the steady path's store transaction:
// one source transaction of one event, fanned out to one webhook and
// leased to the sender, with its row state and the position, in one
// pipeline (WriteCommit). Its cost is mostly per statement, not per row.
// pg-µs/op is the CPU every postgres process on the machine used per
// store transaction: run it on an otherwise idle machine.
func BenchmarkWriteCommitOne(b *testing.B) {
	ctx := context.Background()
	st, body, lease := steadyBench(b)
	lsn, prev := event.LSN(100), event.LSN(1)
	b.ReportAllocs()
	cpu := postgresCPU()
	for b.Loop() {
		lsn++
		events := []event.Event{{Type: "task.completed", CompanyID: 1, CommitLSN: lsn, CommitTime: time.Now(), Table: "tasks", Op: event.Update, Body: body}}
		states := []StateRow{{Table: "tasks", Key: "1", Vals: event.Row{"status": "completed", "technician_id": int64(42)}}}
		n, leased, err := st.WriteCommit(ctx, "s", Batch{Events: events, States: states, Lease: lease}, prev, lsn)
		if err != nil || n != 1 || len(leased.Ready) != 1 {
			b.Fatalf("wrote %d deliveries, leased %d: %v", n, len(leased.Ready), err)
		}
		prev = lsn
	}
	b.ReportMetric(float64((postgresCPU()-cpu).Microseconds())/float64(b.N), "pg-µs/op")
}

// steadyBench returns a store with one webhook that takes task.completed,
// a task.completed payload and the lease the steady path writes with.
func steadyBench(b *testing.B) (*Store, []byte, WriteLease) {
	st := benchStore(b, `INSERT INTO relay.webhooks (company_id, name, url, events, created_at)
		VALUES (1, 'w', 'http://127.0.0.1:1', '{task.completed}', now() - interval '1 day')`)
	body := []byte(`{"event":"task.completed","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"task_id":12345,"asset_id":678,"technician_id":42}}`)
	return st, body, WriteLease{Owner: "bench", Lease: time.Minute, Limit: 1000, Room: 100, HeldLimit: 1000, Hold: 100}
}

// postgresCPU is the CPU time all processes named postgres on this machine
// have used (utime and stime in /proc/PID/stat, in clock ticks of 10 ms),
// for benchmarks that report the database's share.
func postgresCPU() time.Duration {
	var total time.Duration
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil || !bytes.Contains(b, []byte("(postgres)")) {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+s) * 10 * time.Millisecond
	}
	return total
}

// BenchmarkWriteCommitAhead measures the steady path's store transaction as
// the relay writes it at 1,000 source transactions a second: a group of 100
// source transactions of one event each, every delivery sent ahead and
// delivered before the write, stored with its result, with the row state
// and the position, in one pipeline (WriteCommit), deciding the fan-out
// from the webhooks' rows as a write whose deliveries did not all go
// ahead does. pg-µs/event is the CPU every postgres process on the
// machine used per event: run it on an otherwise idle machine.
func BenchmarkWriteCommitAhead(b *testing.B) { benchmarkWriteCommitAhead(b, false) }

// BenchmarkWriteCommitWhole is BenchmarkWriteCommitAhead as the relay
// writes such a group: knowing that every delivery went ahead
// (Batch.WholeAt), so that only they are stored (writeAheadSQL).
func BenchmarkWriteCommitWhole(b *testing.B) { benchmarkWriteCommitAhead(b, true) }

func benchmarkWriteCommitAhead(b *testing.B, whole bool) {
	ctx := context.Background()
	st, body, lease := steadyBench(b)
	var version int64
	if whole {
		var err error
		if version, err = st.WebhooksVersion(ctx); err != nil {
			b.Fatal(err)
		}
	}
	const group = 100
	lsn, prev := event.LSN(100), event.LSN(1)
	var task int
	b.ReportAllocs()
	cpu := postgresCPU()
	for b.Loop() {
		events := make([]event.Event, group)
		states := make([]StateRow, group)
		ahead := make([]Ahead, group)
		results := make([]AttemptResult, group)
		for i := range events {
			lsn++
			task++
			events[i] = event.Event{Type: "task.completed", CompanyID: 1, CommitLSN: lsn, CommitTime: time.Now(), Table: "tasks", Op: event.Insert, Body: body}
			states[i] = StateRow{Table: "tasks", Key: strconv.Itoa(task), Vals: event.Row{"status": "completed", "technician_id": int64(42)}}
			results[i] = AttemptResult{Attempt: 1, StartedAt: time.Now(), Duration: 300 * time.Microsecond, StatusCode: 200, Status: StatusDelivered}
			ahead[i] = Ahead{CommitLSN: lsn, WebhookID: 1, Result: &results[i]}
		}
		n, _, err := st.WriteCommit(ctx, "s", Batch{Events: events, States: states, Lease: lease, Ahead: ahead, WholeAt: version}, prev, lsn)
		if err != nil || n != group {
			b.Fatalf("wrote %d deliveries: %v", n, err)
		}
		prev = lsn
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*group), "ns/event")
	b.ReportMetric(float64((postgresCPU()-cpu).Microseconds())/float64(b.N*group), "pg-µs/event")
}
