package relay

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/store"
)

// BenchmarkDispatch measures delivery end to end: 2,000 deliveries per
// iteration to ten webhooks of a local receiver that answers at once, in
// each payload format. Besides deliveries/s it reports the CPU this process
// spent per delivery (cpu-µs/delivery): the dispatcher, the sender and the
// in-process receiver, which is the same work for every format, so the
// formats' figures compare what rendering adds to a whole delivery.
func BenchmarkDispatch(b *testing.B) {
	for _, format := range []string{"raw", "slack", "teams"} {
		b.Run(format, func(b *testing.B) { benchmarkDispatch(b, format) })
	}
}

func benchmarkDispatch(b *testing.B, format string) {
	const perIteration = 2000
	e := newEnv(b)
	rc := newReceiver(b, nil)
	var hooks []int64
	for range 10 {
		hooks = append(hooks, e.webhook(rc.URL, "a-secret-of-16-bytes", nil))
	}
	e.exec(`UPDATE {{schema}}.webhooks SET format = $1`, format)
	d := New(e.st, Options{PollInterval: time.Hour, Timeout: 5 * time.Second, Egress: loopback})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sent := 0
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		e.deliveries(hooks, perIteration)
		b.StartTimer()
		before := processCPU(b)
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
		cpu += processCPU(b) - before
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(sent), "cpu-µs/delivery")
}

// processCPU is the user and system CPU this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
