package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/mapper"
)

// BenchmarkWriteFiltered measures what an event costs a webhook with a
// filter (data.priority == "critical"): deciding the filter on the
// event's payload, as the ingester does, and storing batches of 500 such
// events with their row state and the position. "delivered": every event
// passes (an event and a delivery row each); "filtered_out": none does
// (no row). Reported per event; compare with BenchmarkWriteBatch and
// BenchmarkWriteBatchNoSubscriber, the same without a filter.
func BenchmarkWriteFiltered(b *testing.B) {
	b.Run("delivered", func(b *testing.B) { benchmarkWriteFiltered(b, "critical", 1) })
	b.Run("filtered_out", func(b *testing.B) { benchmarkWriteFiltered(b, "low", 0) })
}

func benchmarkWriteFiltered(b *testing.B, priority string, fanOut int) {
	ctx := context.Background()
	st := benchStore(b, `INSERT INTO relay.webhooks (company_id, name, url, events, filter, created_at)
		VALUES (1, 'w', 'http://127.0.0.1:1', '{repair_request.created}', 'data.priority == "critical"', now() - interval '1 day')`)
	known, err := st.WebhookFilters(ctx)
	if err != nil {
		b.Fatal(err)
	}
	filter, err := mapper.CompileFilter(known[0].Filter, nil)
	if err != nil {
		b.Fatal(err)
	}
	const batch = 500
	body := []byte(`{"event":"repair_request.created","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"repair_request_id":431,"asset_id":678,"title":"Boiler 2 leaking","priority":"` +
		priority + `","status":"open","requested_by":42}}`)
	lsn, prev := event.LSN(100), event.LSN(1)
	b.ReportAllocs()
	for b.Loop() {
		lsn++
		events := make([]event.Event, batch)
		states := make([]StateRow, batch)
		var f Filtering
		f.Known = known
		for i := range events {
			events[i] = event.Event{Type: "repair_request.created", CompanyID: 1, CommitLSN: lsn, Seq: i, CommitTime: time.Now(),
				Table: "repair_requests", Op: event.Insert, Body: body}
			states[i] = StateRow{Table: "repair_requests", Key: fmt.Sprint(i), Vals: event.Row{"status": "open"}}
			env, err := mapper.NewFilterEnv(events[i].Body)
			if err != nil {
				b.Fatal(err)
			}
			if ok, _ := filter.Match(env); !ok {
				f.Excluded = append(f.Excluded, Exclusion{CommitLSN: lsn, Seq: i, WebhookID: known[0].WebhookID})
			}
		}
		writeBatch(b, st, Batch{Events: events, States: states, Filtering: f}, int64(batch*fanOut), prev, lsn)
		prev = lsn
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
}
