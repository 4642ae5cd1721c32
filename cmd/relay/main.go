// Command relay delivers SmartMaintenance platform events to webhooks. It
// reads the platform database's change feed, maps row changes to the
// events of the admin guide, and POSTs signed payloads with persisted
// retries.
//
// The command tree (relay --help, relay help COMMAND) is built with cobra in
// commands.go and webhooks.go; this file runs it and turns its errors into
// the documented exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	_ "time/tzdata" // company time zones work on hosts without zoneinfo

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/internal/procs"
	"github.com/smartmaintenance/relay/internal/termtext"
	"github.com/smartmaintenance/relay/service"
)

// Exit codes. They are documented in the README and in `relay --help`.
const (
	exitOK         = 0
	exitFailure    = 1 // the relay ran and failed; the admin API refused a request
	exitUsage      = 2 // bad flags or arguments, bad config, bad rules
	exitDatabase   = 3 // the database cannot feed the relay as it is
	exitTestFailed = 4 // `relay webhooks test`: the receiver did not answer 2xx in time
)

// startAgain starts the program again in place of the process (see
// runtime.sysmon_ticking). Only main sets it: a test that runs a command
// in its own process must not be replaced.
var startAgain func(args []string) error

func main() {
	startAgain = procs.Exec
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr)
	root.SetArgs(normaliseArgs(root, args))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var silent exitError
	if !errors.As(err, &silent) {
		name := "relay"
		if cmd != nil {
			name = cmd.CommandPath()
		}
		// Errors carry what the admin API, a receiver or the database
		// said: escaped, they cannot draw on the operator's terminal.
		if exitCode(err) == exitUsage {
			// A config file's problems, one a line (docs/CONFIG.md).
			for _, p := range errorLines(err) {
				fmt.Fprintf(stderr, "%s: %s\n", name, termtext.Safe(p))
			}
		} else {
			fmt.Fprintf(stderr, "%s: %s\n", name, termtext.Safe(oneLine(err)))
		}
	}
	return exitCode(err)
}

// oneLine folds a multi-line error (pgx lists every address it tried) into
// one line, dropping repeated parts.
func oneLine(err error) string {
	return strings.Join(errorLines(err), " ")
}

// errorLines returns the lines of err's message, trimmed, without empty or
// repeated ones.
func errorLines(err error) []string {
	var parts []string
	for _, p := range strings.Split(err.Error(), "\n") {
		p = strings.TrimSpace(p)
		if p != "" && !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	return parts
}

func exitCode(err error) int {
	var usageErr usageError
	var silent exitError
	var testErr testFailedError
	switch {
	case errors.As(err, &silent):
		return silent.code
	case errors.As(err, &testErr):
		return exitTestFailed
	case errors.As(err, &usageErr), errors.Is(err, service.ErrConfig):
		return exitUsage
	case cdc.IsFatal(err), errors.Is(err, service.ErrDatabase):
		return exitDatabase
	}
	return exitFailure
}

// usageError is a mistake on the command line: exit 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitError ends the command with an exit code after it has printed what
// went wrong itself.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// testFailedError is a test event the receiver did not accept: exit 4, so
// that scripts can tell it from a refused request.
type testFailedError struct{ error }

func (e testFailedError) Unwrap() error { return e.error }
