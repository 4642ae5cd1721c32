package service_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/signature"
)

// TestAdminAPIInRun: service.Run serves the admin API; a webhook registered
// through it gets the events committed after it was saved (not one
// committed before), signed with the secret the API generated, which is
// stored encrypted and decrypted by the relay's claims; the API stops with
// the relay.
func TestAdminAPIInRun(t *testing.T) {
	e := newRelay(t)
	api := e.withAdminAPI()
	addr := api.addr
	e.start()

	call := api.call

	// Committed before the webhook exists: not for it.
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 111)`)
	e.waitEvents("/one", "audit.exported", 1)
	time.Sleep(20 * time.Millisecond)

	status, created := call("POST", "/v1/webhooks", map[string]any{"name": "new", "url": e.recv.URL + "/new", "events": []string{"audit.exported"}})
	if status != 201 {
		t.Fatalf("create: %d %v", status, created)
	}
	secret := created["secret"].(string)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 222)`)
	got := e.waitEvents("/new", "audit.exported", 1)
	time.Sleep(300 * time.Millisecond)
	got = e.recv.events(t, "/new", "audit.exported")
	if len(got) != 1 || got[0].Data["row_count"].(float64) != 222 {
		t.Fatalf("new webhook got %v; want only the export committed after it was saved", got)
	}
	req := e.recv.requests("/new")[0]
	if err := signature.Verify([]byte(secret), req.Body, req.Header.Get(signature.Header)); err != nil {
		t.Errorf("delivery not signed with the generated secret: %v", err)
	}
	var raw string
	e.pool.QueryRow(context.Background(), `SELECT secret FROM relay.webhooks WHERE name = 'new'`).Scan(&raw)
	if !strings.HasPrefix(raw, "enc:v1:") {
		t.Errorf("secret stored as %q", raw)
	}
	if status, ev := call("GET", "/v1/events", nil); status != 200 || len(ev["events"].([]any)) != len(allEvents) {
		t.Errorf("events: %d %v", status, ev)
	}
	// The test event names the company from the platform database.
	id := int64(created["webhook"].(map[string]any)["id"].(float64))
	_, res := call("POST", "/v1/webhooks/"+itoa(id)+"/test", map[string]any{"event_type": "task.completed"})
	var p map[string]any
	json.Unmarshal([]byte(mustJSON(res["payload"])), &p)
	if res["ok"] != true || p["company_name"] != "PT Kahatex" || !strings.HasSuffix(p["timestamp"].(string), "+07:00") {
		t.Errorf("test event: %v", res)
	}

	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the admin API still listens after the relay stopped")
	}
	if strings.Contains(e.logs.String(), secret) {
		t.Error("the relay's log contains the generated secret")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }
