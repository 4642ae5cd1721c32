// Command relaybench measures the relay on this machine. It starts its own
// PostgreSQL (production durability settings), a receiver in a separate
// process, and the relay binary, runs the scenarios and prints, for each:
// events/s, deliveries/s, commit-to-receipt p50/p95/p99/max, the relay's
// peak RSS and CPU per event, and the slot's lag at the end; then the
// platform's tax and, for a full-size run, each figure against its
// scenario's target (docs/PERFORMANCE.md).
//
//	go run ./cmd/relaybench                    all scenarios, full size
//	go run ./cmd/relaybench -short             seconds-long smoke run
//	go run ./cmd/relaybench -scenario burst -json
//	go run ./cmd/relaybench -scenario burst -profile /tmp/prof   CPU and allocation profiles of the relay
//	go run ./cmd/relaybench -scenario pause    the catch-up after the relay is stopped twice for a second
//	go run ./cmd/relaybench -scenario pause -stall 500ms
//	go run ./cmd/relaybench -scenario fanout -walstats   the WAL per delivery by kind of record and relation
//	go run ./cmd/relaybench -scenario platform   the platform's commit latency alone, with PostgreSQL's own client, with the relay
//	go run ./cmd/relaybench -scenario steady -separate-state   the relay's tables in a PostgreSQL of their own
//	go run ./cmd/relaybench -scenario steady -separate-state=database   in a database of their own beside the platform's
//	go run ./cmd/relaybench -scenario floor,steady -socket   the relay and PostgreSQL's own client over the server's Unix socket
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
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
	scenario := flag.String("scenario", "", "comma-separated scenarios ("+strings.Join(bench.Scenarios, ", ")+"; and pause and floor, not in the default run); default all but pause and floor")
	short := flag.Bool("short", false, "seconds-long smoke run")
	asJSON := flag.Bool("json", false, "print JSON")
	relay := flag.String("relay", "", "relay binary (default: go build ./cmd/relay)")
	profile := flag.String("profile", "", "write a CPU and an allocation profile of each relay run into this directory")
	pgstats := flag.Bool("pgstats", false, "print the statements PostgreSQL spent most time on, per scenario")
	walstats := flag.Bool("walstats", false, "print the WAL written per delivery by kind of record and relation, per scenario (pg_walinspect)")
	metrics := flag.Bool("metrics", false, "run the relay with its metrics on and print, for the paced scenarios, where the time from commit to the relay's read went (the server's part and the relay's), from its histogram")
	var separate stateFlag
	flag.Var(&separate, "separate-state", "keep the relay's tables (database.state_url) in a PostgreSQL server of their own (-separate-state, or =cluster), where the platform's server pays only for the walsender, or in a database of their own beside the platform's (=database)")
	socket := flag.Bool("socket", false, "have the relay, and PostgreSQL's own client in the floor and the platform scenario, reach PostgreSQL over its Unix socket instead of TCP on loopback (the platform's load stays on TCP)")
	stall := flag.Duration("stall", 0, fmt.Sprintf("how long the pause scenario stops the relay each time (default %v, %v with -short)", bench.DefaultStall, bench.ShortStall))
	flag.Parse()

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
	opts := bench.Options{Relay: *relay, Self: self, Short: *short, Progress: os.Stderr, ProfileDir: *profile, PGStats: *pgstats, WALStats: *walstats, Metrics: *metrics, SeparateState: separate.place, Socket: *socket, Stall: *stall}
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
		if r.Disk.Syncs == 0 && r.Disk.Err == "" {
			continue // no probe ran (floor)
		}
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
	printTax(results)
	printTargets(results)
	for _, r := range results {
		if r.FloorP50ms > 0 {
			fmt.Printf("%s: p50 %.3f ms, %.3f ms over the floor's %.3f ms in this run (PostgreSQL's own client reading the same load)\n",
				r.Scenario, r.P50ms, r.P50OverFloorMs, r.FloorP50ms)
		}
		for _, rec := range r.Recovery {
			fmt.Printf("%s: %s\n", r.Scenario, rec)
		}
		if p := r.Platform; p != nil {
			fmt.Printf("%s: the platform's transactions at %d/s on %d connections, alone: %s\n", r.Scenario, p.Rate, p.Connections, p.Alone)
			fmt.Printf("%s: the same with PostgreSQL's own client reading every change (pg_recvlogical, storing nothing): %s\n", r.Scenario, p.WithClient)
			fmt.Printf("%s: the same with the relay delivering beside them: %s\n", r.Scenario, p.WithRelay)
			fmt.Printf("%s: the platform's p99 with PostgreSQL's own client over without: %.2f; its COMMIT's: %.2f\n", r.Scenario, p.ClientP99Ratio, p.ClientCommitP99Ratio)
			fmt.Printf("%s: the platform's p99 with the relay over without: %.2f (target at most 1.1); its COMMIT's: %.2f\n", r.Scenario, p.P99Ratio, p.CommitP99Ratio)
		}
	}
}

// printTax prints, per scenario, the platform's tax: the CPU the
// platform's PostgreSQL spends on the relay's processes, per event (the
// steady target) and per delivery (the burst target), split into the
// walsender and the relay's connections on that server; and, with the
// relay's tables in a cluster of their own, what that cluster spends.
func printTax(results []bench.Result) {
	if !slices.ContainsFunc(results, func(r bench.Result) bool { return len(r.PGByProcess) > 0 }) {
		return
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "platform's PostgreSQL on the relay	relay's state in	µs/event	µs/delivery	walsender µs/delivery	relay's connections µs/delivery	state cluster µs/delivery	state cluster WAL B/delivery	")
	for _, r := range results {
		if len(r.PGByProcess) == 0 {
			continue
		}
		walsender := r.PGByProcess["smtm-relay"]
		where := map[bench.StatePlace]string{bench.StateInPlatform: "platform database", bench.StateDatabase: "own database", bench.StateCluster: "own cluster"}[r.State]
		if r.Socket {
			where += " (Unix socket)"
		}
		cluster, clusterWAL := "-", "-"
		if r.State == bench.StateCluster {
			cluster, clusterWAL = fmt.Sprintf("%.0f", r.StatePGMicrosPerDel), fmt.Sprintf("%.0f", r.StateWALBytesPerDel)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t\n", r.Scenario, where,
			r.PGRelayMicrosPerEvent, r.PGRelayMicrosPerDel, walsender, r.PGRelayMicrosPerDel-walsender, cluster, clusterWAL)
	}
	tw.Flush()
}

// printTargets prints each run's figures against its scenario's targets
// (bench.Targets): whether this run met each. A target is met when it
// holds in every run, so one run says only that it did not fail here.
func printTargets(results []bench.Result) {
	if !slices.ContainsFunc(results, func(r bench.Result) bool { return len(r.Targets) > 0 }) {
		return
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target (docs/PERFORMANCE.md)\tscenario\tthis run\tmet\t")
	for _, r := range results {
		for _, c := range r.Targets {
			met := "no"
			if c.Met {
				met = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", c.Target, r.Scenario, c.Figure, met)
		}
	}
	tw.Flush()
}

// stateFlag is -separate-state: given alone, a cluster of their own;
// with a value, "cluster" or "database".
type stateFlag struct{ place bench.StatePlace }

func (f *stateFlag) String() string { return string(f.place) }

func (f *stateFlag) Set(s string) error {
	p, err := bench.ParseStatePlace(s)
	f.place = p
	return err
}

func (f *stateFlag) IsBoolFlag() bool { return true }
