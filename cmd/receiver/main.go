// Command receiver runs the sample webhook receiver (package receiver): it
// verifies each request's X-SMTM-Signature, prints the event with its
// delivery id and the trace it belongs to, and answers 204. It is the
// receiver of the docker-compose setup, and a starting point for a real one.
//
//	receiver --listen :8080 --secret /kahatex=SECRET --secret /nordwerk=SECRET [--fail-every 7]
//
// Secrets may also come from RECEIVER_SECRETS ("/path=secret,/path=secret").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/smartmaintenance/relay/receiver"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(2)
	}
}

// secrets maps a URL path to its webhook's signing secret.
type secrets map[string]string

func (s secrets) String() string { return fmt.Sprintf("%d secret(s)", len(s)) }

func (s secrets) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		path, secret, ok := strings.Cut(item, "=")
		if !ok || !strings.HasPrefix(path, "/") || secret == "" {
			return fmt.Errorf("%q: want /path=secret", item)
		}
		s[path] = secret
	}
	return nil
}

func run(args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	keys := secrets{}
	fs.Var(keys, "secret", "/path=secret: the signing secret of the webhook posting to /path (repeatable)")
	failEvery := fs.Int("fail-every", 0, "answer 503 to every n-th first attempt, to show retries (0: never)")
	if err := keys.Set(getenv("RECEIVER_SECRETS")); err != nil {
		return fmt.Errorf("RECEIVER_SECRETS: %w", err)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("no secrets: pass --secret /path=secret or set RECEIVER_SECRETS")
	}
	srv := &http.Server{Addr: *listen, Handler: receiver.New(keys, *failEvery, out), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(out, "receiver listening on %s for %s\n", *listen, strings.Join(paths(keys), ", "))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func paths(s secrets) []string {
	var out []string
	for p := range s {
		out = append(out, p)
	}
	return out
}
