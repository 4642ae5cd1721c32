package faults

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

func itoa(n int) string { return strconv.Itoa(n) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// pgtestOptions are the settings of private servers: durable, as in
// production, so that an immediate restart really recovers from the WAL.
func pgtestOptions() pgtest.Options {
	return pgtest.Options{Durable: true}
}

// rewrite replaces text in a config file and returns its path.
func rewrite(t *testing.T, path, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
