// Package pgconnect tells a failed connection to PostgreSQL in one line,
// with what to check, for every place that connects: the change feed,
// the store, relay check.
package pgconnect

import (
	"errors"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// failure is a failed connection to PostgreSQL told in one line:
// the last attempt's cause and what to do about it. pgx lists every
// address and mode it tried; with sslmode=prefer (the default) a server
// without TLS answers the first attempt "server refused TLS connection",
// which says nothing of why the plain one failed after it.
type failure struct {
	msg string
	err error
}

func (e *failure) Error() string { return e.msg }
func (e *failure) Unwrap() error { return e.err }

// Explain returns err, from connecting to PostgreSQL, as one line
// with the last attempt's cause and a hint, when it holds a connection
// error pgx reports (wrapped or not: the wrappers' words stay); other
// errors as they are.
func Explain(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	// pgx: "failed to connect to `user=... database=...`:" and then one
	// line per attempt, each naming its address twice over.
	head, tried, ok := strings.Cut(ce.Error(), ":\n")
	if !ok {
		if head, tried, ok = strings.Cut(ce.Error(), ": "); !ok {
			return err
		}
	}
	last := ""
	for _, line := range strings.Split(tried, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			last = line
		}
	}
	if addr, rest, ok := strings.Cut(last, ": "); ok && strings.HasPrefix(rest, addr+": ") {
		last = rest
	}
	// The context err's wrappers gave it stays around the explanation.
	msg := strings.Replace(err.Error(), ce.Error(), head+": "+last+hint(err, last), 1)
	return &failure{msg: msg, err: err}
}

// hint says what to check for the cause of a failed connection.
func hint(err error, cause string) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01":
			return " (check the password in the URL, or PGPASSWORD or ~/.pgpass)"
		case "28000":
			return " (no line of the server's pg_hba.conf lets this user in from this host, or the role does not exist)"
		case "3D000":
			return " (check the database's name in the URL)"
		case "53300":
			return " (the server has no connection free: max_connections, or connections other clients hold)"
		}
	}
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return " (the host name does not resolve)"
	case strings.Contains(cause, "connection refused"):
		return " (is PostgreSQL running, and listening on that address and port? listen_addresses, port)"
	case strings.Contains(cause, "timeout") || strings.Contains(cause, "deadline exceeded"):
		return " (no answer in time: a wrong host, or a firewall between)"
	}
	return ""
}
