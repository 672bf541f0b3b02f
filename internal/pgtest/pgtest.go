// Package pgtest runs a throwaway PostgreSQL cluster for tests: one per
// test binary, started on first use and stopped when the binary's tests
// end, with a fresh database per test cloned from a prepared template.
//
// It uses the Debian postgresql package's binaries (/usr/lib/postgresql/N/bin,
// or $FLEETPASS_PG_BIN). PostgreSQL refuses to run as root, so under root
// the cluster runs as the postgres user. The server listens on a unix
// socket in a private directory only, with fsync on as in production. A
// test binary that dies takes its cluster with it (the postmaster gets
// SIGKILL when its parent goes away), so no server outlives a test run.
//
// Without PostgreSQL, tests that need it skip, except in CI (CI=true),
// where they fail: CI must never pass by skipping them.
//
// A package that uses it calls Run from its TestMain.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for Cluster.DB
)

// PasswordUser is a role that must sign in with a password (scram-sha-256)
// even on the cluster's socket, where every other role is trusted: tests
// of wrong credentials use it. Its password is PasswordUserPassword.
const (
	PasswordUser         = "fp_password"
	PasswordUserPassword = "pgtest-correct-horse"
)

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	// Dir holds everything: Data (the data directory), Socket (the unix
	// socket directory) and the server's Log.
	Dir, Data, Socket, Log string
	bin                    string
	cred                   *syscall.Credential

	mu        sync.Mutex
	proc      *exec.Cmd
	exited    chan struct{}
	templates map[string]*template
}

type template struct {
	once sync.Once
	err  error
}

// process-wide: one cluster per test binary, made by the first test that
// asks and stopped by Run.
var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Run runs the tests of m and then stops the cluster if one was started:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
func Run(m *testing.M) int {
	code := m.Run()
	if shared.c != nil {
		shared.c.stop()
		os.RemoveAll(shared.c.Dir)
	}
	return code
}

// Shared returns the test binary's cluster, starting it on first use. It
// skips t when PostgreSQL is not installed (fails in CI), and under -short.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("PostgreSQL tests skipped under -short")
	}
	bin, err := binDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required in CI: %v (scripts/install-test-deps.sh installs it)", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	shared.once.Do(func() { shared.c, shared.err = start(bin) })
	if shared.err != nil {
		t.Fatalf("start PostgreSQL: %v", shared.err)
	}
	return shared.c
}

// binDir finds the newest PostgreSQL (15 or later) server binaries.
func binDir() (string, error) {
	if d := os.Getenv("FLEETPASS_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if version(d) >= 15 {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d, nil
			}
		}
	}
	return "", errors.New("no /usr/lib/postgresql/N/bin/postgres with N >= 15 (Debian package postgresql)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func start(bin string) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "fleetpass-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Data: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "sock"),
		Log: filepath.Join(dir, "postgres.log"), bin: bin, templates: make(map[string]*template)}
	if err := c.init(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Exec(ctx, "postgres", "CREATE ROLE "+PasswordUser+" LOGIN CREATEDB PASSWORD '"+PasswordUserPassword+"'"); err != nil {
		c.stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init() error {
	if err := os.Mkdir(c.Socket, 0o700); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, p := range []string{c.Dir, c.Socket} {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
		}
	}
	cmd := c.command("initdb", "-D", c.Data, "-U", "fleetpass", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// Everyone is trusted on the private socket but the password role.
	hba := "local all " + PasswordUser + " scram-sha-256\nlocal all all trust\n"
	if err := c.writeOwned(filepath.Join(c.Data, "pg_hba.conf"), hba); err != nil {
		return err
	}
	conf := strings.Join([]string{
		"listen_addresses = ''",
		"unix_socket_directories = '" + c.Socket + "'",
		"max_connections = 400",
		"fsync = on",
		"logging_collector = off",
		"log_min_messages = warning",
		"shared_buffers = 64MB",
	}, "\n") + "\n"
	f, err := os.OpenFile(filepath.Join(c.Data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(conf)
	return err
}

func (c *Cluster) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

// command runs one of PostgreSQL's programs as the cluster's user.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		// Pdeathsig fires when the thread that started the child ends, so
		// that thread stays for the child's lifetime.
		runtime.LockOSThread()
		cmd := c.command("postgres", "-D", c.Data)
		cmd.Stdout, cmd.Stderr = logf, logf
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		c.proc = cmd
		started <- nil
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	c.exited = exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(c.Log)
			return fmt.Errorf("postgres exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within a minute: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server with a fast shutdown (pg_ctl stop -m fast: open
// sessions are ended, committed work is kept) and waits for it to exit.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(syscall.SIGINT)
}

// Restart is pg_ctl restart -m fast.
func (c *Cluster) Restart() error {
	c.Stop()
	return c.Start()
}

func (c *Cluster) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(syscall.SIGINT)
}

func (c *Cluster) stopLocked(sig syscall.Signal) {
	if c.proc == nil {
		return
	}
	_ = c.proc.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		_ = c.proc.Process.Kill()
		<-c.exited
	}
	c.proc = nil
}

// URL is a connection URL for database db as the fleetpass superuser.
func (c *Cluster) URL(db string) string {
	return "postgres://fleetpass@/" + db + "?host=" + c.Socket + "&sslmode=disable"
}

// DBURL opens the database at url (database/sql, driver pgx); closed
// with t.
func (c *Cluster) DBURL(t testing.TB, url string) *sql.DB {
	t.Helper()
	d, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// Exec runs SQL statements on database db of the cluster.
func (c *Cluster) Exec(ctx context.Context, db, query string, args ...any) error {
	return c.ExecURL(ctx, c.URL(db), query, args...)
}

// ExecURL runs SQL statements on the database at url.
func (c *Cluster) ExecURL(ctx context.Context, url, query string, args ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, query, args...)
	return err
}

// Database creates an empty database for t, dropped when t ends, and
// returns its URL.
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	return c.clone(t, "template0")
}

// FromTemplate creates a database for t as a copy of the template name,
// which prepare fills (migrates) once per test binary, and returns its
// URL. Cloning a migrated template is far cheaper than migrating.
func (c *Cluster) FromTemplate(t testing.TB, name string, prepare func(ctx context.Context, url string) error) string {
	t.Helper()
	c.mu.Lock()
	tp, ok := c.templates[name]
	if !ok {
		tp = &template{}
		c.templates[name] = tp
	}
	c.mu.Unlock()
	tp.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if tp.err = c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); tp.err != nil {
			return
		}
		if tp.err = prepare(ctx, c.URL(name)); tp.err != nil {
			return
		}
		tp.err = c.Exec(ctx, "postgres", "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH is_template true ALLOW_CONNECTIONS false")
	})
	if tp.err != nil {
		t.Fatalf("template database %s: %v", name, tp.err)
	}
	return c.clone(t, name)
}

func (c *Cluster) clone(t testing.TB, from string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+name+" TEMPLATE "+pgx.Identifier{from}.Sanitize()); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c.running() {
			_ = c.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		}
	})
	return c.URL(name)
}

func (c *Cluster) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc != nil
}

// CPU is the processor time the cluster's processes (the postmaster and
// the backends alive now) have used, user and system: with the calling
// process's own, the cost of work that crosses into the database.
func (c *Cluster) CPU() time.Duration {
	c.mu.Lock()
	pid := 0
	if c.proc != nil {
		pid = c.proc.Process.Pid
	}
	c.mu.Unlock()
	if pid == 0 {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state ppid ... utime(12th) stime(13th).
		rest := string(data)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}
