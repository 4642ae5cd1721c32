package admin_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/store"
)

// TestStoreUnreachableIs503: while the relay's database cannot be reached
// (down, restarting), a request fails with 503 and says so, not with a
// 500 internal error: it may work in a moment.
func TestStoreUnreachableIs503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	st, err := store.Open(context.Background(), fmt.Sprintf("postgres://relay@%s/x?connect_timeout=2", addr), "relay")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = st.ListWebhooks(context.Background(), 1)
	if err == nil {
		t.Fatal("listing webhooks from a database that is not there worked")
	}
	p, ok := admin.Explain(err)
	if !ok || p.Status != http.StatusServiceUnavailable || p.Code != "store_unavailable" {
		t.Errorf("%v: explained as %+v (%v)", err, p, ok)
	}
	if p, ok := admin.Explain(fmt.Errorf("something else")); ok || p.Status != http.StatusInternalServerError {
		t.Errorf("another error: %+v", p)
	}
}
