package relay

import (
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.Owner == "" || o.Workers != 128 || o.PerWebhook != 16 || o.Timeout != 30*time.Second ||
		len(o.Schedule) != 5 || o.PollInterval != 500*time.Millisecond || o.Lease != 70*time.Second ||
		o.SnippetBytes != 0 || o.DrainTimeout != 0 || o.UserAgent != "SmartMaintenance/1.0" || o.Logger == nil {
		t.Fatalf("defaults: %+v", o)
	}
	if a, b := (Options{}).withDefaults().Owner, (Options{}).withDefaults().Owner; a == b {
		t.Fatalf("two dispatchers share the owner %q", a)
	}

	o = Options{Workers: 2, PerWebhook: 10, Timeout: time.Minute, Lease: time.Second, SnippetBytes: 1 << 20,
		Schedule: Schedule{}, DrainTimeout: -time.Second}.withDefaults()
	if o.PerWebhook != 2 || o.Lease != time.Minute+5*time.Second || o.SnippetBytes != maxResponseRead ||
		o.Schedule == nil || len(o.Schedule) != 0 || o.DrainTimeout != 0 {
		t.Fatalf("clamped: %+v", o)
	}
}
