package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/bench"
)

// TestSeparateStateFlag checks that -separate-state alone puts the relay's
// tables in a cluster of their own and takes the place as a value too.
func TestSeparateStateFlag(t *testing.T) {
	for args, want := range map[string]bench.StatePlace{
		"":                           bench.StateInPlatform,
		"-separate-state":            bench.StateCluster,
		"-separate-state=cluster":    bench.StateCluster,
		"-separate-state=database":   bench.StateDatabase,
		"-separate-state=false":      bench.StateInPlatform,
		"-separate-state -json=true": bench.StateCluster,
	} {
		fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
		var f stateFlag
		fs.Var(&f, "separate-state", "")
		fs.Bool("json", false, "")
		if err := fs.Parse(strings.Fields(args)); err != nil || f.place != want {
			t.Errorf("%q: %q, %v; want %q", args, f.place, err, want)
		}
	}
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f stateFlag
	fs.Var(&f, "separate-state", "")
	if err := fs.Parse([]string{"-separate-state=elsewhere"}); err == nil {
		t.Error("-separate-state=elsewhere: no error")
	}
}
