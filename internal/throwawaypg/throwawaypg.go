// Package throwawaypg starts throwaway PostgreSQL servers from the local
// PostgreSQL install, configured for logical replication. The demo and the
// bench command start one at run time, and the tests reach it through
// internal/pgtest; nothing in the relay's production path uses it. It must
// not import "testing": the demo links it into the relay binary.
//
// A server lives in a temporary folder, listens on a free loopback port and
// on a Unix socket in that folder, trusts every local connection, and is
// removed by Stop. When the process runs as root, PostgreSQL (which refuses
// to run as root) is run as the "postgres" user through runuser.
package throwawaypg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options tune a throwaway server.
type Options struct {
	// Durable keeps fsync and synchronous commit on, as in production. Tests
	// leave it off for speed; benchmarks turn it on.
	Durable bool
	// Settings are extra postgresql.conf lines ("name = value").
	Settings []string
	// Log receives the server's log; nil discards it into the data folder.
	LogFile string
}

// Server is a running throwaway PostgreSQL.
type Server struct {
	dir     string
	dataDir string
	bin     string
	port    int
	runAs   string
	logFile string

	mu      sync.Mutex
	stopped bool
	dbSeq   int
}

// Available reports whether a local PostgreSQL install was found, and if not, why.
func Available() error {
	_, err := binDir()
	return err
}

// binDir finds the folder holding initdb, pg_ctl and postgres.
func binDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(matches) == 0 {
		return "", errors.New("no PostgreSQL install found: pg_ctl is not on PATH nor in /usr/lib/postgresql/*/bin (install the postgresql package)")
	}
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	return filepath.Dir(matches[0]), nil
}

func versionOf(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// Start initialises and starts a new server.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "relay-pg-")
	if err != nil {
		return nil, fmt.Errorf("create server folder: %w", err)
	}
	s := &Server{dir: dir, dataDir: filepath.Join(dir, "data"), bin: bin, logFile: opts.LogFile}
	if s.logFile == "" {
		s.logFile = filepath.Join(dir, "server.log")
	}
	if os.Geteuid() == 0 {
		s.runAs = "postgres"
		if err := chownTo(dir, s.runAs); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := s.run(ctx, "initdb", "-D", s.dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.port = port
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", port),
		fmt.Sprintf("unix_socket_directories = '%s'", dir),
		"wal_level = logical",
		"max_replication_slots = 64",
		"max_wal_senders = 64",
		"max_connections = 300",
		"shared_buffers = 128MB",
		"wal_sender_timeout = 60s",
	}
	if !opts.Durable {
		conf = append(conf, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	conf = append(conf, opts.Settings...)
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}
	if err := s.start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	if err := s.run(ctx, "pg_ctl", "-D", s.dataDir, "-l", s.logFile, "-w", "-t", "60", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w (server log: %s)", err, s.tailLog())
	}
	return nil
}

// Port is the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// PID returns the postmaster's process id, or 0 when it is not running.
func (s *Server) PID() int {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// URL returns a connection string for the named database as the superuser.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// SocketURL returns a connection string for the named database as the
// superuser over the server's Unix socket, as a client on the same host
// would reach it.
func (s *Server) SocketURL(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", db, url.QueryEscape(s.dir), s.port)
}

// Exec runs SQL in the named database.
func (s *Server) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec in %s: %w", db, err)
	}
	return nil
}

// CreateDatabase creates a new, uniquely named database, runs the given SQL
// scripts in it, and returns its name.
func (s *Server) CreateDatabase(ctx context.Context, scripts ...string) (string, error) {
	s.mu.Lock()
	s.dbSeq++
	name := fmt.Sprintf("db%d", s.dbSeq)
	s.mu.Unlock()
	if err := s.Exec(ctx, "postgres", "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	for _, sql := range scripts {
		if err := s.Exec(ctx, name, sql); err != nil {
			return "", err
		}
	}
	return name, nil
}

// DropDatabase drops a database and any replication slot in it. A slot's
// walsender takes a moment to exit once terminated, and a client still
// running may connect again meanwhile, so it terminates and drops until
// no slot is left (for up to 10 s): a slot left behind would stand in the
// way of every later database's slot of the same name.
func (s *Server) DropDatabase(ctx context.Context, db string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, db); err != nil {
			return fmt.Errorf("terminate the slots' walsenders in %s: %w", db, err)
		}
		rows, err := conn.Query(ctx, `SELECT slot_name FROM pg_replication_slots WHERE database = $1 AND NOT active`, db)
		if err != nil {
			return fmt.Errorf("list the replication slots in %s: %w", db, err)
		}
		idle, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list the replication slots in %s: %w", db, err)
		}
		var dropErr error
		for _, slot := range idle {
			// Fails if a walsender took it again meanwhile: the next round
			// terminates that one.
			if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
				dropErr = err
			}
		}
		var left int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db).Scan(&left); err != nil {
			return fmt.Errorf("count the replication slots in %s: %w", db, err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop the replication slots in %s: %d left (last error: %v)", db, left, dropErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

// Restart stops the server in the given pg_ctl mode ("smart", "fast" or
// "immediate") and starts it again on the same port.
func (s *Server) Restart(ctx context.Context, mode string) error {
	if err := s.StopServer(ctx, mode); err != nil {
		return err
	}
	return s.start(ctx)
}

// StopServer stops the server process but keeps its data, so it can be
// started again with StartServer.
func (s *Server) StopServer(ctx context.Context, mode string) error {
	if err := s.run(ctx, "pg_ctl", "-D", s.dataDir, "-m", mode, "-w", "-t", "60", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w", err)
	}
	return nil
}

// StartServer starts a server stopped with StopServer.
func (s *Server) StartServer(ctx context.Context) error { return s.start(ctx) }

// Stop stops the server and removes its folder. It is safe to call twice.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := s.run(ctx, "pg_ctl", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "60", "stop")
	if rmErr := os.RemoveAll(s.dir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// run runs one of the install's programs, as the postgres user when root.
func (s *Server) run(ctx context.Context, prog string, args ...string) error {
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if s.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl start leaves the postmaster running: it must not hold our pipes.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", prog, err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (s *Server) tailLog() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func chownTo(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("running as root needs the %q user to run PostgreSQL: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Program is the path of one of the install's programs (pg_recvlogical,
// pgbench, ...), beside the server's own.
func (s *Server) Program(name string) string { return filepath.Join(s.bin, name) }
