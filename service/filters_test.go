package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
)

// The guide's "Critical repair requests only": of several repair requests
// filed through the platform's tables, only the critical one reaches the
// filtered webhook, and the others cost it no delivery row. A filter
// changed while the relay runs applies to the events written after it; an
// event that every webhook's filter refuses is not stored at all.
func TestCriticalRepairRequestsOnly(t *testing.T) {
	e := newRelay(t)
	e.cfg.Webhooks.Endpoints = []config.Webhook{
		{CompanyID: 1, Name: "critical", URL: e.recv.URL + "/critical", Events: []string{"repair_request.created"},
			Secret: secret1, Active: true, Filter: `data.priority == "critical"`},
		{CompanyID: 1, Name: "all", URL: e.recv.URL + "/all", Events: []string{"repair_request.created"}, Secret: secret1, Active: true},
	}
	e.start()
	for _, p := range []string{"low", "critical", "medium", "high"} {
		e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES (1, 1, $1, $2, 3)`,
			"Boiler 2 leaking ("+p+")", p)
	}
	// One transaction of several requests, the critical one in the middle.
	e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by)
		VALUES (1, 1, 'Pump', 'low', 3), (1, 1, 'Valve burst', 'critical', 3), (1, 1, 'Lamp', 'medium', 3)`)
	e.waitEvents("/all", "repair_request.created", 7)
	got := e.waitEvents("/critical", "repair_request.created", 2)
	time.Sleep(300 * time.Millisecond) // nothing else arrives
	got = e.recv.events(t, "/critical", "repair_request.created")
	titles := map[any]bool{}
	for _, p := range got {
		titles[p.Data["title"]] = p.Data["priority"] == "critical"
	}
	// Arrival order is not guaranteed: compare the sets.
	if len(got) != 2 || !titles["Boiler 2 leaking (critical)"] || !titles["Valve burst"] {
		t.Fatalf("the filtered webhook got %v; want the two critical requests", got)
	}
	deliveries := func(name string) int {
		var n int
		e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id
			WHERE w.name = $1`, name).Scan(&n)
		return n
	}
	if n := deliveries("critical"); n != 2 {
		t.Fatalf("the filtered webhook has %d delivery rows; want 2", n)
	}

	// The filter changes while the relay runs: high requests pass from now
	// on. With the other webhook disabled, a request no filter takes is not
	// stored.
	e.exec(`UPDATE relay.webhooks SET filter = 'data.priority in ["critical", "high"]' WHERE name = 'critical'`)
	e.exec(`UPDATE relay.webhooks SET active = false WHERE name = 'all'`)
	e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES (1, 1, 'Filtered out', 'low', 3)`)
	e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES (1, 1, 'Conveyor', 'high', 3)`)
	got = e.waitEvents("/critical", "repair_request.created", 3)
	time.Sleep(300 * time.Millisecond) // nothing else arrives
	got = e.recv.events(t, "/critical", "repair_request.created")
	var conveyor bool
	for _, p := range got {
		conveyor = conveyor || p.Data["title"] == "Conveyor"
	}
	if len(got) != 3 || !conveyor {
		t.Fatalf("after the filter changed the webhook got %v; want the high request as the third", got)
	}
	var stored, all int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE convert_from(body, 'UTF8')::jsonb->'data'->>'title' = 'Filtered out'),
			count(*) FROM relay.events`).Scan(&stored, &all); err != nil || all != 8 {
		t.Fatalf("events stored: %d, %v; want 8", all, err)
	}
	if stored != 0 || deliveries("critical") != 3 {
		t.Fatalf("an event no webhook takes: %d events stored, %d deliveries of the filtered webhook; want 0 and 3", stored, deliveries("critical"))
	}
}
