// Package pgtest is the tests' PostgreSQL harness: Main starts one throwaway
// server (internal/throwawaypg) per test binary, and NewDatabase gives each
// test a fresh database on it, dropped when the test ends.
//
// The server itself lives in internal/throwawaypg so that the demo, which
// starts one at run time, does not link "testing" into the relay binary.
// Server, Options and Start are re-exported here so a test that needs a
// private server (other settings, restarts) imports this package alone.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/smartmaintenance/relay/internal/throwawaypg"
)

// Server is a running throwaway PostgreSQL.
type Server = throwawaypg.Server

// Options tune a throwaway server.
type Options = throwawaypg.Options

// Start initialises and starts a private server; the caller stops it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	return throwawaypg.Start(ctx, opts)
}

// shared is the server of the current test binary, started by Main.
var shared *Server

// Main starts one server for a test binary, runs its tests and stops the
// server. Call it from TestMain. Tests then get databases from NewDatabase.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if err := throwawaypg.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	srv, err := throwawaypg.Start(context.Background(), throwawaypg.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: start PostgreSQL:", err)
		return 1
	}
	shared = srv
	defer srv.Stop()
	return m.Run()
}

// Shared returns the server started by Main.
func Shared(t testing.TB) *Server {
	t.Helper()
	if shared == nil {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	return shared
}

// NewDatabase creates a fresh database on the shared server, runs the SQL
// scripts in it, drops it when the test ends, and returns its URL.
func NewDatabase(t testing.TB, scripts ...string) string {
	t.Helper()
	srv := Shared(t)
	ctx := context.Background()
	name, err := srv.CreateDatabase(ctx, scripts...)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.DropDatabase(context.Background(), name); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return srv.URL(name)
}
