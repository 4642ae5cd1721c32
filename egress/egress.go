// Package egress decides which network destinations the relay may call.
//
// Webhook URLs are chosen by company admins, so without a check an admin
// could make the relay POST to the cloud metadata service, the database or
// anything else on the relay's private network (server-side request
// forgery). A Policy refuses loopback, private (RFC 1918), link-local
// (169.254.0.0/16, including 169.254.169.254), carrier-grade NAT
// (100.64.0.0/10), unique-local (fc00::/7), multicast, unspecified and
// other special-purpose addresses, in IPv4 and IPv6, including IPv4
// addresses wrapped in IPv6 (::ffff:127.0.0.1, ::127.0.0.1, 64:ff9b::/96
// NAT64, 2002::/16 6to4) and every IPv6 address outside global unicast
// (2000::/3).
//
// An address is judged without its IPv6 zone (fd00::2%eth0 is fd00::2): a
// zoned address is in no netip.Prefix, so judging it as written would let
// every zoned internal address through. A zone on an address the policy
// would otherwise allow is refused too, as only link-local addresses need
// one; an allowlisted address is allowed in every zone.
//
// The check runs when a connection is made, on the address actually dialled
// (net.Dialer.ControlContext), so a host name that resolves to a public
// address when the webhook is saved and to a private one later (DNS
// rebinding) is still refused. Before that, the host as written is judged
// the same way at registration and at dial time: address literals (with a
// trailing dot too), localhost names, and numeric names that are not
// dotted-decimal IPv4 (0x7f.1, 2130706433, 0177.0.0.1), which resolvers
// built on inet_aton read as IPv4 addresses. An operator allowlist of
// networks (CIDR) and host names opens specific internal targets such as
// an on-premises CMMS.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrBlocked is wrapped by every refusal.
var ErrBlocked = errors.New("blocked")

// BlockedError says which address was refused and why.
type BlockedError struct {
	Addr netip.Addr
	// Host is what was refused when it is not an address (a name, or a
	// dialled address that does not parse).
	Host   string
	Reason string
}

func (e *BlockedError) Error() string {
	what := e.Host
	if e.Addr.IsValid() {
		what = e.Addr.String()
	}
	return fmt.Sprintf("blocked: %s is %s; the relay does not call internal addresses unless delivery.allow_networks lists them", what, e.Reason)
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
	{netip.MustParsePrefix("2001::/23"), "an IETF protocol assignment address (Teredo and others)"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address"},
	{netip.MustParsePrefix("3fff::/20"), "a documentation address"},
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
			// ::ffff:10.0.0.0/104 is 10.0.0.0/8: addresses are judged
			// unmapped.
			if pre.Addr().Is4In6() && pre.Bits() >= 96 {
				pre = netip.PrefixFrom(pre.Addr().Unmap(), pre.Bits()-96)
			}
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
	if ip, err := netip.ParseAddr(a); err == nil {
		if ip.Zone() != "" {
			// A zone names an interface of one host: the entry would mean
			// something else on the next. Addresses are allowed in every
			// zone.
			return fmt.Errorf("%q has an IPv6 zone; list the address without %%%s", a, ip.Zone())
		}
		return nil
	}
	if numericName(a) {
		return fmt.Errorf("%q is a numeric form of an IPv4 address; write it as a.b.c.d", a)
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
// ip is judged without its zone and, for IPv4-mapped IPv6, as the IPv4
// address; a zone on an address that is not allowed is refused.
func (p *Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Reason: "not an IP address"}
	}
	zone := ip.Zone()
	ip = ip.WithZone("").Unmap()
	if p != nil {
		for _, n := range p.nets {
			if n.Contains(ip) {
				return nil
			}
		}
	}
	if reason := judge(ip); reason != "" {
		return &BlockedError{Addr: ip.WithZone(zone), Reason: reason}
	}
	if zone != "" {
		return &BlockedError{Addr: ip.WithZone(zone), Reason: "an address with an IPv6 zone (%" + zone + "), which only link-local addresses need"}
	}
	return nil
}

// global6 is IPv6 global unicast: every other IPv6 address is reserved,
// local or a translation of something else.
var global6 = netip.MustParsePrefix("2000::/3")

// ipv4Compatible is the deprecated ::a.b.c.d form.
var ipv4Compatible = netip.MustParsePrefix("::/96")

// judge returns why ip (zone-less, unmapped) is refused, or "".
func judge(ip netip.Addr) string {
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return s.reason
		}
	}
	if !ip.Is6() {
		return ""
	}
	if ipv4Compatible.Contains(ip) {
		b := ip.As16()
		if r := judge(netip.AddrFrom4([4]byte(b[12:]))); r != "" {
			return "an IPv4-compatible form of " + r
		}
		return "an IPv4-compatible address (deprecated, never routed)"
	}
	if !global6.Contains(ip) {
		return "a reserved IPv6 address (outside global unicast 2000::/3)"
	}
	return ""
}

// HostAllowed reports whether host (a URL's host name) is on the allowlist.
func (p *Policy) HostAllowed(host string) bool {
	return p != nil && p.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// judgeHost judges host as written, before any resolution: an address
// literal (brackets, a trailing dot and a zone allowed) is checked and
// returned; localhost names (unless loopback is allowed) and numeric names
// that are not dotted-decimal IPv4 are refused. For any other name it returns an invalid address and
// nil: only its resolved addresses can be judged.
func (p *Policy) judgeHost(host string) (netip.Addr, error) {
	h := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip, p.Check(ip)
	}
	lower := strings.ToLower(h)
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		// RFC 6761: always loopback, whatever a resolver says; refused
		// unless the allowlist opens loopback.
		if p.Check(netip.AddrFrom4([4]byte{127, 0, 0, 1})) != nil {
			return netip.Addr{}, &BlockedError{Host: host, Reason: "a loopback name"}
		}
	}
	if numericName(h) {
		return netip.Addr{}, &BlockedError{Host: host, Reason: "a numeric host name that resolvers may read as an IPv4 address " +
			"(hex, octal, shortened or a single number, as 0x7f.1 or 2130706433 for 127.0.0.1); write the address as a.b.c.d"}
	}
	return netip.Addr{}, nil
}

// numericName reports whether name ends in a number (all digits, or 0x and
// hex digits) after any trailing dot: no top-level domain does, and
// inet_aton, the WHATWG URL parser and browsers read such names as IPv4
// addresses (127.1, 0x7f000001, 0177.0.0.1).
func numericName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	digits := "0123456789"
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		last, digits = last[2:], "0123456789abcdefABCDEF"
	}
	for _, c := range last {
		if !strings.ContainsRune(digits, c) {
			return false
		}
	}
	return true
}

// control is a net.Dialer ControlContext hook: it runs after resolution,
// on the address about to be connected.
func (p *Policy) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Host: address, Reason: "not an IP address and port"}
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
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &BlockedError{Host: addr, Reason: "not a host and port"}
		}
		if p.HostAllowed(host) {
			return open.DialContext(ctx, network, addr)
		}
		// The host as written, judged as at registration; the address
		// finally dialled is judged again by control.
		ip, err := p.judgeHost(host)
		if err != nil {
			return nil, err
		}
		if ip.IsValid() {
			// Dial the literal without the trailing dot, which resolvers
			// would look up as a name.
			addr = net.JoinHostPort(ip.String(), port)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}

// CheckHost checks a URL's host before anything is sent, for a clear error
// when a webhook is saved: the host is judged as written (see judgeHost)
// and a host name is resolved and refused when every address it has is
// refused. A name that cannot be resolved is not an error here (it may
// resolve later); the connect-time check still applies.
func (p *Policy) CheckHost(ctx context.Context, host string) error {
	if p.HostAllowed(host) {
		return nil
	}
	ip, err := p.judgeHost(host)
	if err != nil || ip.IsValid() {
		return err
	}
	addrs, err := lookup(ctx, host)
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

// Proxy wraps a transport's choice of proxy (http.ProxyFromEnvironment, say)
// so that a request the proxy would carry is judged by its target first: the
// connect-time check sees only the proxy's address, and the proxy connects
// to whatever the target's name resolves to. The target's host is judged as
// written (judgeHost), then a name is resolved and refused when any of its
// addresses is (not every, as at registration: a name that also resolves to
// a private address is how a rebinding reaches one). A name this host cannot
// resolve is left to the proxy, which then decides alone; hosts on the
// allowlist pass. Requests the proxy does not carry are judged when they are
// dialled, as before. A name's verdict is kept for verdictTTL.
func (p *Policy) Proxy(next func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	judged := &nameVerdicts{m: map[string]nameVerdict{}}
	return func(req *http.Request) (*url.URL, error) {
		proxy, err := next(req)
		if err != nil || proxy == nil {
			return proxy, err
		}
		host := req.URL.Hostname()
		if p.HostAllowed(host) {
			return proxy, nil
		}
		ip, err := p.judgeHost(host)
		if err != nil {
			return nil, err
		}
		if ip.IsValid() {
			return proxy, nil
		}
		if err := judged.get(req.Context(), p, host); err != nil {
			return nil, err
		}
		return proxy, nil
	}
}

// nameVerdicts keeps, for verdictTTL, what Proxy decided of a name, so that
// a proxied request costs a lookup only once in that time, not per attempt.
type nameVerdicts struct {
	mu sync.Mutex
	m  map[string]nameVerdict
}

type nameVerdict struct {
	err   error
	until time.Time
}

// verdictTTL is how long a name's verdict is kept; maxVerdicts bounds how
// many are.
const (
	verdictTTL  = 10 * time.Second
	maxVerdicts = 1024
)

// get returns the verdict on name: a *BlockedError when an address it
// resolves to is refused, nil when none is or it does not resolve.
func (v *nameVerdicts) get(ctx context.Context, p *Policy, name string) error {
	now := time.Now()
	v.mu.Lock()
	if e, ok := v.m[name]; ok && now.Before(e.until) {
		v.mu.Unlock()
		return e.err
	}
	v.mu.Unlock()
	var verdict error
	if addrs, err := lookup(ctx, name); err == nil {
		for _, a := range addrs {
			if p.Check(a) != nil {
				verdict = &BlockedError{Host: name, Reason: "a name that resolves to " + a.String() + ", which the proxy would connect to"}
				break
			}
		}
	}
	v.mu.Lock()
	if len(v.m) >= maxVerdicts {
		clear(v.m)
	}
	v.m[name] = nameVerdict{err: verdict, until: now.Add(verdictTTL)}
	v.mu.Unlock()
	return verdict
}

// lookup resolves a URL's host name (a trailing dot ignored) to its
// addresses, within 2 s.
func lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(host, "."))
}
