package service_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/secrets"
)

// TestHeaderValuesSealedAtRest: header values stored in clear by a relay
// without a key (the file's webhook and one saved in the table) are sealed
// when the relay starts with secrets.key, and sealed again under a new key
// when the key is rotated (the old one in secrets.previous_keys); the
// receiver gets the plain value every time, and neither the table nor the
// log ever holds it in clear once a key is set.
func TestHeaderValuesSealedAtRest(t *testing.T) {
	const (
		fileToken  = "Bearer file-token-8642097531"
		tableToken = "Bearer table-token-1357924680"
		key1       = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
		key2       = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
	)
	e := newRelay(t)
	e.cfg.Webhooks.Endpoints[0].Headers = map[string]string{"Authorization": fileToken}
	e.start()
	stored := func(name string) string {
		t.Helper()
		var v string
		if err := e.pool.QueryRow(context.Background(), `SELECT coalesce(headers->>'Authorization', '') FROM relay.webhooks WHERE name = $1`, name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if stored("one") != fileToken {
		t.Fatalf("without a key the header is stored as %q", stored("one"))
	}
	e.exec(`INSERT INTO relay.webhooks (company_id, name, url, events, headers, managed_by)
		VALUES (1, 'table', $1, '{audit.exported}', jsonb_build_object('Authorization', $2::text), 'table')`, e.recv.URL+"/table", tableToken)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}

	sent := 0
	deliver := func() {
		t.Helper()
		sent++
		e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, $1)`, sent)
		for path, want := range map[string]string{"/one": fileToken, "/table": tableToken} {
			e.waitEvents(path, "audit.exported", sent)
			reqs := e.recv.requests(path)
			if got := reqs[len(reqs)-1].Header.Get("Authorization"); got != want {
				t.Errorf("%s got Authorization %q, want %q", path, got, want)
			}
		}
	}
	noneInClear := func() {
		t.Helper()
		var dump string
		e.pool.QueryRow(context.Background(), `SELECT string_agg(w::text, E'\n') FROM relay.webhooks w`).Scan(&dump)
		for _, v := range []string{fileToken, tableToken} {
			if strings.Contains(dump, v) {
				t.Errorf("%q is stored in clear:\n%s", v, dump)
			}
		}
	}
	// start returns once the slot streams, which a relay stopped a moment
	// ago may still report: wait for the new one to have sealed.
	sealedWith := func(key byte) {
		t.Helper()
		prefix := "enc:v1:" + secrets.KeyID(bytes.Repeat([]byte{key}, secrets.KeyBytes)) + ":"
		e.waitFor("headers sealed with "+prefix, func() bool {
			return strings.HasPrefix(stored("one"), prefix) && strings.HasPrefix(stored("table"), prefix)
		})
		noneInClear()
	}

	e.cfg.Secrets.Key = key1
	e.start()
	sealedWith(1)
	deliver()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}

	e.cfg.Secrets.Key, e.cfg.Secrets.PreviousKeys = key2, []string{key1}
	e.start()
	sealedWith(2)
	deliver()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{fileToken, tableToken, key1, key2} {
		if strings.Contains(e.logs.String(), v) {
			t.Errorf("the relay's log contains %q", v)
		}
	}
}
