package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/secrets"
)

// TestHeaderValuesAtRest: with a key, a header value saved through the API
// is stored sealed (its name in clear), answered masked, and sent in clear
// to the receiver; one no configured key decrypts shows as header_error,
// refuses a test event rather than send without it, and is repaired by
// saving the headers again.
func TestHeaderValuesAtRest(t *testing.T) {
	e := newEnv(t, envOptions{key: true})
	const first, second, third = "Bearer api-first-token-97531", "Bearer api-second-token-86420", "Bearer api-third-token-75319"
	id, _ := e.create(tokenA, map[string]any{"name": "h", "url": e.recv.URL + "/h", "events": []string{"task.completed"},
		"secret": "header-test-secret-0123456789", "headers": map[string]string{"Authorization": first}})
	stored := func() string {
		t.Helper()
		var v string
		if err := e.st.Pool().QueryRow(context.Background(), `SELECT headers->>'Authorization' FROM relay.webhooks WHERE id = $1`, id).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := stored(); !strings.HasPrefix(v, "enc:v1:") {
		t.Fatalf("header stored as %q", v)
	}
	get := func() map[string]any {
		t.Helper()
		return e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d", id), nil).json(t)["webhook"].(map[string]any)
	}
	if w := get(); fmt.Sprint(w["headers"]) != "map[Authorization:xxxxx]" || w["header_error"] != nil {
		t.Errorf("GET: headers %v, header_error %v", w["headers"], w["header_error"])
	}
	fire := func() int {
		t.Helper()
		return e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"}).status
	}
	lastAuth := func() string {
		got := e.recv.requests()
		return got[len(got)-1].header.Get("Authorization")
	}
	if code := fire(); code != 200 || lastAuth() != first {
		t.Fatalf("test event: %d, Authorization %q", code, lastAuth())
	}
	if r := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"headers": map[string]string{"Authorization": second}}); r.status != 200 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if code := fire(); code != 200 || lastAuth() != second || !strings.HasPrefix(stored(), "enc:v1:") {
		t.Fatalf("after the update: %d, Authorization %q, stored %q", code, lastAuth(), stored())
	}

	// Sealed with a key this relay does not have.
	lost, _ := secrets.New(bytes.Repeat([]byte{7}, secrets.KeyBytes))
	foreign, _ := lost.SealHeader("Bearer lost")
	e.st.Pool().Exec(context.Background(), `UPDATE relay.webhooks SET headers = jsonb_build_object('Authorization', $1::text) WHERE id = $2`, foreign, id)
	if w := get(); !strings.Contains(fmt.Sprint(w["header_error"]), "Authorization") || !strings.Contains(fmt.Sprint(w["header_error"]), "cannot decrypt the header value") {
		t.Errorf("GET of an unreadable header: %v", w)
	}
	n := len(e.recv.requests())
	r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"})
	if r.status != 409 || r.errorOf(t)["code"] != "header_unreadable" || len(e.recv.requests()) != n {
		t.Errorf("test event with an unreadable header: %d %s", r.status, r.body)
	}
	// A rename keeps it as it is; saving the headers repairs it.
	e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"name": "h2"})
	if stored() != foreign {
		t.Error("an edit without headers changed the stored header")
	}
	e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"headers": map[string]string{"Authorization": third}})
	if code := fire(); code != 200 || lastAuth() != third {
		t.Errorf("after saving the headers again: %d, Authorization %q", code, lastAuth())
	}
	var dump string
	e.st.Pool().QueryRow(context.Background(), `SELECT string_agg(w::text, ' ') FROM relay.webhooks w`).Scan(&dump)
	for _, v := range []string{first, second, third} {
		if strings.Contains(dump, v) {
			t.Errorf("%q is stored in clear", v)
		}
	}
	assertNoSecrets(t, e, []string{first, second, third})
}
