package relay

import (
	"context"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/store"
)

// BenchmarkDispatch measures delivery end to end: 2,000 deliveries per
// iteration to ten webhooks of a local receiver that answers at once.
func BenchmarkDispatch(b *testing.B) {
	const perIteration = 2000
	e := newEnv(b)
	rc := newReceiver(b, nil)
	var hooks []int64
	for range 10 {
		hooks = append(hooks, e.webhook(rc.URL, "a-secret-of-16-bytes", nil))
	}
	d := New(e.st, Options{PollInterval: time.Hour, Timeout: 5 * time.Second, Egress: loopback})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sent := 0
	for b.Loop() {
		b.StopTimer()
		e.deliveries(hooks, perIteration)
		b.StartTimer()
		d.Notify()
		sent += perIteration
		for rc.count() < sent {
			time.Sleep(time.Millisecond)
		}
		for {
			var n int
			if err := e.st.Pool().QueryRow(context.Background(),
				"SELECT count(*) FROM "+e.st.Schema()+".deliveries WHERE status = '"+string(store.StatusDelivered)+"'").Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == sent {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "deliveries/s")
}
