package secrets

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func key(c byte) []byte { return bytes.Repeat([]byte{c}, KeyBytes) }

func TestSealOpen(t *testing.T) {
	b, err := New(key(1))
	if err != nil {
		t.Fatal(err)
	}
	const plain = "a-webhook-secret-0123456789"
	s1, _ := b.Seal(plain)
	s2, _ := b.Seal(plain)
	if s1 == s2 || strings.Contains(s1, plain) || !Sealed(s1) {
		t.Fatalf("Seal = %q, %q: want distinct sealed values without the plain text", s1, s2)
	}
	if got, err := b.Open(s1); err != nil || got != plain {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if got, err := b.Open(plain); err != nil || got != plain {
		t.Errorf("Open(plain text) = %q, %v; want it unchanged", got, err)
	}
	if s, _ := b.Seal(""); s != "" {
		t.Errorf("Seal(\"\") = %q", s)
	}
	// A flipped byte fails authentication.
	tampered := s1[:len(s1)-2] + string('A'+(s1[len(s1)-2]-'A'+1)%26) + s1[len(s1)-1:]
	if _, err := b.Open(tampered); !errors.Is(err, ErrCannotOpen) {
		t.Errorf("Open(tampered) = %v", err)
	}
}

func TestRotation(t *testing.T) {
	old, _ := New(key(1))
	sealed, _ := old.Seal("rotated-secret-0123456789")
	rotated, _ := New(key(2), key(1))
	if got, err := rotated.Open(sealed); err != nil || got != "rotated-secret-0123456789" {
		t.Fatalf("Open with the old key among previous keys = %q, %v", got, err)
	}
	if rotated.Current(sealed) || !old.Current(sealed) {
		t.Error("Current does not tell which key sealed the value")
	}
	onlyNew, _ := New(key(2))
	_, err := onlyNew.Open(sealed)
	if !errors.Is(err, ErrCannotOpen) || !strings.Contains(err.Error(), KeyID(key(1))) {
		t.Errorf("Open without the old key = %v; want ErrCannotOpen naming key %s", err, KeyID(key(1)))
	}
	var none *Box
	if _, err := none.Open(sealed); !errors.Is(err, ErrCannotOpen) {
		t.Errorf("nil Box opened a sealed value: %v", err)
	}
	if s, _ := none.Seal("plain-secret-0123456789"); s != "plain-secret-0123456789" {
		t.Errorf("nil Box sealed: %q", s)
	}
}

func TestParseKey(t *testing.T) {
	if _, err := ParseKey("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "short", "AQEB", "not base64 !!"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	g, err := Generate()
	if err != nil || len(g) < 40 || !strings.HasPrefix(g, "whsec_") {
		t.Errorf("Generate = %q, %v", g, err)
	}
}
