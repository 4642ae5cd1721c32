// Package egress decides which network destinations the relay may call.
//
// Webhook URLs are chosen by company admins, so without a check an admin
// could make the relay POST to the cloud metadata service, the database or
// anything else on the relay's private network (server-side request
// forgery). A Policy refuses loopback, private (RFC 1918), link-local
// (169.254.0.0/16, including 169.254.169.254), carrier-grade NAT
// (100.64.0.0/10), unique-local (fc00::/7), multicast, unspecified and
// other special-purpose addresses, in IPv4 and IPv6, including IPv4
// addresses wrapped in IPv6 (::ffff:127.0.0.1, 64:ff9b::/96 NAT64).
//
// The check runs when a connection is made, on the address actually dialled
// (net.Dialer.ControlContext), so a host name that resolves to a public
// address when the webhook is saved and to a private one later (DNS
// rebinding) is still refused. An operator allowlist of networks (CIDR) and
// host names opens specific internal targets such as an on-premises CMMS.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked is wrapped by every refusal.
var ErrBlocked = errors.New("blocked")

// BlockedError says which address was refused and why.
type BlockedError struct {
	Addr   netip.Addr
	Reason string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("blocked: %s is %s; the relay does not call internal addresses unless delivery.allow_networks lists them", e.Addr, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

// special lists the refused ranges, with the words used in errors.
var special = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified or \"this network\" address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (cloud metadata lives here)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("192.88.99.0/24"), "a 6to4 relay address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64 address"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address"},
	{netip.MustParsePrefix("2001::/23"), "an IETF protocol assignment address"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address"},
	{netip.MustParsePrefix("fc00::/7"), "a unique-local address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// Policy refuses special-purpose destinations except those allowed. The
// zero Policy and a nil *Policy refuse every special-purpose address.
type Policy struct {
	nets  []netip.Prefix
	hosts map[string]bool
}

// NewPolicy returns a policy that allows the given networks (CIDR such as
// "10.20.0.0/16", or one address) and host names ("cmms.internal"; matched
// case-insensitively against the URL's host, and then allowed whatever they
// resolve to). The error names the first entry that is neither.
func NewPolicy(allow []string) (*Policy, error) {
	p := &Policy{hosts: map[string]bool{}}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		if err := ValidEntry(a); err != nil {
			return nil, err
		}
		if pre, err := netip.ParsePrefix(a); err == nil {
			p.nets = append(p.nets, pre.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			p.nets = append(p.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		p.hosts[strings.ToLower(strings.TrimSuffix(a, "."))] = true
	}
	return p, nil
}

// ValidEntry checks one allowlist entry: a CIDR, an address or a host name.
func ValidEntry(a string) error {
	if a == "" {
		return errors.New("empty entry")
	}
	if _, err := netip.ParsePrefix(a); err == nil {
		return nil
	}
	if strings.Contains(a, "/") {
		return fmt.Errorf("%q is not a valid CIDR (e.g. 10.20.0.0/16)", a)
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return nil
	}
	for _, label := range strings.Split(strings.TrimSuffix(a, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is neither a CIDR, an IP address nor a host name", a)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is neither a CIDR, an IP address nor a host name", a)
			}
		}
	}
	return nil
}

// Check returns a *BlockedError when ip is special-purpose and not allowed.
func (p *Policy) Check(ip netip.Addr) error {
	ip = ip.Unmap()
	if p != nil {
		for _, n := range p.nets {
			if n.Contains(ip) {
				return nil
			}
		}
	}
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return &BlockedError{Addr: ip, Reason: s.reason}
		}
	}
	// IPv4 embedded in IPv6 by other translation schemes: judge the IPv4.
	if ip.Is6() && ip.IsValid() {
		b := ip.As16()
		if ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
			return &BlockedError{Addr: ip, Reason: "a multicast address"}
		}
		// IPv4-compatible (deprecated ::a.b.c.d).
		if allZero(b[:12]) {
			v4 := netip.AddrFrom4([4]byte(b[12:]))
			if err := p.Check(v4); err != nil {
				return &BlockedError{Addr: ip, Reason: "an IPv4-compatible form of " + err.(*BlockedError).Reason}
			}
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// HostAllowed reports whether host (a URL's host name) is on the allowlist.
func (p *Policy) HostAllowed(host string) bool {
	return p != nil && p.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// control is a net.Dialer ControlContext hook: it runs after resolution,
// on the address about to be connected.
func (p *Policy) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Reason: "not an IP address: " + address}
	}
	return p.Check(ap.Addr())
}

// DialContext dials like a net.Dialer with the given timeouts, refusing
// special-purpose addresses at connect time. Hosts on the allowlist are
// dialled without the check.
func (p *Policy) DialContext(timeout, keepAlive time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	guarded := &net.Dialer{Timeout: timeout, KeepAlive: keepAlive, ControlContext: p.control}
	open := &net.Dialer{Timeout: timeout, KeepAlive: keepAlive}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err == nil && p.HostAllowed(host) {
			return open.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}

// CheckHost checks a URL's host before anything is sent, for a clear error
// when a webhook is saved: an address literal is checked as it is; a host
// name is resolved and refused when every address it has is refused. A name
// that cannot be resolved is not an error here (it may resolve later); the
// connect-time check still applies.
func (p *Policy) CheckHost(ctx context.Context, host string) error {
	if p.HostAllowed(host) {
		return nil
	}
	h := strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		return p.Check(ip)
	}
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return &BlockedError{Addr: netip.MustParseAddr("127.0.0.1"), Reason: "a loopback address (" + h + ")"}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", h)
	if err != nil || len(addrs) == 0 {
		return nil
	}
	var first error
	for _, a := range addrs {
		err := p.Check(a)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}
