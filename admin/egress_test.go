package admin_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRegisterRefusesAddressForms: with the production allowlist (empty),
// the API answers 422 naming the url field for internal addresses written
// with an IPv6 zone, as IPv4 in IPv6, as a numeric name or with a trailing
// dot, and saves nothing.
func TestRegisterRefusesAddressForms(t *testing.T) {
	e := newEnv(t, envOptions{allow: []string{}})
	for _, u := range []string{
		"https://[fd00::2%25eth0]:8443/hook",
		"https://[fe80::1%25eth0]/hook",
		"https://[fd00:ec2::254%25eth0]/latest/meta-data/",
		"https://[ff02::1%25eth0]/hook",
		"https://[::ffff:169.254.169.254]/latest/meta-data/",
		"https://[::a9fe:a9fe]/latest/meta-data/",
		"https://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
		"https://[2002:a9fe:a9fe::1]/hook",
		"https://0x7f000001/hook",
		"https://2130706433/hook",
		"https://169.254.169.254./latest/meta-data/",
		"https://[::]/hook",
	} {
		r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "hook " + u, "url": u, "events": []string{"task.completed"}})
		if r.status != http.StatusUnprocessableEntity {
			t.Errorf("register %s: %d %s, want 422", u, r.status, r.body)
			continue
		}
		if er := r.errorOf(t); er["field"] != "url" || !strings.Contains(er["message"].(string), "blocked: ") {
			t.Errorf("register %s: %v, want the url field refused as blocked", u, er)
		}
	}
	var n int
	e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM relay.webhooks`).Scan(&n)
	if n != 0 {
		t.Errorf("%d webhooks saved", n)
	}
}

// TestTestFireRefusesZonedOwnAddress: a webhook whose URL names one of the
// host's own non-loopback IPv6 addresses with a zone (saved in the table,
// past the registration check) is refused when the test event connects,
// and the internal listener is never reached.
func TestTestFireRefusesZonedOwnAddress(t *testing.T) {
	addr, ifc := ownIPv6(t)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr.WithZone(ifc.Name), 0).String())
	if err != nil {
		t.Skipf("cannot listen on the host's own %s: %v", addr, err)
	}
	var hits atomic.Int64
	internal := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "internal service")
	})}}
	internal.Start()
	defer internal.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	e := newEnv(t, envOptions{allow: []string{}})
	for _, zone := range []string{ifc.Name, strconv.Itoa(ifc.Index)} {
		u := "http://[" + addr.String() + "%25" + zone + "]:" + port + "/"
		var id int64
		if err := e.st.Pool().QueryRow(context.Background(), `INSERT INTO relay.webhooks (company_id, name, url, events)
			VALUES (1, $1, $2, '{task.completed}') RETURNING id`, "zoned "+zone, u).Scan(&id); err != nil {
			t.Fatal(err)
		}
		res := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"}).json(t)
		if res["ok"] != false || !strings.HasPrefix(fmt.Sprint(res["error"]), "blocked: ") {
			t.Errorf("test event to %s: %v, want blocked", u, res)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the internal listener on %s was reached %d times", addr, hits.Load())
	}
}

// ownIPv6 returns a non-loopback IPv6 address of this host that is not
// link-local (a unique-local or global one), and its interface.
func ownIPv6(t *testing.T) (netip.Addr, net.Interface) {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatalf("net.Interfaces: %v", err)
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			pre, err := netip.ParsePrefix(a.String())
			if err == nil && pre.Addr().Is6() && !pre.Addr().Is4In6() && !pre.Addr().IsLoopback() && !pre.Addr().IsLinkLocalUnicast() {
				return pre.Addr(), ifc
			}
		}
	}
	t.Skip("this host has no non-loopback, non-link-local IPv6 address")
	return netip.Addr{}, net.Interface{}
}
