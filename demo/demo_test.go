package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command for a few seconds and checks
// that signed events arrived and were verified.
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
}
