package signature_test

import (
	"errors"
	"testing"

	"github.com/smartmaintenance/relay/signature"
)

func FuzzVerify(f *testing.F) {
	vf := loadVectors(f)
	for _, v := range append(vf.Valid, vf.Invalid...) {
		f.Add([]byte(v.Secret), []byte(v.Body), v.Signature)
	}
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		err := signature.Verify(secret, body, header)
		if err != nil {
			known := false
			for _, sentinel := range errorsByName {
				known = known || errors.Is(err, sentinel)
			}
			if !known {
				t.Fatalf("Verify returned an error that matches no sentinel: %v", err)
			}
		} else if want := signature.Sign(secret, body); header != want {
			// Exactly one header value verifies for a given secret and body.
			t.Fatalf("Verify accepted %q; the signature is %q", header, want)
		}
		if len(secret) == 0 {
			if err == nil {
				t.Fatal("Verify accepted an empty secret")
			}
			return
		}
		if err := signature.Verify(secret, body, signature.Sign(secret, body)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
