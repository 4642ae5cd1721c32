package egress

import (
	"context"
	"net/netip"
	"testing"
)

// FuzzMappedForms: an IPv4 address and its IPv4-mapped IPv6 form always get
// the same verdict, and the loopback, private and link-local ranges are
// always refused.
func FuzzMappedForms(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "169.254.169.254", "8.8.8.8", "100.64.0.1", "0.0.0.0", "255.255.255.255"} {
		a := netip.MustParseAddr(s).As4()
		f.Add(a[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 4 {
			return
		}
		v4 := netip.AddrFrom4([4]byte(b))
		mapped := netip.AddrFrom16(v4.As16())
		var p *Policy
		if (p.Check(v4) == nil) != (p.Check(mapped) == nil) {
			t.Fatalf("%s and %s get different verdicts", v4, mapped)
		}
		if (v4.IsLoopback() || v4.IsPrivate() || v4.IsLinkLocalUnicast() || v4.IsMulticast() || v4.IsUnspecified()) && p.Check(v4) == nil {
			t.Fatalf("%s allowed", v4)
		}
	})
}

// FuzzZonedForms: with the production policy (no allowlist) a zoned
// address is always refused, an address is refused whenever its zone-less
// form is, IPv6 outside global unicast is always refused, and the
// connect-time hook agrees with Check on the address as the dialer writes
// it.
func FuzzZonedForms(f *testing.F) {
	for _, s := range []string{"fd00::2%eth0", "fe80::1%1", "fd00:ec2::254%eth0", "ff02::1%lo", "::ffff:127.0.0.1%lo", "2606:4700:4700::1111%eth0", "::1", "2606:4700:4700::1111"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		f.Add(b[:], a.Zone())
	}
	f.Fuzz(func(t *testing.T, b []byte, zone string) {
		if len(b) != 16 {
			return
		}
		plain := netip.AddrFrom16([16]byte(b))
		zoned := plain.WithZone(zone)
		var p *Policy
		err := p.Check(zoned)
		if zoned.Zone() != "" && err == nil {
			t.Fatalf("%s allowed with a zone", zoned)
		}
		if p.Check(plain) != nil && err == nil {
			t.Fatalf("%s allowed while %s is refused", zoned, plain)
		}
		if u := plain.Unmap(); u.Is6() && !u.IsGlobalUnicast() && p.Check(plain) == nil {
			t.Fatalf("%s allowed outside global unicast", plain)
		}
		if (p.control(context.Background(), "tcp6", netip.AddrPortFrom(zoned, 443).String(), nil) == nil) != (err == nil) {
			t.Fatalf("the dial hook and Check disagree on %s", zoned)
		}
	})
}
