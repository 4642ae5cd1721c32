package cdc

import (
	"testing"
	"time"
)

// A group that deliveries wait for is never held longer than one that
// none waits for: a SentGroupDelay under GroupDelay's default cuts it.
func TestGroupDelayNotOverSentGroupDelay(t *testing.T) {
	for _, tc := range []struct{ sent, want time.Duration }{
		{0, 10 * time.Millisecond},
		{100 * time.Millisecond, 10 * time.Millisecond},
		{2 * time.Millisecond, 2 * time.Millisecond},
	} {
		c := Config{SentGroupDelay: tc.sent}
		c.withDefaults()
		if c.GroupDelay != tc.want {
			t.Errorf("SentGroupDelay %v: GroupDelay %v, want %v", tc.sent, c.GroupDelay, tc.want)
		}
	}
}
