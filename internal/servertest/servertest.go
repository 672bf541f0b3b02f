// Package servertest starts the real fleetpass server in process for
// tests: the same server.Open that `fleetpass serve` runs, on a fresh data
// directory, with the simulated fleet and fast engine timings unless told
// otherwise, served on loopback. It returns the server's URL, its admin key
// and its handles, and small helpers to call the native API.
//
// Every test of the server, the client, the CLI and the real guests starts
// its server here, so that a second database or a second replica is one
// change in one place: DatabaseURL reads the test kit's database switch.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// Key is an API key.
type Key struct{ ID, Secret string }

// Server is a running in-process server.
type Server struct {
	*server.Server
	t testing.TB
	// URL is the server's base URL (http://127.0.0.1:port).
	URL     string
	DataDir string
	// DatabaseURL is the server's PostgreSQL database; empty: SQLite in
	// DataDir.
	DatabaseURL string
	// Admin is the bootstrap admin key.
	Admin Key
	// Logs holds the server's log at debug level; Out what it prints for
	// the operator.
	Logs, Out *testutil.LogBuffer

	http     *httptest.Server
	client   *http.Client
	cancel   context.CancelFunc
	closed   bool
	requests atomic.Int64
}

// Requests is how many HTTP requests the server has received: a command
// refused before it calls the server leaves it unchanged.
func (s *Server) Requests() int64 { return s.requests.Load() }

type options struct {
	cfg     server.Config
	tenants []string
	listen  string
	noSim   bool
	sqlite  bool
}

// Option changes how Start makes the server.
type Option func(*options)

// WithEngine sets the engine's timings (default: FastEngine).
func WithEngine(c engine.Config) Option { return func(o *options) { o.cfg.Engine = c } }

// WithAPI sets the native API's configuration (rate limits).
func WithAPI(c nativeapi.Config) Option { return func(o *options) { o.cfg.API = c } }

// WithAgent sets the agent channel's configuration.
func WithAgent(c agentserver.Config) Option { return func(o *options) { o.cfg.Agent = c } }

// WithDrivers adds power and guest drivers of the test's own, by name,
// next to the built-in ones (server.Config.Power and Guest).
func WithDrivers(power map[string]driver.Power, guest map[string]driver.Guest) Option {
	return func(o *options) { o.cfg.Power, o.cfg.Guest = power, guest }
}

// WithoutSim leaves the simulated drivers out.
func WithoutSim() Option { return func(o *options) { o.noSim = true } }

// WithClock replaces the database's clock.
func WithClock(now func() time.Time) Option { return func(o *options) { o.cfg.Clock = now } }

// WithTenants makes these tenants at start.
func WithTenants(names ...string) Option {
	return func(o *options) { o.tenants = append(o.tenants, names...) }
}

// WithAdminKey makes the bootstrap admin key this one instead of a random
// one.
func WithAdminKey(k Key) Option {
	return func(o *options) { o.cfg.AdminKeyID, o.cfg.AdminKeySecret = k.ID, k.Secret }
}

// WithSQLite keeps the server on SQLite in its data directory whatever
// the test kit's database switch says (tests of SQLite itself, the source
// of `fleetpass db copy`).
func WithSQLite() Option { return func(o *options) { o.sqlite = true } }

// WithDataDir starts on an existing data directory (a restart) instead of
// a fresh one.
func WithDataDir(dir string) Option { return func(o *options) { o.cfg.DataDir = dir } }

// WithListen serves on addr (a restart on the same port, which agents and
// clients reconnect to) instead of a free port.
func WithListen(addr string) Option { return func(o *options) { o.listen = addr } }

// WithConfig changes anything else of the server's configuration.
func WithConfig(f func(*server.Config)) Option { return func(o *options) { f(&o.cfg) } }

// FastEngine keeps the waits of the simulated fleet short.
func FastEngine() engine.Config {
	c := engine.DefaultConfig()
	c.PollInterval = 10 * time.Millisecond
	c.ShutdownTimeout = 500 * time.Millisecond
	c.StopTimeout = 2 * time.Second
	c.BootTimeout = 5 * time.Second
	c.GuestTimeout = 500 * time.Millisecond
	c.RetryBase = 10 * time.Millisecond
	c.FetchPoll = 10 * time.Millisecond
	return c
}

// DatabaseURL is the database test servers use, chosen by the test kit's
// one switch (storetest.EnvDatabase): FLEETPASS_TEST_DATABASE=postgres
// gives each server a fresh PostgreSQL database, anything else SQLite in
// its data directory. A package whose tests start servers calls
// pgtest.Run from its TestMain, which stops the PostgreSQL cluster.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	return storetest.DatabaseURL(t)
}

// Start starts a server and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{cfg: server.Config{Sim: true, SyncInterval: time.Hour}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.noSim {
		o.cfg.Sim = false
	}
	if o.cfg.DataDir == "" {
		o.cfg.DataDir = t.TempDir()
	}
	if o.cfg.DatabaseURL == "" && !o.sqlite {
		o.cfg.DatabaseURL = DatabaseURL(t)
	}
	if o.cfg.Engine.PollInterval == 0 {
		o.cfg.Engine = FastEngine()
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	s := &Server{t: t, DataDir: o.cfg.DataDir, DatabaseURL: o.cfg.DatabaseURL, client: keepAliveClient(t), Logs: &testutil.LogBuffer{},
		Out: &testutil.LogBuffer{}}
	o.cfg.Listen = o.listen
	o.cfg.Log = s.Logs.Logger()
	o.cfg.Out = s.Out
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	srv, err := server.Open(ctx, o.cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s.Server = srv
	if err := srv.Start(ctx); err != nil {
		cancel()
		srv.Close()
		t.Fatal(err)
	}
	ln, err := listen(o.listen)
	if err != nil {
		cancel()
		srv.Close()
		t.Fatal(err)
	}
	handler := srv.Handler()
	s.http = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		handler.ServeHTTP(w, r)
	}))
	s.http.Listener.Close()
	s.http.Listener = ln
	// Requests see the server's life in their context, as under `serve`:
	// the agent endpoints tell a shutdown from a client that left by it.
	s.http.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	s.http.Start()
	s.URL = s.http.URL
	t.Cleanup(s.Stop)

	s.Admin = Key{o.cfg.AdminKeyID, o.cfg.AdminKeySecret}
	if s.Admin.ID == "" {
		var creds server.Credentials
		data, err := os.ReadFile(filepath.Join(s.DataDir, "admin-credentials"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &creds); err != nil {
			t.Fatal(err)
		}
		s.Admin = Key{creds.KeyID, creds.Secret}
	}
	for _, tenant := range o.tenants {
		if err := srv.Service().EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// listen listens on addr, retrying a while: on a restart the port was ours
// a moment ago, and a closing run may hold it briefly.
func listen(addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	testutil.Eventually(10*time.Second, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	return ln, err
}

// Stop ends the server abruptly, as a crash would for everything not yet
// committed: connections are cut and running item executions cancelled.
// Work in flight resumes at the next Start on the same data directory.
func (s *Server) Stop() {
	if s.closed {
		return
	}
	s.closed = true
	s.http.CloseClientConnections()
	s.http.Close()
	s.cancel()
	s.Server.Close()
}

// Reply is an HTTP answer.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrBody decodes the native API's error body.
func (r Reply) ErrBody() apiv1.ErrorBody {
	var b apiv1.ErrorBody
	_ = json.Unmarshal(r.Body, &b)
	return b
}

// ErrCode is the native API's error code, if the answer is an error.
func (r Reply) ErrCode() string { return r.ErrBody().Error.Code }

// Do sends a request to the server as k (no key if k is empty); body may
// be nil, a string or []byte (sent raw) or a value (sent as JSON).
// headers are name, value pairs.
func (s *Server) Do(k Key, method, path string, body any, headers ...string) Reply {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if k.ID != "" {
		req.SetBasicAuth(k.ID, k.Secret)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return Reply{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// MustDo is Do, failing the test unless the status is want, decoding the
// answer into out if it is not nil.
func (s *Server) MustDo(k Key, method, path string, body any, want int, out any, headers ...string) Reply {
	s.t.Helper()
	r := s.Do(k, method, path, body, headers...)
	if r.Status != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, r.Body)
		}
	}
	return r
}

// NewKey makes an API key in tenant, making the tenant if need be.
func (s *Server) NewKey(tenant string) Key {
	s.t.Helper()
	if err := s.Service().EnsureTenant(context.Background(), tenant); err != nil {
		s.t.Fatal(err)
	}
	var k apiv1.KeyCreated
	s.MustDo(s.Admin, "POST", "/v1/keys", apiv1.KeyCreate{Name: "test", Tenant: tenant}, http.StatusCreated, &k)
	return Key{k.ID, k.Secret}
}

// ConsoleUser makes a console user of tenant who has already left the
// initial password for password (as a user would at first sign-in), so a
// browser can sign in straight to the instance list.
func (s *Server) ConsoleUser(name, tenant string, admin bool, password string) {
	s.t.Helper()
	ctx := context.Background()
	svc := s.Service()
	if err := svc.EnsureTenant(ctx, tenant); err != nil {
		s.t.Fatal(err)
	}
	const initial = "Initial-pass-1234"
	sys := core.Principal{Kind: "system", ID: "test", Tenant: core.AdminTenant, Admin: true}
	if _, err := svc.CreateConsoleUser(ctx, sys, name, tenant, admin, []byte(initial)); err != nil {
		s.t.Fatal(err)
	}
	sess, err := svc.SignIn(ctx, name, []byte(initial), "setup", "")
	if err != nil {
		s.t.Fatal(err)
	}
	p, _, err := svc.SessionPrincipal(ctx, sess.Token, "setup", "")
	if err != nil {
		s.t.Fatal(err)
	}
	if err := svc.ChangeConsolePassword(ctx, p, sess.Token, []byte(initial), []byte(password)); err != nil {
		s.t.Fatal(err)
	}
	if err := svc.SignOut(ctx, sess.Token); err != nil {
		s.t.Fatal(err)
	}
}

// Machine describes a simulated machine for AddMachine.
type Machine struct {
	Name string
	// Tenant defaults to "acme".
	Tenant   string
	OS       sim.OS
	Running  bool
	Faults   sim.Faults
	Boot     time.Duration
	Shutdown time.Duration
	// Users default to the OS's admin user and "deploy".
	Users []string
}

// AddMachine makes a simulated machine and registers it as an instance
// whose recorded state is the machine's.
func (s *Server) AddMachine(m Machine) apiv1.Instance {
	s.t.Helper()
	ctx := context.Background()
	if m.Tenant == "" {
		m.Tenant = "acme"
	}
	if m.OS == "" {
		m.OS = sim.Linux
	}
	if m.Users == nil {
		m.Users = []string{m.OS.DefaultUser(), "deploy"}
	}
	svc := s.Service()
	if err := svc.EnsureTenant(ctx, m.Tenant); err != nil {
		s.t.Fatal(err)
	}
	addr := "m-" + m.Tenant + "-" + m.Name
	if err := s.Sim().Add(ctx, sim.Machine{ID: addr, OS: m.OS, Users: m.Users, Running: m.Running,
		BootTime: m.Boot, ShutdownTime: m.Shutdown, Faults: m.Faults}); err != nil {
		s.t.Fatal(err)
	}
	p := core.Principal{Kind: "key", ID: "test", Tenant: m.Tenant, Admin: true}
	in, err := svc.RegisterInstance(ctx, p, apiv1.InstanceCreate{Name: m.Name, Tenant: m.Tenant, OSType: string(m.OS),
		Power: apiv1.DriverLink{Driver: "sim", Address: addr}, Guest: apiv1.DriverLink{Driver: "sim", Address: addr}})
	if err != nil {
		s.t.Fatal(err)
	}
	state := apiv1.StateStopped
	if m.Running {
		state = apiv1.StateRunning
	}
	alive := m.Running && !m.Faults.AgentDead
	if err := svc.SetInstanceObserved(ctx, in.ID, state, &alive); err != nil {
		s.t.Fatal(err)
	}
	in.State, in.GuestAlive = state, alive
	return in
}

// Reset asks for a password reset as k and returns the accepted operation.
func (s *Server) Reset(k Key, req apiv1.PasswordReset) apiv1.Operation {
	s.t.Helper()
	var op apiv1.Operation
	s.MustDo(k, "POST", "/v1/password-resets", req, http.StatusAccepted, &op)
	return op
}

// Wait waits for an operation's end, through the API's own /wait.
func (s *Server) Wait(k Key, opID string) apiv1.Operation {
	s.t.Helper()
	var op apiv1.Operation
	ok := testutil.Eventually(2*time.Minute, func() bool {
		s.MustDo(k, "GET", "/v1/operations/"+opID+"/wait?timeout=20s", nil, http.StatusOK, &op)
		return op.Status != apiv1.OperationRunning
	})
	if !ok {
		s.t.Fatalf("operation %s did not end: %+v", opID, op)
	}
	return op
}

// Instance reads an instance as k.
func (s *Server) Instance(k Key, id string) apiv1.Instance {
	s.t.Helper()
	var in apiv1.Instance
	s.MustDo(k, "GET", "/v1/instances/"+id, nil, http.StatusOK, &in)
	return in
}

// CheckPassword reports whether user's password on the simulated machine
// behind in is pw.
func (s *Server) CheckPassword(in apiv1.Instance, user, pw string) bool {
	s.t.Helper()
	ok, err := s.Sim().CheckPassword(context.Background(), in.Power.Address, user, []byte(pw))
	if err != nil {
		s.t.Fatal(err)
	}
	return ok
}

// AssertNoSecret fails the test if secret (or its base64 form) is in the
// server's log, its output, or any file of its data directory (the
// database, its WAL, the simulated fleet).
func (s *Server) AssertNoSecret(secret string) {
	s.t.Helper()
	for name, buf := range map[string]*testutil.LogBuffer{"log": s.Logs, "output": s.Out} {
		if testutil.ContainsSecret([]byte(buf.String()), secret) {
			s.t.Errorf("the secret appears in the server's %s", name)
		}
	}
	testutil.AssertNotInDir(s.t, s.DataDir, secret)
	if s.DatabaseURL != "" {
		AssertNotInPostgres(s.t, secret)
	}
}

// AssertNotInPostgres fails the test if secret is in the test binary's
// PostgreSQL cluster: its tables and indexes (base/), its write-ahead log
// (pg_wal/) or its server log.
func AssertNotInPostgres(t testing.TB, secret string) {
	t.Helper()
	c := pgtest.Shared(t)
	if err := c.Exec(context.Background(), "postgres", "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	testutil.AssertNotInDir(t, filepath.Join(c.Data, "base"), secret)
	testutil.AssertNotInDir(t, filepath.Join(c.Data, "pg_wal"), secret)
	data, err := os.ReadFile(c.Log)
	if err != nil {
		t.Fatalf("PostgreSQL's log: %v", err)
	}
	if testutil.ContainsSecret(data, secret) {
		t.Error("the secret appears in PostgreSQL's log")
	}
}

// String names the server in test output.
func (s *Server) String() string {
	return fmt.Sprintf("fleetpass test server at %s (%s)", s.URL, s.DataDir)
}

// keepAliveClient is an HTTP client that keeps its connections to the
// server: http.DefaultClient keeps two idle a host, so a test with more
// requests in flight would open, and the server accept, a connection for
// nearly every one, which no real client does and which a benchmark would
// count as the server's latency.
func keepAliveClient(t testing.TB) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 512
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
