package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// production is the policy the relay runs with when
// delivery.allow_networks is empty.
func production(t *testing.T) *Policy {
	t.Helper()
	p, err := NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// guardedClient sends as the relay's clients do: every connection made by
// p's dial hook, no redirects.
func guardedClient(p *Policy) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: p.DialContext(2*time.Second, 0), DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// TestAddressForms judges every way a URL can name an internal address,
// as url.Parse, Go's resolver and its dialer accept them, in the
// registration check (CheckHost on the URL's host, as the admin API calls
// it) and at connect time (an HTTP request through the dial hook). Nothing
// here connects: each form is refused before a connection is attempted.
func TestAddressForms(t *testing.T) {
	p := production(t)
	forms := []struct {
		url  string
		why  string // a word the refusal must contain
		note string
	}{
		// IPv6 zones: a zoned address is never inside a netip.Prefix.
		{"http://[fd00::2%25eth0]:8080/", "unique-local", "zoned unique-local"},
		{"http://[fd00::2%251]:8080/", "unique-local", "zone as an interface index"},
		{"http://[fe80::1%25eth0]/", "link-local", "zoned link-local"},
		{"http://[fe80::1%25lo]/", "link-local", "zoned link-local on loopback"},
		{"http://[fd00:ec2::254%25eth0]/", "unique-local", "AWS IPv6 metadata, zoned"},
		{"http://[fd00:ec2::254]/", "unique-local", "AWS IPv6 metadata"},
		{"http://[ff02::1%25eth0]/", "multicast", "zoned link-local multicast"},
		{"http://[ff05::1%25eth0]/", "multicast", "zoned site-local multicast"},
		{"http://[::1%25lo]/", "loopback", "zoned loopback"},
		{"http://[::ffff:127.0.0.1%25lo]/", "loopback", "zoned IPv4-mapped loopback"},
		{"http://[2606:4700:4700::1111%25eth0]/", "zone", "zoned public address"},
		// IPv4 written as IPv6.
		{"http://[::ffff:127.0.0.1]/", "loopback", "IPv4-mapped"},
		{"http://[::ffff:7f00:1]/", "loopback", "IPv4-mapped, hex"},
		{"http://[0:0:0:0:0:ffff:a9fe:a9fe]/", "link-local", "IPv4-mapped metadata, long form"},
		{"http://[::ffff:0.0.0.0]/", "unspecified", "IPv4-mapped unspecified"},
		{"http://[::127.0.0.1]/", "loopback", "IPv4-compatible"},
		{"http://[::a9fe:a9fe]/", "link-local", "IPv4-compatible metadata"},
		{"http://[::8.8.8.8]/", "IPv4-compatible", "IPv4-compatible, deprecated even when public"},
		{"http://[::ffff:0:7f00:1]/", "reserved", "IPv4-translated (SIIT)"},
		{"http://[64:ff9b::a9fe:a9fe]/", "NAT64", "NAT64 of the metadata address"},
		{"http://[64:ff9b::a00:1]/", "NAT64", "NAT64 of a private address"},
		{"http://[64:ff9b:1::a00:1]/", "NAT64", "local-use NAT64"},
		{"http://[2002:a00:1::1]/", "6to4", "6to4 of a private address"},
		{"http://[2002:7f00:1::1]/", "6to4", "6to4 of loopback"},
		{"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "IETF", "Teredo"},
		// Unspecified: dialling it reaches the host itself.
		{"http://0.0.0.0/", "unspecified", "IPv4 unspecified"},
		{"http://[::]/", "unspecified", "IPv6 unspecified"},
		{"http://[0:0:0:0:0:0:0:0]/", "unspecified", "IPv6 unspecified, long form"},
		// Numeric host names other than a.b.c.d: resolvers that use
		// inet_aton (glibc through cgo) read them as IPv4.
		{"http://0/", "numeric", "bare zero"},
		{"http://2130706433/", "numeric", "decimal 127.0.0.1"},
		{"http://0x7f000001/", "numeric", "hex 127.0.0.1"},
		{"http://0x7f.1/", "numeric", "hex, shortened"},
		{"http://0177.0.0.1/", "numeric", "octal 127.0.0.1"},
		{"http://127.1/", "numeric", "shortened 127.0.0.1"},
		{"http://169.254.43518/", "numeric", "shortened metadata"},
		{"http://0251.0376.0251.0376/", "numeric", "octal metadata"},
		// Trailing dots and names.
		{"http://127.0.0.1./", "loopback", "trailing dot on an address"},
		{"http://169.254.169.254./", "link-local", "trailing dot on metadata"},
		{"http://localhost/", "loopback", "localhost"},
		{"http://LOCALHOST./", "loopback", "localhost, upper case, trailing dot"},
		{"http://api.localhost/", "loopback", "a .localhost name"},
		// The rest of the special ranges.
		{"http://127.0.0.1/", "loopback", ""},
		{"http://10.0.0.5/", "private", ""},
		{"http://172.16.0.1/", "private", ""},
		{"http://192.168.1.1/", "private", ""},
		{"http://169.254.169.254/", "link-local", "AWS/GCP/Azure metadata"},
		{"http://100.100.100.200/", "carrier-grade", "Alibaba metadata"},
		{"http://224.0.0.1/", "multicast", ""},
		{"http://255.255.255.255/", "reserved", "broadcast"},
		{"http://[::1]/", "loopback", ""},
		{"http://[fe80::1]/", "link-local", ""},
		{"http://[fec0::1]/", "site-local", ""},
		{"http://[ff02::1]/", "multicast", ""},
		{"http://[100::1]/", "discard", ""},
		{"http://[2001:db8::1]/", "documentation", ""},
		{"http://[3fff::1]/", "documentation", "RFC 9637 documentation range"},
		{"http://[4000::1]/", "reserved", "outside 2000::/3"},
	}
	client := guardedClient(p)
	for _, f := range forms {
		t.Run(f.url, func(t *testing.T) {
			u, err := url.Parse(f.url)
			if err != nil {
				t.Fatalf("url.Parse: %v", err)
			}
			err = p.CheckHost(context.Background(), u.Hostname())
			if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), f.why) {
				t.Errorf("registration: CheckHost(%q) = %v, want blocked as %q (%s)", u.Hostname(), err, f.why, f.note)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url, nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("connect: POST %s = %v, want blocked (%s)", f.url, err, f.note)
			}
		})
	}
}

// TestAddressFormsAllowed: public addresses in the same forms pass, so the
// refusals above are not a blanket refusal of a syntax.
func TestAddressFormsAllowed(t *testing.T) {
	p := production(t)
	for _, h := range []string{"8.8.8.8", "8.8.8.8.", "::ffff:8.8.8.8", "2606:4700:4700::1111", "hooks.example.invalid", "hooks.example.invalid.", "1password.invalid", "123.example.invalid", "0x.example.invalid"} {
		if err := p.CheckHost(context.Background(), h); errors.Is(err, ErrBlocked) {
			t.Errorf("CheckHost(%q) = %v, want allowed", h, err)
		}
	}
}

// TestZonesAndAllowlist: an allowlist entry opens the address in every
// zone; zones in entries are refused, as their meaning depends on the
// host's interfaces.
func TestZonesAndAllowlist(t *testing.T) {
	p, err := NewPolicy([]string{"fd00::/64", "fe80::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"fd00::2", "fd00::2%eth0", "fe80::1%eth0", "fe80::1%7"} {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want allowed by the allowlist", s, err)
		}
	}
	for _, s := range []string{"fd01::2%eth0", "fe80::2%eth0", "2606:4700:4700::1111%eth0"} {
		if err := p.Check(netip.MustParseAddr(s)); !errors.Is(err, ErrBlocked) {
			t.Errorf("Check(%s) = %v, want blocked", s, err)
		}
	}
	if _, err := NewPolicy([]string{"fe80::1%eth0"}); err == nil || !strings.Contains(err.Error(), "zone") {
		t.Errorf("NewPolicy with a zoned entry: %v, want an error naming the zone", err)
	}
}

// TestOwnAddressesRefused starts a real listener on each of the host's own
// non-loopback addresses (those it can bind) and expects the production
// policy to refuse every form of it, at registration and at connect time,
// while the same request reaches the listener when the allowlist opens
// the address (so the refusal is the policy's and not the network's).
func TestOwnAddressesRefused(t *testing.T) {
	type target struct {
		addr  netip.Addr // zone-less
		iface net.Interface
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatalf("net.Interfaces: %v", err)
	}
	var targets []target
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pre, err := netip.ParsePrefix(a.String())
			if err != nil || pre.Addr().IsLoopback() {
				continue
			}
			targets = append(targets, target{addr: pre.Addr(), iface: ifc})
		}
	}
	tried := 0
	for _, tg := range targets {
		listen := tg.addr
		if tg.addr.Is6() && tg.addr.IsLinkLocalUnicast() {
			listen = tg.addr.WithZone(tg.iface.Name)
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
		if err != nil {
			t.Logf("%s (%s): cannot listen: %v", listen, tg.iface.Name, err)
			continue
		}
		tried++
		var hits atomic.Int64
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			fmt.Fprint(w, "internal service")
		})}}
		srv.Start()
		port := ln.Addr().(*net.TCPAddr).Port
		// Every way to write the address: as is, zoned by name and by
		// index, and IPv4 as IPv6.
		var hosts []string
		if tg.addr.Is4() {
			hosts = append(hosts, tg.addr.String(), "::ffff:"+tg.addr.String(), tg.addr.String()+".")
		} else {
			if !tg.addr.IsLinkLocalUnicast() {
				hosts = append(hosts, tg.addr.String())
			}
			hosts = append(hosts, tg.addr.WithZone(tg.iface.Name).String(), tg.addr.WithZone(strconv.Itoa(tg.iface.Index)).String())
		}
		p := production(t)
		for _, h := range hosts {
			hostport := net.JoinHostPort(h, strconv.Itoa(port))
			u := "http://" + strings.ReplaceAll(hostport, "%", "%25") + "/"
			if err := p.CheckHost(context.Background(), h); !errors.Is(err, ErrBlocked) {
				t.Errorf("registration of %s (the host's own %s address) = %v, want blocked", u, tg.iface.Name, err)
			}
			resp, err := guardedClient(p).Post(u, "application/json", nil)
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("POST %s (the host's own %s address) = %v, want blocked", u, tg.iface.Name, err)
			}
		}
		if hits.Load() != 0 {
			t.Errorf("the listener on %s was reached %d times", listen, hits.Load())
		}
		// The control: the allowlist opens the zone-less address, and the
		// request connects.
		open, err := NewPolicy([]string{tg.addr.String()})
		if err != nil {
			t.Fatal(err)
		}
		u := "http://" + strings.ReplaceAll(net.JoinHostPort(listen.String(), strconv.Itoa(port)), "%", "%25") + "/"
		resp, err := guardedClient(open).Post(u, "application/json", nil)
		if err != nil {
			t.Errorf("POST %s with %s allowed: %v; the listener is not reachable, so its refusal proves nothing", u, tg.addr, err)
		} else {
			resp.Body.Close()
		}
		srv.Close()
	}
	if tried == 0 {
		t.Skipf("this host has no non-loopback interface address to listen on (found %d)", len(targets))
	}
	t.Logf("refused every form of %d own addresses", tried)
}
