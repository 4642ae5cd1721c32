package config

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// FileWatcher reports changes of a config file's contents.
//
// It uses fsnotify directly rather than koanf's file.Provider.Watch, which
// stops watching for good once the file is removed (as `rm` and some
// editors' saves do before the new file appears), starts a goroutine that
// its caller cannot wait for, and reports every write of a save separately.
//
// Editors and tools rarely write a file in place: most write a new file and
// rename it over the old one, and Kubernetes swaps a symbolic link to a new
// directory. So the watcher watches the directory holding the file (and the
// directory of the file a symbolic link points to), waits until the events
// of one save have settled, then reads the file and reports it only if its
// contents (or whether it can be read) differ from what it last saw.
type FileWatcher struct {
	path     string
	debounce time.Duration
	changed  chan struct{}
	// since is the state (see fileState) the caller last read; "" means
	// the state when Run starts.
	since string
	// linked is set while path resolves through a symbolic link (see
	// relevant). It is found when the watch is set up and again each time
	// the file is read, so that an event costs no system call: a busy
	// directory (a log written beside the config) sends one per write.
	linked bool
}

// DefaultDebounce is how long a FileWatcher waits after the last event of a
// save before it reads the file.
const DefaultDebounce = 200 * time.Millisecond

// NewFileWatcher returns a watcher of the file at path; debounce <= 0 means
// DefaultDebounce. Run watches.
func NewFileWatcher(path string, debounce time.Duration) *FileWatcher {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = filepath.Clean(path)
	}
	return &FileWatcher{path: abs, debounce: debounce, changed: make(chan struct{}, 1)}
}

// WatchFile returns a watcher of the file c was loaded from (see
// NewFileWatcher), or nil if there is none. A change made since c was
// loaded (while the relay was starting) is reported as soon as Run starts.
func (c *Config) WatchFile(debounce time.Duration) *FileWatcher {
	if c.Path() == "" {
		return nil
	}
	w := NewFileWatcher(c.Path(), debounce)
	w.since = c.source.state
	return w
}

// Changed receives a value after the file's contents change. Changes made
// while nobody receives are merged into one.
func (w *FileWatcher) Changed() <-chan struct{} { return w.changed }

// Run watches until ctx is done. It returns an error only when the watch
// cannot be set up.
func (w *FileWatcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.path, err)
	}
	defer fw.Close()
	dirs := map[string]bool{}
	watch := func() error {
		for _, d := range w.dirs() {
			if dirs[d] {
				continue
			}
			if err := fw.Add(d); err != nil {
				return fmt.Errorf("watch %s: %w", d, err)
			}
			dirs[d] = true
		}
		return nil
	}
	if err := watch(); err != nil {
		return err
	}
	w.linked = w.isLinked()
	last := w.since
	if last == "" {
		last = fileState(w.path)
	}

	// Stopped until an event; each relevant event restarts it, so the file
	// is read once its save has settled. It first looks at once, for a
	// change made before the watch was set up.
	settle := time.NewTimer(0)
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if w.relevant(ev.Name) {
				settle.Reset(w.debounce)
			}
		case _, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			// An overflowed event queue may have dropped the file's events:
			// look at the file.
			settle.Reset(w.debounce)
		case <-settle.C:
			// The file may now be a link into another directory.
			_ = watch()
			w.linked = w.isLinked()
			if s := fileState(w.path); s != last {
				last = s
				select {
				case w.changed <- struct{}{}:
				default:
				}
			}
		}
	}
}

// dirs returns the directories whose entries decide what path reads: its
// own, and that of the file a symbolic link at path points to.
func (w *FileWatcher) dirs() []string {
	out := []string{filepath.Dir(w.path)}
	if real, err := filepath.EvalSymlinks(w.path); err == nil && filepath.Dir(real) != out[0] {
		out = append(out, filepath.Dir(real))
	}
	return out
}

// relevant reports whether an event on name may change what path reads:
// one on path itself, and, when path resolves through a symbolic link, any
// event, since any entry of its directories may be part of the link's
// chain (Kubernetes' "..data"); such directories hold nothing else. A file
// that becomes a link does so by an event on path, after which the file is
// read and linked found again.
func (w *FileWatcher) relevant(name string) bool {
	return w.linked || filepath.Clean(name) == w.path
}

// isLinked reports whether path resolves through a symbolic link. A
// missing file is not: only its own name can bring it back.
func (w *FileWatcher) isLinked() bool {
	real, err := filepath.EvalSymlinks(w.path)
	return err == nil && real != w.path
}

// fileState identifies what the file at path holds: a hash of its
// contents, or why it cannot be read.
func fileState(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return string(sum[:])
}
