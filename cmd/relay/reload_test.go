package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
)

// TestReloadWhileRunning: the running binary applies an edit of its config
// file (admin tokens, log level) and reloads on SIGHUP instead of dying.
func TestReloadWhileRunning(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, srv := newCounter(t)
	addr := freeAddr(t)
	const tokenA, tokenC = "binary-reload-token-a-0123456789", "binary-reload-token-c-0123456789"
	settings := func(level, name, token string) string {
		return fmt.Sprintf("log:\n  level: %s\nadmin:\n  listen: %q\n  tokens:\n    - {name: %s, company_id: 1, token_sha256: %s}\n",
			level, addr, name, admin.TokenHash(token))
	}
	path := writeConfig(t, url, srv.URL, settings("warn", "ops-laptop", tokenA))
	p := startRelay(t, "run", "--config", path)
	waitStreaming(t, pool)
	status := func(token string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/webhooks", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor(t, "the admin API", 10*time.Second, func() bool { return status(tokenA) == http.StatusOK })
	if strings.Contains(p.output(), "admin request") {
		t.Fatal("an info line logged at log.level warn")
	}

	// Saved as editors do: a new file renamed over the old one.
	if err := os.Rename(writeConfig(t, url, srv.URL, settings("info", "ci", tokenC)), path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "token A refused, token C accepted", 10*time.Second, func() bool {
		return status(tokenA) == http.StatusUnauthorized && status(tokenC) == http.StatusOK
	})
	out := p.output()
	if !strings.Contains(out, "config reloaded: admin.tokens: 1 removed (ops-laptop), 1 added (ci); log.level: warn -> info") ||
		!strings.Contains(out, "admin request") {
		t.Fatalf("the reload or the new log level is not in the log:\n%s", out)
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGHUP reload", 10*time.Second, func() bool {
		return strings.Contains(p.output(), `msg="config reloaded: no changes" component=config trigger=SIGHUP`)
	})
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("the relay exited on SIGHUP: %v", err)
	default:
	}
	if s := status(tokenC); s != http.StatusOK {
		t.Fatalf("token C after SIGHUP: %d", s)
	}
}
