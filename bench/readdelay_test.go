package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// The read delay's buckets are read per stage from the relay's exposition,
// and each quantile is named by the bucket it falls in.
func TestReadDelayQuantiles(t *testing.T) {
	exposition := `# HELP relay_replication_read_delay_seconds From a source transaction's commit to the relay reading it.
# TYPE relay_replication_read_delay_seconds histogram
relay_replication_read_delay_seconds_bucket{stage="relay",le="0.0005"} 980
relay_replication_read_delay_seconds_bucket{stage="relay",le="0.001"} 995
relay_replication_read_delay_seconds_bucket{stage="relay",le="+Inf"} 1000
relay_replication_read_delay_seconds_sum{stage="relay"} 0.4
relay_replication_read_delay_seconds_count{stage="relay"} 1000
relay_replication_read_delay_seconds_bucket{stage="server",le="0.0005"} 100
relay_replication_read_delay_seconds_bucket{stage="server",le="0.001"} 600
relay_replication_read_delay_seconds_bucket{stage="server",le="0.01"} 980
relay_replication_read_delay_seconds_bucket{stage="server",le="0.025"} 1000
relay_replication_read_delay_seconds_bucket{stage="server",le="+Inf"} 1000
relay_delivery_latency_seconds_bucket{le="0.05"} 3
`
	stages, err := parseReadDelay(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		stage string
		q     float64
		want  string
	}{
		{"server", 0.5, "0.5–1"},
		{"server", 0.99, "10–25"},
		{"relay", 0.5, "≤0.5"},
		{"relay", 0.99, "0.5–1"},
		{"relay", 0.999, ">1"},
	} {
		if got := stages[c.stage].quantile(c.q); got != c.want {
			t.Errorf("%s p%g = %s ms, want %s", c.stage, c.q*100, got, c.want)
		}
	}
	if len(stages) != 2 {
		t.Errorf("stages %v, want server and relay only", stages)
	}
}

// With -metrics, a paced scenario's note says where the time from a commit
// to the relay's read went, read from the running relay's histogram.
func TestReadDelayFromTheRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := Run(ctx, Options{Self: os.Args[0], Short: true, Scenarios: []string{"steady"}, Relay: relayBinary(t), Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	note := results[0].Note
	if !strings.Contains(note, "commit to the relay's read") || !strings.Contains(note, " server p50 ") || !strings.Contains(note, "; relay p50 ") {
		t.Errorf("no read delay in the note: %s", note)
	}
}
