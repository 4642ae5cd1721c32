package pgconnect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// connect returns pgx's error for url, and Explain's of it.
func connect(t *testing.T, url string) (raw, explained error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("connected to %s", url)
	}
	return err, Explain(err)
}

func TestExplain(t *testing.T) {
	srv := pgtest.Shared(t)

	// A port nothing listens on: taken, then let go.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()

	for _, tc := range []struct {
		name, url string
		want      []string
		not       string
	}{
		{
			name: "refused",
			url:  "postgres://postgres@localhost:" + strconv.Itoa(closed) + "/x?connect_timeout=5",
			want: []string{"connection refused", "(is PostgreSQL running, and listening on that address and port?"},
		},
		{
			// sslmode=prefer: pgx tries TLS first, which the server refuses;
			// the line names the plain attempt's cause, not that.
			name: "no such database",
			url:  strings.Replace(srv.URL("no_such_db"), "sslmode=disable", "sslmode=prefer", 1),
			want: []string{`database "no_such_db" does not exist`, "(check the database's name in the URL)"},
			not:  "TLS",
		},
		{
			name: "no such host",
			url:  "postgres://postgres@no-such-host.invalid:5432/x?connect_timeout=5",
			want: []string{"(the host name does not resolve)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, got := connect(t, tc.url)
			line := got.Error()
			if strings.Contains(line, "\n") {
				t.Errorf("more than one line: %q", line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("%q lacks %q", line, w)
				}
			}
			if wrapped := Explain(fmt.Errorf("claim due deliveries: %w", raw)).Error(); wrapped != "claim due deliveries: "+line {
				t.Errorf("wrapped, explained as %q", wrapped)
			}
			if tc.not != "" && strings.Contains(line, tc.not) {
				t.Errorf("%q names %q", line, tc.not)
			}
			var ce *pgconn.ConnectError
			if !errors.As(got, &ce) || !errors.Is(got, raw) {
				t.Errorf("the explained error does not wrap pgx's: %v", got)
			}
		})
	}
}

func TestExplainLeavesOtherErrors(t *testing.T) {
	err := errors.New("replication stream: unexpected EOF")
	if got := Explain(err); got != err {
		t.Errorf("Explain changed an error that is not a connection's: %v", got)
	}
	if Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
}
