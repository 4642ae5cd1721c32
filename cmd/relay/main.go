// Command relay delivers SmartMaintenance platform events to webhooks. It
// reads the platform database's change feed, maps row changes to the
// events of the admin guide, and POSTs signed payloads with persisted
// retries.
//
//	relay run    --config FILE   run the relay
//	relay check  --config FILE   validate a config file without running
//	relay events --config FILE   list the event types the database offers
//	relay webhooks ...           manage webhooks over the admin API
//	relay token                  print a new admin token and its hash
//	relay slot drop --config FILE --yes
//	                             drop the replication slot and the relay's position
//	relay demo                   a self-contained demo on a throwaway PostgreSQL
//	relay simulate --database URL
//	                             simulate platform activity on a database with the reference schema
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // company time zones work on hosts without zoneinfo

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/demo"
	"github.com/smartmaintenance/relay/service"
	"github.com/smartmaintenance/relay/telemetry"
)

// Exit codes. They are documented in the README.
const (
	exitOK       = 0
	exitFailure  = 1 // the relay ran and failed
	exitUsage    = 2 // bad flags, bad config, bad rules
	exitDatabase = 3 // the database cannot feed the relay as it is
)

const usage = `usage: relay <command> [flags]

commands:
  run     --config FILE   run the relay (--cpuprofile FILE, --memprofile FILE: profile the run)
  check   --config FILE   validate a config file without running
  events  --config FILE   list the event types this database offers
  events  --url URL --token TOKEN
                          the same, from a running relay's admin API
  webhooks <command>      list, create, update, enable, disable, delete, test,
                          deliveries, refire over the admin API (relay webhooks help)
  token                   print a new admin API token and the hash to configure
  slot drop --config FILE --yes
                          drop the replication slot and the relay's position
  demo                    run a self-contained demo on a throwaway PostgreSQL
  simulate --database URL [--interval 700ms] [--slot smtm_relay]
                          simulate platform activity on a database with the
                          reference schema and sample data (docker-compose)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, stderr)
	case "check":
		err = cmdCheck(rest, stdout)
	case "events":
		err = cmdEvents(ctx, rest, stdout)
	case "slot":
		err = cmdSlot(ctx, rest, stdout)
	case "webhooks":
		err = cmdWebhooks(ctx, rest, stdout)
	case "token":
		err = cmdToken(stdout)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "simulate":
		err = cmdSimulate(ctx, rest, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "relay: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "relay %s: %s\n", cmd, oneLine(err))
	return exitCode(err)
}

// oneLine folds a multi-line error (pgx lists every address it tried) into
// one line, dropping repeated parts.
func oneLine(err error) string {
	var parts []string
	for _, p := range strings.Split(err.Error(), "\n") {
		p = strings.TrimSpace(p)
		if p != "" && !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

func exitCode(err error) int {
	var usageErr usageError
	switch {
	case errors.As(err, &usageErr), errors.Is(err, service.ErrConfig):
		return exitUsage
	case cdc.IsFatal(err), errors.Is(err, service.ErrDatabase):
		return exitDatabase
	}
	return exitFailure
}

type usageError struct{ error }

// flags parses the common flags of a command and loads the config.
func flags(name string, args []string, extra func(*flag.FlagSet)) (*config.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "config file (YAML); RELAY_* environment variables override it")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, usageError{err}
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		return nil, nil, usageError{err}
	}
	return cfg, fs, nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	// A reload of the config file changes the level (config.LogLevel).
	opts := &slog.HandlerOptions{Level: cfg.LogLevel()}
	// Records logged inside a span carry trace_id and span_id.
	if cfg.Log.Format == "json" {
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts)))
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	var cpuProfile, memProfile string
	cfg, _, err := flags("run", args, func(fs *flag.FlagSet) {
		fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
		fs.StringVar(&memProfile, "memprofile", "", "write a profile of the run's memory allocations to this file when it stops (go tool pprof)")
	})
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		stop, err := startCPUProfile(cpuProfile)
		if err != nil {
			return usageError{err}
		}
		defer stop()
	}
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return usageError{fmt.Errorf("--memprofile: %w", err)}
		}
		defer func() {
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(stderr, "--memprofile:", err)
			}
			f.Close()
		}()
	}
	log := newLogger(cfg, stderr)
	log.Info("relay starting", "slot", cfg.Replication.Slot, "webhooks_source", cfg.Webhooks.Source)
	log.Info("garbage collector", tuneGC(cfg.Runtime, os.Getenv)...)
	if err := service.Run(ctx, cfg, log); err != nil {
		return err
	}
	log.Info("relay stopped")
	return nil
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func cmdCheck(args []string, stdout io.Writer) error {
	cfg, _, err := flags("check", args, nil)
	if err != nil {
		return err
	}
	m, err := service.NewMapper(cfg)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stdout, "warning:", w)
	}
	fmt.Fprintf(stdout, "config OK: %d webhook(s) from %s, %d event type(s) in the rules\n",
		len(cfg.Webhooks.Endpoints), cfg.Webhooks.Source, len(m.EventTypes()))
	return nil
}

func cmdEvents(ctx context.Context, args []string, stdout io.Writer) error {
	var asJSON bool
	var api apiFlags
	var path string
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&path, "config", "", "config file")
	api.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if path == "" && api.url != "" {
		return cmdEventsAPI(ctx, api, stdout)
	}
	asJSON = api.json
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		return usageError{err}
	}
	cat, err := service.Events(ctx, cfg)
	if err != nil {
		return err
	}
	return cat.Print(stdout, asJSON)
}

func cmdSlot(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "drop" {
		return usageError{errors.New("usage: relay slot drop --config FILE --yes")}
	}
	var yes bool
	cfg, _, err := flags("slot drop", args[1:], func(fs *flag.FlagSet) {
		fs.BoolVar(&yes, "yes", false, "confirm: changes committed while no slot exists are never delivered")
	})
	if err != nil {
		return err
	}
	if !yes {
		return usageError{errors.New("dropping the slot forgets the relay's position; the next start delivers only changes committed after it. Add --yes to confirm")}
	}
	if err := service.DropSlot(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "dropped slot %s and the relay's position; the next start creates a new slot\n", cfg.Replication.Slot)
	return nil
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := demo.Options{}
	fs.DurationVar(&opts.Duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	fs.DurationVar(&opts.Interval, "interval", 0, "time between simulated platform actions (default 700ms)")
	fs.BoolVar(&opts.Verbose, "v", false, "show the relay's own log lines")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	return demo.Run(ctx, opts, stdout, stderr)
}

// simulateFlags are the flags of `relay simulate`.
type simulateFlags struct {
	database string
	interval time.Duration
	slot     string
}

func parseSimulate(args []string) (simulateFlags, error) {
	var f simulateFlags
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.database, "database", "", "the platform database (reference schema and sample data)")
	fs.DurationVar(&f.interval, "interval", 700*time.Millisecond, "time between simulated platform actions")
	fs.StringVar(&f.slot, "slot", "smtm_relay", "wait until a relay streams this replication slot")
	if err := fs.Parse(args); err != nil {
		return f, usageError{err}
	}
	if f.database == "" || f.interval <= 0 || fs.NArg() > 0 {
		return f, usageError{errors.New("usage: relay simulate --database URL [--interval 700ms] [--slot smtm_relay]")}
	}
	return f, nil
}

func cmdSimulate(ctx context.Context, args []string, stdout io.Writer) error {
	f, err := parseSimulate(args)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, f.database)
	if err != nil {
		return usageError{fmt.Errorf("--database: %w", err)}
	}
	defer pool.Close()
	fmt.Fprintf(stdout, "waiting for a relay to stream slot %s...\n", f.slot)
	if err := demo.WaitForSlot(ctx, pool, f.slot); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: %w", service.ErrDatabase, err)
	}
	fmt.Fprintf(stdout, "simulating platform activity every %v; Ctrl-C stops\n", f.interval)
	if err := demo.Simulate(ctx, pool, f.interval); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
