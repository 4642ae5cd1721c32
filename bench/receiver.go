package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Receiver is the bench's webhook endpoint. It runs in its own process so
// that its cost does not count as the relay's. It answers 204 on every path
// except /hang, which never answers, and measures the latency from the
// commit time the load generator wrote into each payload's "title" (Unix
// nanoseconds) to the moment the request arrived.
type Receiver struct {
	mu       sync.Mutex
	ids      map[string]struct{}
	received int
	lat      []time.Duration
	sent     []int64 // the commit time of each of lat, Unix µs
	last     time.Time
	byPath   map[string]int
}

// NewReceiver returns an empty receiver.
func NewReceiver() *Receiver {
	return &Receiver{ids: map[string]struct{}{}, byPath: map[string]int{}}
}

// Stats is what the receiver measured since its last reset.
type Stats struct {
	Received  int            `json:"received"`
	Unique    int            `json:"unique"`
	ByPath    map[string]int `json:"by_path"`
	LastAt    time.Time      `json:"last_at"`
	Latencies []int64        `json:"latencies_us"` // sorted
	// Samples are the commit time (Unix µs) and latency (µs) of each
	// delivery, in the order received, when asked for.
	Samples [][2]int64 `json:"samples,omitempty"`
}

var titleKey = []byte(`"title":"`)

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	if req.Method == http.MethodGet && req.URL.Path == "/stats" {
		q := req.URL.Query()
		r.stats(w, q.Get("reset") == "1", q.Get("latencies") == "1", q.Get("samples") == "1")
		return
	}
	if req.URL.Path == "/hang" {
		<-req.Context().Done()
		return
	}
	body, _ := io.ReadAll(req.Body)
	var lat time.Duration = -1
	var sent int64
	if i := bytes.Index(body, titleKey); i >= 0 {
		rest := body[i+len(titleKey):]
		if j := bytes.IndexByte(rest, '"'); j > 0 {
			if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
				lat, sent = now.Sub(time.Unix(0, ns)), ns/1000
			}
		}
	}
	id := req.Header.Get("X-SMTM-Delivery")
	r.mu.Lock()
	r.received++
	r.ids[id] = struct{}{}
	r.byPath[req.URL.Path]++
	if lat >= 0 {
		r.lat = append(r.lat, lat)
		r.sent = append(r.sent, sent)
	}
	r.last = now
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// stats answers the counts, and the sorted latencies and the samples when
// asked for (the bench polls the counts often while a run goes on; copying
// and sorting every latency each time would cost the run).
func (r *Receiver) stats(w http.ResponseWriter, reset, latencies, samples bool) {
	r.mu.Lock()
	st := Stats{Received: r.received, Unique: len(r.ids), ByPath: maps(r.byPath), LastAt: r.last}
	if latencies {
		st.Latencies = make([]int64, len(r.lat))
		for i, d := range r.lat {
			st.Latencies[i] = d.Microseconds()
		}
	}
	if samples {
		st.Samples = make([][2]int64, len(r.lat))
		for i, d := range r.lat {
			st.Samples[i] = [2]int64{r.sent[i], d.Microseconds()}
		}
	}
	if reset {
		r.ids, r.received, r.lat, r.sent, r.byPath = map[string]struct{}{}, 0, r.lat[:0], r.sent[:0], map[string]int{}
	}
	r.mu.Unlock()
	slices.Sort(st.Latencies)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Serve runs a receiver on addr and prints "listening ADDR" once it is up.
func Serve(addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(out, "listening %s\n", ln.Addr())
	srv := &http.Server{Handler: NewReceiver(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// percentile returns the p-th percentile (0..100) of sorted values.
func percentile(sorted []int64, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return time.Duration(sorted[i]) * time.Microsecond
}

// paths returns n healthy receiver paths.
func paths(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "/ok/" + strconv.Itoa(i)
	}
	return out
}

func isHealthy(path string) bool { return strings.HasPrefix(path, "/ok/") }
