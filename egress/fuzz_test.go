package egress

import (
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
