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

// TestHeaderValues: header values seal and open like secrets, rotate the
// same way, and are bound to their purpose: a sealed secret does not open
// as a header value, nor the other way round.
func TestHeaderValues(t *testing.T) {
	old, _ := New(key(1))
	const plain = "Bearer 0123456789abcdef"
	h, err := old.SealHeader(plain)
	if err != nil || !Sealed(h) || strings.Contains(h, plain) || !old.Current(h) {
		t.Fatalf("SealHeader = %q, %v", h, err)
	}
	rotated, _ := New(key(2), key(1))
	if got, err := rotated.OpenHeader(h); err != nil || got != plain || rotated.Current(h) {
		t.Fatalf("OpenHeader with the old key among previous keys = %q, %v", got, err)
	}
	if got, err := old.OpenHeader("plain-before-a-key"); err != nil || got != "plain-before-a-key" {
		t.Errorf("OpenHeader(plain text) = %q, %v", got, err)
	}
	onlyNew, _ := New(key(2))
	if _, err := onlyNew.OpenHeader(h); !errors.Is(err, ErrCannotOpenHeader) || !strings.Contains(err.Error(), KeyID(key(1))) {
		t.Errorf("OpenHeader without the old key = %v", err)
	}
	if _, err := old.Open(h); !errors.Is(err, ErrCannotOpen) {
		t.Errorf("a sealed header value opened as a secret: %v", err)
	}
	s, _ := old.Seal(plain)
	if _, err := old.OpenHeader(s); !errors.Is(err, ErrCannotOpenHeader) {
		t.Errorf("a sealed secret opened as a header value: %v", err)
	}
}
