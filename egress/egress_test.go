package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	blocked := []string{
		"127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.255", "0.0.0.0", "224.0.0.1",
		"239.255.255.250", "255.255.255.255", "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe",
		"::ffff:192.168.0.1",
	}
	for _, s := range blocked {
		err := (*Policy)(nil).Check(netip.MustParseAddr(s))
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("Check(%s) = %v, want blocked", s, err)
		}
	}
	allowed := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"}
	for _, s := range allowed {
		if err := (*Policy)(nil).Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want allowed", s, err)
		}
	}
}

func TestAllowlist(t *testing.T) {
	p, err := NewPolicy([]string{"10.20.0.0/16", "192.168.1.7", "cmms.internal"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"10.20.3.4", "192.168.1.7", "::ffff:10.20.0.1"} {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want allowed", s, err)
		}
	}
	for _, s := range []string{"10.21.0.1", "192.168.1.8", "127.0.0.1"} {
		if err := p.Check(netip.MustParseAddr(s)); err == nil {
			t.Errorf("Check(%s) allowed, want blocked", s)
		}
	}
	if !p.HostAllowed("CMMS.internal.") || p.HostAllowed("other.internal") {
		t.Error("HostAllowed does not match the allowlist")
	}
	for _, bad := range []string{"10.0.0.0/33", "", "not a host!", "a..b"} {
		if _, err := NewPolicy([]string{bad}); err == nil {
			t.Errorf("NewPolicy(%q) accepted", bad)
		}
	}
}

func TestCheckHost(t *testing.T) {
	ctx := context.Background()
	var p *Policy
	for _, h := range []string{"127.0.0.1", "[::1]", "localhost", "api.localhost", "169.254.169.254", "[::ffff:7f00:1]"} {
		if err := p.CheckHost(ctx, h); !errors.Is(err, ErrBlocked) {
			t.Errorf("CheckHost(%s) = %v, want blocked", h, err)
		}
	}
	if err := p.CheckHost(ctx, "93.184.215.14"); err != nil {
		t.Errorf("CheckHost(public) = %v", err)
	}
	lo, _ := NewPolicy([]string{"127.0.0.0/8", "localhost"})
	if err := lo.CheckHost(ctx, "127.0.0.1"); err != nil {
		t.Errorf("allowed CheckHost = %v", err)
	}
}

// TestDialRefusesAtConnect proves the connect-time check: a host name that
// resolves to loopback (as a rebinding name would) is refused when dialled,
// and allowed when the allowlist opens it.
func TestDialRefusesAtConnect(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	client := func(p *Policy) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: p.DialContext(5*time.Second, 0)}}
	}
	// "localhost" resolves to a loopback address on every host.
	url := "http://localhost:" + port + "/"
	_, err := client(nil).Get(url)
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("GET %s without allowlist = %v, want blocked", url, err)
	}
	if !strings.Contains(err.Error(), "loopback") {
		t.Errorf("error does not say why: %v", err)
	}
	for _, allow := range []string{"127.0.0.0/8", "localhost"} {
		p, _ := NewPolicy([]string{allow, "::1"})
		resp, err := client(p).Get(url)
		if err != nil {
			t.Fatalf("GET with allowlist %s: %v", allow, err)
		}
		resp.Body.Close()
	}
}

// TestProxyJudgesTheTarget: with a proxy, the dial check sees only the
// proxy's address; the target is judged before the request is handed to
// it, and a refused one never reaches the proxy.
func TestProxyJudgesTheTarget(t *testing.T) {
	var got []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.String()) // a forward proxy sees the absolute URL
		w.WriteHeader(http.StatusOK)
	}))
	defer proxy.Close()
	proxyURL, _ := url.Parse(proxy.URL)
	p, err := NewPolicy([]string{"127.0.0.1/32"}) // the proxy, not the loopback network
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: p.Proxy(http.ProxyURL(proxyURL)), DialContext: p.DialContext(5*time.Second, 0)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, target := range []string{"http://10.1.2.3/hook", "http://[::1]:8080/hook", "http://169.254.169.254/latest", "http://0x7f.1/hook"} {
		resp, err := client.Post(target, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			t.Errorf("POST %s through the proxy: %d, want refused", target, resp.StatusCode)
		} else if !errors.Is(err, ErrBlocked) {
			t.Errorf("POST %s: %v, want blocked", target, err)
		}
	}
	if len(got) != 0 {
		t.Errorf("the proxy was asked for %v", got)
	}
	resp, err := client.Post("http://93.184.215.14/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST to a public address through the proxy: %v", err)
	}
	resp.Body.Close()
	if len(got) != 1 || got[0] != "http://93.184.215.14/hook" {
		t.Errorf("the proxy was asked for %v, want the public target", got)
	}
}

func TestProxyWrapper(t *testing.T) {
	var p *Policy
	proxyURL, _ := url.Parse("http://proxy.example:3128")
	through := p.Proxy(http.ProxyURL(proxyURL))
	direct := p.Proxy(func(*http.Request) (*url.URL, error) { return nil, nil })
	req := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodPost, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if u, err := through(req("https://no-such-host.invalid/x")); err != nil || u != proxyURL {
		t.Errorf("a name this host cannot resolve: %v %v, want it left to the proxy", u, err)
	}
	if u, err := direct(req("http://10.1.2.3/x")); err != nil || u != nil {
		t.Errorf("a request the proxy does not carry: %v %v, want it left to the dial check", u, err)
	}
	if _, err := through(req("http://localhost:9/x")); !errors.Is(err, ErrBlocked) {
		t.Errorf("localhost through the proxy: %v, want blocked", err)
	}
}

// A name's verdict is kept for verdictTTL, so that a proxied attempt does
// not cost a lookup each; an expired one is looked up again.
func TestProxyKeepsVerdicts(t *testing.T) {
	var p *Policy
	v := &nameVerdicts{m: map[string]nameVerdict{}}
	kept := &BlockedError{Host: "rebind.invalid", Reason: "a name that resolves to 10.0.0.1"}
	v.m["rebind.invalid"] = nameVerdict{err: kept, until: time.Now().Add(time.Minute)}
	if err := v.get(context.Background(), p, "rebind.invalid"); err != kept {
		t.Errorf("a kept verdict: %v, want the one kept", err)
	}
	v.m["rebind.invalid"] = nameVerdict{err: kept, until: time.Now().Add(-time.Second)}
	if err := v.get(context.Background(), p, "rebind.invalid"); err != nil {
		t.Errorf("an expired verdict on a name that does not resolve: %v, want it looked up again (nil)", err)
	}
	if e := v.m["rebind.invalid"]; e.err != nil || !e.until.After(time.Now()) {
		t.Errorf("the new verdict is not kept: %+v", e)
	}
}
