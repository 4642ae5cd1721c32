package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/signature"
)

// The guide's example, as an admin sets it up: "Alert Slack when a
// Critical repair request is filed". A webhook registered through the
// admin API in Slack format with the filter data.priority == "critical"
// gets one Slack message, for the critical request only, signed over the
// message sent, while a raw webhook beside it gets every request. A replay
// of the last hour to the Slack webhook applies its filter too: only the
// critical request is sent again, under its delivery id, marked as a
// replay, and the others still cost the Slack webhook no delivery row.
func TestCriticalRepairRequestsToSlack(t *testing.T) {
	e := newRelay(t)
	api := e.withAdminAPI()
	e.cfg.Webhooks.Endpoints = []config.Webhook{
		{CompanyID: 1, Name: "all", URL: e.recv.URL + "/all", Events: []string{"repair_request.created"}, Secret: secret1, Active: true},
	}
	e.start()
	status, created := api.call("POST", "/v1/webhooks", map[string]any{"name": "Slack #maintenance", "url": e.recv.URL + "/slack",
		"events": []string{"repair_request.created"}, "format": "slack", "filter": `data.priority == "critical"`})
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, created)
	}
	secret := created["secret"].(string)
	hook := int64(created["webhook"].(map[string]any)["id"].(float64))

	for _, p := range []string{"low", "critical", "high", "medium"} {
		e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES (1, 1, $1, $2, 3)`,
			"Boiler 2 "+p, p)
	}
	e.waitEvents("/all", "repair_request.created", 4)
	e.waitFor("the Slack message", func() bool { return len(e.recv.requests("/slack")) >= 1 })
	time.Sleep(300 * time.Millisecond) // nothing else arrives
	got := e.recv.requests("/slack")
	if len(got) != 1 {
		t.Fatalf("the Slack webhook got %d requests; want 1, the critical request's", len(got))
	}
	first := got[0]
	var msg struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(first.Body, &msg); err != nil {
		t.Fatalf("not a Slack message: %s", first.Body)
	}
	if !regexp.MustCompile(`^Critical repair request #\d+ filed: Boiler 2 critical \(PT Kahatex\)$`).MatchString(msg.Text) || len(msg.Blocks) == 0 {
		t.Fatalf("Slack message %s", first.Body)
	}
	if err := signature.Verify([]byte(secret), first.Body, first.Header.Get(signature.Header)); err != nil {
		t.Fatalf("the Slack message's signature: %v", err)
	}

	status, rp := api.call("POST", "/v1/webhooks/"+itoa(hook)+"/replays", map[string]any{"since": "1h"})
	if status != http.StatusCreated && status != http.StatusAccepted {
		t.Fatalf("replay: %d %v", status, rp)
	}
	replayID := int64(rp["replay"].(map[string]any)["id"].(float64))
	e.waitFor("the replay to finish", func() bool {
		_, r := api.call("GET", "/v1/webhooks/"+itoa(hook)+"/replays/"+itoa(replayID), nil)
		v, _ := r["replay"].(map[string]any)
		return v["state"] == "done" && v["pending"] == float64(0)
	})
	time.Sleep(300 * time.Millisecond)
	got = e.recv.requests("/slack")
	if len(got) != 2 {
		t.Fatalf("after the replay the Slack webhook has %d requests; want 2: the critical request's again, no other", len(got))
	}
	again := got[1]
	if again.Header.Get(signature.DeliveryHeader) != first.Header.Get(signature.DeliveryHeader) ||
		again.Header.Get("X-SMTM-Replay") != itoa(replayID) || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("the replayed request: headers %v body %s; want the first's delivery id and body, marked as replay %d", again.Header, again.Body, replayID)
	}
	var rows int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE webhook_id = $1`, hook).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("the Slack webhook has %d delivery rows (%v); want 1", rows, err)
	}
}
