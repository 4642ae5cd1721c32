package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/demo"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/service"
	"github.com/smartmaintenance/relay/telemetry"
)

const exitCodesHelp = `Exit codes:
  0  success; also --help
  1  the relay ran and failed, or the admin API refused the request
  2  usage error (flags, arguments) or a bad config file, environment or rule
  3  the database cannot feed the relay as it is (unreachable, credentials,
     wal_level, privileges, replication slot lost)
  4  relay webhooks test: the receiver did not answer 2xx in time`

// newRoot builds the command tree. Commands print to stdout and stderr;
// errors are returned to run, which prints them and picks the exit code.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "relay",
		Short: "Deliver SmartMaintenance platform events to webhooks",
		Long: `relay reads the platform database's change feed (logical replication),
maps row changes to the admin guide's events, and POSTs each one, signed
with HMAC-SHA256, to every subscribed webhook, with retries persisted in
PostgreSQL.

` + exitCodesHelp,
		Example: `  relay demo                         # a self-contained demo, nothing to configure
  relay check --config relay.yaml    # is the file valid, and can the database feed the relay?
  relay run --config relay.yaml
  relay webhooks list --url http://127.0.0.1:8081 --token rat_...`,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Completion is the explicit `relay completion SHELL` below.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// A command that groups others is used as "relay webhooks COMMAND",
	// although it runs (to say that the command is missing).
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), `Usage:{{if .Runnable}}
  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} [command]{{end}}`, `Usage:{{if .HasAvailableSubCommands}}
  {{.CommandPath}} COMMAND [flags]{{else}}
  {{.UseLine}}{{end}}`, 1))
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(runCmd(), checkCmd(), eventsCmd(), webhooksCmd(), tokenCmd(), slotCmd(),
		demoCmd(), simulateCmd(), versionCmd(), completionCmd())
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			c.Example = "  relay help\n  relay help webhooks create"
		}
	}
	return root
}

// groupRunE is the RunE of a command that only groups others: without a
// subcommand it prints its usage to stderr and exits 2.
func groupRunE(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		c.SetOut(c.ErrOrStderr())
		_ = c.Usage()
		return usageError{errors.New("missing command (the usage is above)")}
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	c.SuggestionsMinimumDistance = 2
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageError{fmt.Errorf("%s (see %s --help)", msg, c.CommandPath())}
}

// noArgs refuses positional arguments as a usage error.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q (see %s --help)", args[0], c.CommandPath())}
	}
	return nil
}

// normaliseArgs lets the flags be written with one dash as well as two, as
// they could before the command line moved to cobra (Go's flag package
// takes both): "-duration 30s" becomes "--duration 30s". Only names of
// flags the command has are rewritten, never a flag's value or anything
// after "--"; single letters stay shorthands ("-v").
func normaliseArgs(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		cmd = root
	}
	cmd.InitDefaultHelpFlag() // so that "-help" is known too
	lookup := func(name string) *pflag.Flag {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f
		}
		return cmd.InheritedFlags().Lookup(name)
	}
	out := make([]string, 0, len(args))
	value := false // the previous argument was a flag that takes a value
	for i, a := range args {
		switch {
		case value:
			value = false
		case a == "--":
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "--"):
			name, _, inline := strings.Cut(a[2:], "=")
			if f := lookup(name); f != nil && !inline && f.NoOptDefVal == "" {
				value = true
			}
		case strings.HasPrefix(a, "-") && len(a) > 2:
			name, _, inline := strings.Cut(a[1:], "=")
			if f := lookup(name); f != nil && len(name) > 1 {
				a = "-" + a
				value = !inline && f.NoOptDefVal == ""
			}
		case strings.HasPrefix(a, "-") && len(a) == 2:
			if f := cmd.Flags().ShorthandLookup(a[1:]); f != nil && f.NoOptDefVal == "" {
				value = true
			}
		}
		out = append(out, a)
	}
	return out
}

// configFlag registers --config and returns where its value goes.
func configFlag(fs *pflag.FlagSet) *string {
	return fs.String("config", "", "config file (YAML); RELAY_* environment variables override it")
}

// loadConfig loads the config file and the environment.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

// checkConfig runs every check that needs no connection: what `relay check
// --offline` does, and what `relay run` does before it says it starts.
func checkConfig(cfg *config.Config) (*mapper.Mapper, error) {
	m, err := service.NewMapper(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := egress.NewPolicy(cfg.Delivery.AllowNetworks); err != nil {
		return nil, fmt.Errorf("%w: delivery.allow_networks: %v", service.ErrConfig, err)
	}
	if _, err := service.SecretBox(cfg); err != nil {
		return nil, err
	}
	return m, nil
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

// runFlags are the flags of `relay run`.
type runFlags struct {
	config, cpuProfile, memProfile string
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "config file (YAML); RELAY_* environment variables override it")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a profile of the run's memory allocations to this file when it stops (go tool pprof)")
}

// parseRun parses the arguments of `relay run` (after "run") and loads the
// config they name, as the command does.
func parseRun(args []string) (*config.Config, error) {
	var f runFlags
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	return loadConfig(f.config)
}

func runCmd() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the relay",
		Long: `Run the relay until SIGTERM or Ctrl-C, which let in-flight attempts finish
(bounded by delivery.drain_timeout) and exit 0. The config is checked
before the relay starts; a bad one exits 2 without starting.`,
		Example: `  relay run --config relay.yaml
  RELAY_DATABASE__URL=postgres://relay@db:5432/smartmaintenance relay run --config relay.yaml
  relay run --config relay.yaml --cpuprofile cpu.out   # then: go tool pprof cpu.out`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return cmdRun(c, f)
		},
	}
	f.register(c.Flags())
	return c
}

func cmdRun(c *cobra.Command, f runFlags) error {
	cfg, err := loadConfig(f.config)
	if err != nil {
		return err
	}
	// A bad config is reported before the relay says it starts.
	if cfg.Database.URL == "" {
		return fmt.Errorf("%w: database.url is required (or RELAY_DATABASE__URL)", service.ErrConfig)
	}
	if _, err := checkConfig(cfg); err != nil {
		return err
	}
	// Before anything is opened or said, so that the process started again
	// does it all once.
	var sysmonErr error
	if cfg.Runtime.SysmonTicking && startAgain != nil {
		sysmonErr = startAgain(os.Args)
	}
	stderr := c.ErrOrStderr()
	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return usageError{err}
		}
		defer stop()
	}
	if f.memProfile != "" {
		file, err := os.Create(f.memProfile)
		if err != nil {
			return usageError{fmt.Errorf("--memprofile: %w", err)}
		}
		defer func() {
			if err := pprof.Lookup("allocs").WriteTo(file, 0); err != nil {
				fmt.Fprintln(stderr, "--memprofile:", err)
			}
			file.Close()
		}()
	}
	log := newLogger(cfg, stderr)
	log.Info("relay starting", "slot", cfg.Replication.Slot, "webhooks_source", cfg.Webhooks.Source)
	gc := tuneGC(cfg.Runtime, os.Getenv)
	ctx, stopThreads := context.WithCancel(c.Context())
	threadAttrs, threads := adaptThreads(ctx, cfg.Runtime, os.Getenv, log)
	log.Info("runtime", append(append(gc, threadAttrs...), sysmonAttrs(cfg.Runtime, os.Getenv)...)...)
	if sysmonErr != nil {
		log.Warn("Go's system monitor is not kept on its tick (runtime.sysmon_ticking); the relay runs, with more CPU per event while quiet", "err", sysmonErr)
	}
	err = service.Run(ctx, cfg, log)
	stopThreads()
	threads()
	if err != nil {
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

func checkCmd() *cobra.Command {
	var offline bool
	var path *string
	c := &cobra.Command{
		Use:   "check --config FILE [--offline]",
		Short: "Check the config, and that the database can feed the relay",
		Long: `Check the config file and the environment, then connect and check what
relay run needs: the database is reachable, wal_level = logical, the role
may replicate, the watched tables exist with the columns the rules read,
the publication and the replication slot (existing, or created at the
first start; the WAL the slot retains), and the state schema's migrations.

Each problem is one line on stderr that says how to fix it. Exit 0 when
relay run can start; 2 for a problem of the config or the rules; 3 for a
problem of the database. --offline checks the file and environment only.`,
		Example: `  relay check --config relay.yaml
  relay check --config relay.yaml --offline    # without connecting (CI, before deploying)
  RELAY_DATABASE__URL=postgres://relay@db:5432/smartmaintenance relay check --config relay.yaml`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return cmdCheck(c, *path, offline)
		},
	}
	path = configFlag(c.Flags())
	c.Flags().BoolVar(&offline, "offline", false, "check the file and environment only; do not connect")
	return c
}

func eventsCmd() *cobra.Command {
	var api apiFlags
	var path *string
	c := &cobra.Command{
		Use:   "events (--config FILE | --url URL --token TOKEN) [--json]",
		Short: "List the event types the database offers",
		Long: `List the event types of the rules and whether the watched database offers
each (its table exists), reading the database the config names; or, with
--url and --token and no --config, ask a running relay's admin API.`,
		Example: `  relay events --config relay.yaml
  relay events --config relay.yaml --json
  RELAY_ADMIN_URL=http://127.0.0.1:8081 RELAY_ADMIN_TOKEN=rat_... relay events`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if *path == "" && api.resolve().url != "" {
				return cmdEventsAPI(c, api)
			}
			cfg, err := loadConfig(*path)
			if err != nil {
				return err
			}
			cat, err := service.Events(c.Context(), cfg)
			if err != nil {
				return err
			}
			return cat.Print(c.OutOrStdout(), api.json)
		},
	}
	path = configFlag(c.Flags())
	api.register(c.Flags())
	return c
}

func slotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "slot",
		Short: "Manage the replication slot",
		Example: `  relay slot drop --config relay.yaml --yes
  relay slot forward --config relay.yaml --yes`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	drop := slotAction(&cobra.Command{
		Use:   "drop --config FILE --yes",
		Short: "Drop the replication slot and the relay's position",
		Long: `Drop the replication slot and forget the relay's position, after the slot
was lost or invalidated. The next start creates a new slot: changes
committed while no slot exists are never delivered. Stop every relay first.`,
		Example: `  relay slot drop --config relay.yaml --yes
  relay run --config relay.yaml              # creates a new slot`,
	}, "dropping the slot forgets the relay's position; the next start delivers only changes committed after it",
		"confirm: changes committed while no slot exists are never delivered",
		func(ctx context.Context, cfg *config.Config) (string, error) {
			if err := service.DropSlot(ctx, cfg); err != nil {
				return "", err
			}
			return fmt.Sprintf("dropped slot %s and the relay's position; the next start creates a new slot", cfg.Replication.Slot), nil
		})
	forward := slotAction(&cobra.Command{
		Use:   "forward --config FILE --yes",
		Short: "Move the relay's position forward to where its slot was confirmed",
		Long: `Move the relay's position forward to where its replication slot was
confirmed, after the state database was restored from an older backup
(relay run exits with code 3: "replication slot was confirmed past the
relay's position"). The relay then resumes from the slot's position and
delivers every change committed after it. The changes between the two
positions are not delivered again: the relay had stored them, and sent
most, before the state database lost them, and their records (deliveries,
attempts, retries still due) are gone with it, and so is the relay's
record of the rows changed between them: such a row's next change is
compared with its state in the backup (see the README, "Recovering a
lost slot"). Stop every relay first.`,
		Example: `  relay slot forward --config relay.yaml --yes
  relay run --config relay.yaml              # resumes from the slot's position`,
	}, "forwarding the position skips the changes between it and the slot's, whose records the state database lost",
		"confirm: the changes between the two positions are not delivered again",
		func(ctx context.Context, cfg *config.Config) (string, error) {
			from, to, err := service.ForwardSlot(ctx, cfg)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("moved the relay's position of slot %s from %s to %s, where the slot was confirmed; the next start resumes there", cfg.Replication.Slot, from, to), nil
		})
	c.AddCommand(drop, forward)
	return c
}

// slotAction completes c, a relay slot subcommand that gives up changes
// and so acts only with --yes: without it, it refuses with refusal.
func slotAction(c *cobra.Command, refusal, yesHelp string, act func(context.Context, *config.Config) (string, error)) *cobra.Command {
	var yes bool
	path := configFlag(c.Flags())
	c.Flags().BoolVar(&yes, "yes", false, yesHelp)
	c.Args = noArgs
	c.RunE = func(c *cobra.Command, _ []string) error {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		if !yes {
			return usageError{errors.New(refusal + ". Add --yes to confirm")}
		}
		done, err := act(c.Context(), cfg)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.OutOrStdout(), done)
		return nil
	}
	return c
}

func demoCmd() *cobra.Command {
	opts := demo.Options{}
	c := &cobra.Command{
		Use:   "demo [--duration 30s] [-v]",
		Short: "Run a self-contained demo on a throwaway PostgreSQL",
		Long: `Start a throwaway PostgreSQL (wal_level=logical) from the local install, the
reference schema with two sample companies, a receiver that verifies every
signature and prints each event, the relay with its admin API, and
simulated platform activity. It prints the admin API's address and tokens
for trying relay webhooks in another terminal. Ctrl-C stops everything and
removes the temporary database.`,
		Example: `  relay demo
  relay demo --duration 30s -v      # stop after 30 seconds; show the relay's log
  go run ./cmd/relay demo`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return demo.Run(c.Context(), opts, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	c.Flags().DurationVar(&opts.Duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	c.Flags().DurationVar(&opts.Interval, "interval", 0, "time between simulated platform actions (default 700ms)")
	c.Flags().BoolVarP(&opts.Verbose, "verbose", "v", false, "show the relay's own log lines")
	return c
}

// simulateFlags are the flags of `relay simulate`.
type simulateFlags struct {
	database string
	interval time.Duration
	slot     string
}

func (f *simulateFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.database, "database", "", "the platform database (reference schema and sample data)")
	fs.DurationVar(&f.interval, "interval", 700*time.Millisecond, "time between simulated platform actions")
	fs.StringVar(&f.slot, "slot", "smtm_relay", "wait until a relay streams this replication slot")
}

func (f simulateFlags) validate() error {
	if f.database == "" || f.interval <= 0 {
		return usageError{errors.New("usage: relay simulate --database URL [--interval 700ms] [--slot smtm_relay]")}
	}
	return nil
}

// parseSimulate parses the arguments of `relay simulate` (after
// "simulate"), as the command does.
func parseSimulate(args []string) (simulateFlags, error) {
	var f simulateFlags
	fs := pflag.NewFlagSet("simulate", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return f, usageError{err}
	}
	if fs.NArg() > 0 {
		return f, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return f, f.validate()
}

func simulateCmd() *cobra.Command {
	var f simulateFlags
	c := &cobra.Command{
		Use:   "simulate --database URL [--interval 700ms] [--slot smtm_relay]",
		Short: "Simulate platform activity on a database with the reference schema",
		Long: `Wait until a relay streams the slot, then perform random platform actions
(tasks assigned, completed and reviewed, repair requests, shutdowns, users,
exports) on a database with the reference schema and sample data, as
docker-compose.yml's simulator does.`,
		Example: `  relay simulate --database postgres://postgres:postgres@localhost:5432/smartmaintenance
  relay simulate --database "$DATABASE_URL" --interval 200ms`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := f.validate(); err != nil {
				return err
			}
			return cmdSimulate(c, f)
		},
	}
	f.register(c.Flags())
	return c
}

func cmdSimulate(c *cobra.Command, f simulateFlags) error {
	ctx, stdout := c.Context(), c.OutOrStdout()
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

func tokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Print a new admin API token and the hash to configure",
		Long: `Print a new random admin API token (rat_...) and its SHA-256. Give the token
to its holder; put only the hash in admin.tokens.`,
		Example: `  relay token
  relay token | awk '/token_sha256/ {print $2}'`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return cmdToken(c.OutOrStdout()) },
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the relay's version, commit and Go version",
		Example: `  relay version`,
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprint(c.OutOrStdout(), versionText())
			return nil
		},
	}
}

// versionText describes the binary from the build information Go embeds:
// the module's version (a tag or pseudo-version with go install; "(devel)"
// for a build in a checkout) and the VCS commit when it was recorded.
func versionText() string {
	module, version, commit := "github.com/smartmaintenance/relay", "(unknown)", "unknown (no VCS information in this build)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path != "" {
			module = bi.Main.Path
		}
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		var rev, at, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			commit = rev
			if at != "" {
				commit += " (" + at + ")"
			}
			if modified == "true" {
				commit += " with uncommitted changes"
			}
		}
	}
	return fmt.Sprintf("relay %s\nmodule: %s\ncommit: %s\ngo: %s %s/%s\n", version, module, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func completionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "completion",
		Short: "Print the shell completion script for bash, zsh or fish",
		Long: `Print the script that completes relay's commands and flags in bash, zsh or
fish. Load it in the current shell, or install it where the shell reads
completions.`,
		Example: `  source <(relay completion bash)
  relay completion bash > /etc/bash_completion.d/relay
  relay completion zsh > "${fpath[1]}/_relay"
  relay completion fish > ~/.config/fish/completions/relay.fish`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	for _, sh := range []struct {
		name, example string
		gen           func(root *cobra.Command, w io.Writer) error
	}{
		{"bash", "  source <(relay completion bash)\n  relay completion bash > /etc/bash_completion.d/relay",
			func(root *cobra.Command, w io.Writer) error { return root.GenBashCompletionV2(w, true) }},
		{"zsh", "  relay completion zsh > \"${fpath[1]}/_relay\"   # then start a new shell",
			func(root *cobra.Command, w io.Writer) error { return root.GenZshCompletion(w) }},
		{"fish", "  relay completion fish > ~/.config/fish/completions/relay.fish\n  relay completion fish | source",
			func(root *cobra.Command, w io.Writer) error { return root.GenFishCompletion(w, true) }},
	} {
		c.AddCommand(&cobra.Command{
			Use:     sh.name,
			Short:   "Print the " + sh.name + " completion script",
			Example: sh.example,
			Args:    noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				return sh.gen(c.Root(), c.OutOrStdout())
			},
		})
	}
	return c
}
