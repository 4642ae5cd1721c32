package config_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
)

const hashA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const hashB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func TestCompare(t *testing.T) {
	old := config.Default()
	old.Admin.Tokens = []config.AdminToken{
		{Name: "ops-laptop", CompanyID: 1, TokenSHA256: hashA},
		{Name: "ci", Operator: true, TokenSHA256: hashB},
	}
	old.Webhooks.Endpoints = []config.Webhook{{CompanyID: 1, Name: "erp", URL: "https://a.example/x", Secret: "s3cret-value-0123456789"}}
	next := config.Default()
	next.Admin.Tokens = []config.AdminToken{
		{Name: "ci", Operator: true, TokenSHA256: hashA},
		{Name: "new", CompanyID: 2, TokenSHA256: hashB},
	}
	next.Webhooks.Endpoints = []config.Webhook{{CompanyID: 1, Name: "erp", URL: "https://a.example/x", Secret: "another-secret-0123456789"}}
	next.Log.Level = "debug"
	next.Database.URL = "postgres://u:pw@db/x"
	next.Delivery.Workers = 7
	next.Mapping.ReplaceDefaults = true

	ch := config.Compare(old, next)
	want := `admin.tokens: 1 removed (ops-laptop), 1 added (new), 1 changed (ci); webhooks.endpoints: 0 removed, 0 added, 1 changed (company 1 "erp"); log.level: info -> debug`
	if got := ch.Applied(); got != want {
		t.Errorf("Applied:\n got %s\nwant %s", got, want)
	}
	if want := []string{"database.url", "delivery.workers", "mapping.replace_defaults"}; !reflect.DeepEqual(ch.Restart, want) {
		t.Errorf("Restart = %v, want %v", ch.Restart, want)
	}
	if got := config.Compare(old, old); !got.Empty() || got.Applied() != "no changes" {
		t.Errorf("a config compared with itself: %+v", got)
	}
	// A file that sets every key, read twice, is the same: nothing is
	// reported as changed by a reload of an unchanged file.
	a, err := config.Load("example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if got := config.Compare(a, b); !got.Empty() {
		t.Errorf("example.yaml read twice: %+v", got)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReloadReadsTheSameSourcesAndSharesTheLevel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.yaml")
	write(t, path, "log:\n  level: warn\n")
	cfg, err := config.Load(path, []string{"RELAY_DELIVERY__WORKERS=99"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path() != path || !cfg.Reloadable() {
		t.Fatalf("Path() = %q", cfg.Path())
	}
	if config.Default().Reloadable() {
		t.Error("a config not from Load says it can be reloaded")
	}
	level := cfg.LogLevel()
	if level.Level() != slog.LevelWarn {
		t.Fatalf("level %v", level.Level())
	}
	write(t, path, "log:\n  level: debug\n")
	next, err := cfg.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if next.Delivery.Workers != 99 {
		t.Errorf("the reload dropped the environment: workers %d", next.Delivery.Workers)
	}
	if level.Level() != slog.LevelWarn {
		t.Error("Reload changed the level before it was applied")
	}
	next.ApplyLogLevel()
	if level.Level() != slog.LevelDebug || next.LogLevel() != level {
		t.Errorf("after ApplyLogLevel: %v", level.Level())
	}
	write(t, path, "log:\n  level: loud\n")
	if _, err := cfg.Reload(); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("invalid file: %v", err)
	}
}

// watch runs a FileWatcher on path for the test.
func watch(t *testing.T, path string) *config.FileWatcher {
	t.Helper()
	w := config.NewFileWatcher(path, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// Run has set up its watch once the file it reads first is known:
	// give it a moment.
	time.Sleep(100 * time.Millisecond)
	return w
}

func expectChange(t *testing.T, w *config.FileWatcher, what string) {
	t.Helper()
	select {
	case <-w.Changed():
	case <-time.After(5 * time.Second):
		t.Fatalf("no change reported after %s", what)
	}
}

func expectQuiet(t *testing.T, w *config.FileWatcher, what string) {
	t.Helper()
	select {
	case <-w.Changed():
		t.Fatalf("a change reported after %s", what)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestFileWatcher: every way of saving a file is seen, once per save,
// and the watch survives the file's removal.
func TestFileWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	write(t, path, "a: 1\n")
	w := watch(t, path)

	// In place, in several writes.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("a: ")
	f.Sync()
	f.WriteString("2\n")
	f.Close()
	expectChange(t, w, "an in-place write")
	expectQuiet(t, w, "one save")

	// A new file renamed over the old one.
	write(t, path+".tmp", "a: 3\n")
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	expectChange(t, w, "a rename")

	// Touched, or another file of the directory written: no change.
	now := time.Now()
	os.Chtimes(path, now, now)
	write(t, filepath.Join(dir, "other.yaml"), "b: 1\n")
	expectQuiet(t, w, "a touch and another file")

	// Removed: reported (the reload says the file is gone); written again:
	// still watched.
	os.Remove(path)
	expectChange(t, w, "a removal")
	write(t, path, "a: 4\n")
	expectChange(t, w, "the file's return")
}

// TestFileWatcherFollowsLinks: a Kubernetes-style config map, where the
// file is a link through a "..data" link that is swapped to a new
// directory, and a link to a file in another directory.
func TestFileWatcherFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	mount := filepath.Join(dir, "mount")
	os.Mkdir(mount, 0o700)
	os.Mkdir(filepath.Join(mount, "..v1"), 0o700)
	write(t, filepath.Join(mount, "..v1", "relay.yaml"), "a: 1\n")
	must(t, os.Symlink("..v1", filepath.Join(mount, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "relay.yaml"), filepath.Join(mount, "relay.yaml")))
	w := watch(t, filepath.Join(mount, "relay.yaml"))

	os.Mkdir(filepath.Join(mount, "..v2"), 0o700)
	write(t, filepath.Join(mount, "..v2", "relay.yaml"), "a: 2\n")
	must(t, os.Symlink("..v2", filepath.Join(mount, "..data_tmp")))
	must(t, os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")))
	os.RemoveAll(filepath.Join(mount, "..v1"))
	expectChange(t, w, "the config map's swap")

	// A link to a file elsewhere: edits of the target count.
	elsewhere := filepath.Join(dir, "etc")
	os.Mkdir(elsewhere, 0o700)
	write(t, filepath.Join(elsewhere, "relay.yaml"), "a: 1\n")
	link := filepath.Join(dir, "relay.yaml")
	must(t, os.Symlink(filepath.Join(elsewhere, "relay.yaml"), link))
	w2 := watch(t, link)
	write(t, filepath.Join(elsewhere, "relay.yaml"), "a: 2\n")
	expectChange(t, w2, "an edit of the link's target")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatchFileSeesChangesMadeWhileStarting: an edit between Load and the
// start of the watch (the relay's start-up) is reported at once.
func TestWatchFileSeesChangesMadeWhileStarting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.yaml")
	write(t, path, "log:\n  level: warn\n")
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if config.Default().WatchFile(0) != nil {
		t.Error("a watcher for a config without a file")
	}
	run := func(w *config.FileWatcher) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	unchanged := cfg.WatchFile(50 * time.Millisecond)
	run(unchanged)
	expectQuiet(t, unchanged, "no edit")

	write(t, path, "log:\n  level: debug\n")
	w := cfg.WatchFile(50 * time.Millisecond)
	run(w)
	expectChange(t, w, "an edit made before the watch started")
}
