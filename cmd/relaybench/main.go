// Command relaybench measures the relay on this machine. It starts its own
// PostgreSQL (production durability settings), a receiver in a separate
// process, and the relay binary, runs the scenarios and prints, for each:
// events/s, deliveries/s, commit-to-receipt p50/p95/p99/max, the relay's
// peak RSS and CPU per event, and the slot's lag at the end.
//
//	go run ./cmd/relaybench                    all scenarios, full size
//	go run ./cmd/relaybench -short             seconds-long smoke run
//	go run ./cmd/relaybench -scenario burst -json
//	go run ./cmd/relaybench -scenario burst -profile /tmp/prof   CPU and allocation profiles of the relay
//	go run ./cmd/relaybench -scenario pause    the catch-up after the relay is stopped twice for 500 ms
//	go run ./cmd/relaybench -scenario fanout -walstats   the WAL per delivery by kind of record and relation
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/smartmaintenance/relay/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "receive" {
		fs := flag.NewFlagSet("receive", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
		fs.Parse(os.Args[2:])
		if err := bench.Serve(*listen, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "relaybench receive:", err)
			os.Exit(1)
		}
		return
	}
	scenario := flag.String("scenario", "", "comma-separated scenarios ("+strings.Join(bench.Scenarios, ", ")+"; and pause, not in the default run); default all")
	short := flag.Bool("short", false, "seconds-long smoke run")
	asJSON := flag.Bool("json", false, "print JSON")
	relay := flag.String("relay", "", "relay binary (default: go build ./cmd/relay)")
	profile := flag.String("profile", "", "write a CPU and an allocation profile of each relay run into this directory")
	pgstats := flag.Bool("pgstats", false, "print the statements PostgreSQL spent most time on, per scenario")
	walstats := flag.Bool("walstats", false, "print the WAL written per delivery by kind of record and relation, per scenario (pg_walinspect)")
	separate := flag.Bool("separate-state", false, "keep the relay's tables in a database of their own (database.state_url) instead of the platform database")
	flag.Parse()

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
	opts := bench.Options{Relay: *relay, Self: self, Short: *short, Progress: os.Stderr, ProfileDir: *profile, PGStats: *pgstats, WALStats: *walstats, SeparateState: *separate}
	if *scenario != "" {
		opts.Scenarios = strings.Split(*scenario, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := bench.Run(ctx, opts)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results)
	} else {
		print(results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

func print(results []bench.Result) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tevents\tdeliveries\tseconds\tevents/s\tdeliveries/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\tpeak RSS MB\tCPU s/10k ev\tCPU µs/delivery\tPG µs/delivery\trecv µs/delivery\tslot lag B\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.2f\t%.0f\t%.0f\t%.0f\t%d\t\n",
			r.Scenario, r.Events, r.Deliveries, r.Seconds, r.EventsPerSec, r.DeliveriesPerSec,
			r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.PeakRSSMB, r.CPUSecPer10k, r.CPUMicrosPerDel, r.PGMicrosPerDel, r.RecvMicrosPerDel, r.SlotLagBytes)
	}
	tw.Flush()
	for _, r := range results {
		if r.Note != "" {
			fmt.Printf("%s: %s\n", r.Scenario, r.Note)
		}
	}
	for _, r := range results {
		fmt.Printf("%s: %s; WAL written %.0f B per delivery\n", r.Scenario, r.Disk, r.WALBytesPerDel)
	}
	for _, r := range results {
		if len(r.PGByProcess) == 0 {
			continue
		}
		roles := make([]string, 0, len(r.PGByProcess))
		for role := range r.PGByProcess {
			roles = append(roles, role)
		}
		sort.Slice(roles, func(i, j int) bool { return r.PGByProcess[roles[i]] > r.PGByProcess[roles[j]] })
		parts := make([]string, len(roles))
		for i, role := range roles {
			parts[i] = fmt.Sprintf("%s %.0f", role, r.PGByProcess[role])
		}
		fmt.Printf("%s: PostgreSQL µs/delivery by process: %s\n", r.Scenario, strings.Join(parts, ", "))
	}
}
