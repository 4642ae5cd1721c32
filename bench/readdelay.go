package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// readDelayMetric is the relay's histogram of the time from a source
// commit to its read, by stage (docs/OBSERVABILITY.md).
const readDelayMetric = "relay_replication_read_delay_seconds_bucket"

// readDelay reads the relay's read-delay histogram from its /metrics and
// says, per stage, in which of its buckets the p50 and the p99 fall.
func readDelay(ctx context.Context, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "read delay: " + err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "read delay: " + err.Error()
	}
	defer resp.Body.Close()
	stages, err := parseReadDelay(resp.Body)
	if err != nil {
		return "read delay: " + err.Error()
	}
	out := "commit to the relay's read, per the relay's histogram:"
	for _, stage := range []string{"server", "relay"} {
		b := stages[stage]
		if len(b) == 0 {
			return "read delay: no " + stage + " stage in the relay's metrics"
		}
		out += fmt.Sprintf(" %s p50 %s, p99 %s ms;", stage, b.quantile(0.5), b.quantile(0.99))
	}
	return strings.TrimSuffix(out, ";")
}

// buckets are a histogram's cumulative buckets, in the exposition's order
// (ascending upper bounds, +Inf last).
type buckets []bucket

type bucket struct {
	le    float64 // seconds
	count float64 // observations at most le
}

// parseReadDelay reads the read-delay buckets of each stage from a
// Prometheus text exposition.
func parseReadDelay(r io.Reader) (map[string]buckets, error) {
	out := map[string]buckets{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, readDelayMetric+"{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len(readDelayMetric)+1:], "} ")
		if !ok {
			return nil, fmt.Errorf("unreadable line %q", line)
		}
		stage, le := label(labels, "stage"), label(labels, "le")
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket bound in %q: %w", line, err)
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket count in %q: %w", line, err)
		}
		out[stage] = append(out[stage], bucket{le: bound, count: n})
	}
	return out, sc.Err()
}

// label is the value of a label in a label list (a="x",b="y").
func label(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// quantile names the bucket the q-quantile falls in, in milliseconds:
// "≤0.5" for the first, "1–2.5" for a later one, ">60000" for the last.
func (b buckets) quantile(q float64) string {
	total := b[len(b)-1].count
	if total == 0 {
		return "-"
	}
	lo := 0.0
	for i, x := range b {
		if x.count >= q*total {
			switch {
			case math.IsInf(x.le, 1):
				return fmt.Sprintf(">%g", lo*1000)
			case i == 0:
				return fmt.Sprintf("≤%g", x.le*1000)
			}
			return fmt.Sprintf("%g–%g", lo*1000, x.le*1000)
		}
		lo = x.le
	}
	return "-"
}
