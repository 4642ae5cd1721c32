package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// readmeBlock is a shell block of the README and how it is marked.
type readmeBlock struct {
	line int    // of the opening fence
	mark string // "run", or why it is not run
	text string
}

// readmeShellBlocks returns every ```sh block of a Markdown file. Each must
// be preceded by <!-- readme-test --> (run against relay demo) or by
// <!-- readme-test: skip REASON -->, so that a new block cannot escape the
// decision.
func readmeShellBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var out []readmeBlock
	mark := regexp.MustCompile(`^<!-- readme-test(?:: skip (.+))? -->$`)
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		b := readmeBlock{line: i + 1}
		prev := ""
		for j := i - 1; j >= 0; j-- {
			if strings.TrimSpace(lines[j]) != "" {
				prev = strings.TrimSpace(lines[j])
				break
			}
		}
		switch m := mark.FindStringSubmatch(prev); {
		case m == nil:
			t.Errorf("%s:%d: a shell block without <!-- readme-test --> or <!-- readme-test: skip REASON --> before it", path, b.line)
		case m[1] == "":
			b.mark = "run"
		default:
			b.mark = m[1]
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], "   ")) // blocks inside list items are indented
		}
		b.text = strings.Join(body, "\n")
		out = append(out, b)
	}
	return out
}

// TestReadmeRunsAsWritten starts relay demo as the README's first command
// does, takes the admin API's address and token from the export line it
// prints, and runs every README shell block marked to run, as written,
// with the built binary as relay on the PATH: each must exit 0.
func TestReadmeRunsAsWritten(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(t, filepath.Join(root, "README.md"))
	var runnable []readmeBlock
	for _, b := range blocks {
		if b.mark == "run" {
			runnable = append(runnable, b)
		}
	}
	if len(runnable) == 0 {
		t.Fatal("no README block is marked to run")
	}

	// The demo, as the README starts it, until the test ends.
	var mu sync.Mutex
	var demoOut bytes.Buffer
	demo := exec.Command(binary, "demo")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	demo.Stdout, demo.Stderr = pw, pw
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exported := make(chan []string, 1)
	streaming := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			demoOut.WriteString(line + "\n")
			mu.Unlock()
			if rest, ok := strings.CutPrefix(line, "  export "); ok {
				exported <- strings.Fields(rest)
			}
			// The first event the receiver accepted: the relay streams and
			// its admin API is up.
			if strings.HasPrefix(line, "✓ ") {
				once.Do(func() { close(streaming) })
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- demo.Wait() }()
	t.Cleanup(func() {
		// Ctrl-C, as the README says: the demo removes its database.
		_ = demo.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = demo.Process.Kill()
			<-done
			t.Error("relay demo did not stop on SIGINT")
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("relay demo output:\n%s", demoOut.String())
			mu.Unlock()
		}
	})
	var env []string
	select {
	case env = <-exported:
	case err := <-done:
		done <- err
		t.Fatalf("relay demo ended before printing its export line: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("relay demo printed no export line")
	}
	select {
	case <-streaming:
	case <-time.After(2 * time.Minute):
		t.Fatal("no event arrived at the demo's receiver")
	}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "RELAY_ADMIN_URL=http://127.0.0.1:") && !strings.HasPrefix(kv, "RELAY_ADMIN_TOKEN=rat_") {
			t.Fatalf("unexpected export from the demo: %q", kv)
		}
	}
	env = append(env, "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+t.TempDir())

	for _, b := range runnable {
		cmd := exec.Command("sh", "-e", "-x", "-c", b.text)
		cmd.Dir = root
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README.md:%d: %v\n%s", b.line, err, out)
		} else {
			t.Logf("README.md:%d ran:\n%s", b.line, out)
		}
	}
}
