package demo

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command for a few seconds and checks
// that signed events arrived and were verified, that the closing summary
// counts as delivered only what the receiver accepted (not the attempts it
// answered 503 on purpose), and that it prints tokens as relay token does.
func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), Options{Duration: 8 * time.Second, Interval: 100 * time.Millisecond}, &out, &errOut)
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	if !strings.Contains(s, "signature ok") || !strings.Contains(s, " 0 failed verification") {
		t.Fatalf("demo output:\n%s", s)
	}
	accepted := strings.Count(s, "✓ ")
	refused := strings.Count(s, "answered 503 to delivery")
	if refused == 0 {
		t.Fatalf("no attempt was answered 503; the count cannot be told apart:\n%s", s)
	}
	want := fmt.Sprintf("\n%d deliveries delivered with a verified signature; %d attempts answered 503 on purpose (retried), 0 failed verification\n", accepted, refused)
	if !strings.Contains(s, want) {
		t.Errorf("summary does not say %q:\n%s", strings.TrimSpace(want), s[max(0, len(s)-400):])
	}
	if !regexp.MustCompile(`(?m)^  export RELAY_ADMIN_URL=http://127\.0\.0\.1:\d+ RELAY_ADMIN_TOKEN=rat_[A-Za-z0-9_-]{43}$`).MatchString(s) {
		t.Errorf("no export line with a rat_ token:\n%s", s[:min(len(s), 1200)])
	}
}
