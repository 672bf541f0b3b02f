package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
)

// TestMain stops the throwaway PostgreSQL cluster of a run on PostgreSQL.
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// syncBuffer is a log sink tests can read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a whole server in process, on SQLite, with the sim drivers.
type env struct {
	t       testing.TB
	srv     *Server
	http    *httptest.Server
	dataDir string
	// databaseURL is the PostgreSQL database of a run on PostgreSQL
	// (FLEETPASS_TEST_DATABASE=postgres), else empty: SQLite in dataDir.
	databaseURL string
	logs        *syncBuffer
	out         *syncBuffer
	admin       key
}

type key struct{ id, secret string }

type envOpts struct {
	// databaseURL puts the server on this PostgreSQL database whatever
	// the run's database.
	databaseURL string
	// sqlite puts the server on SQLite whatever the run's database.
	sqlite    bool
	engine    engine.Config
	rateLimit float64
	burst     int
	// Security settings (security_test.go).
	qgaDirs        []string
	maxPerTenant   int
	trustedProxies []string
	syncInterval   time.Duration
	dataDir        string
}

// fastEngine keeps the waits of the sim fleet short.
func fastEngine() engine.Config {
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

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.engine.PollInterval == 0 {
		o.engine = fastEngine()
	}
	e := &env{t: t, dataDir: o.dataDir, logs: &syncBuffer{}, out: &syncBuffer{}}
	if e.dataDir == "" {
		e.dataDir = t.TempDir()
	}
	if o.syncInterval == 0 {
		o.syncInterval = time.Hour
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.databaseURL = o.databaseURL
	if e.databaseURL == "" && !o.sqlite {
		e.databaseURL = storetest.DatabaseURL(t)
	}
	srv, err := Open(ctx, Config{
		Listen: "127.0.0.1:0", DataDir: e.dataDir, DatabaseURL: e.databaseURL, Sim: true, Engine: o.engine,
		API:          nativeapi.Config{RateLimit: o.rateLimit, Burst: o.burst},
		SyncInterval: o.syncInterval, QGASocketDirs: o.qgaDirs, MaxInstancesPerTenant: o.maxPerTenant,
		TrustedProxies: o.trustedProxies,
		Log:            slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Out:            e.out,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	e.srv = srv
	e.http = httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		e.http.Close()
		cancel()
		srv.Close()
	})
	var creds Credentials
	data, err := os.ReadFile(filepath.Join(e.dataDir, "admin-credentials"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &creds); err != nil {
		t.Fatal(err)
	}
	e.admin = key{creds.KeyID, creds.Secret}
	return e
}

type machineOpts struct {
	name     string
	tenant   string
	os       sim.OS
	running  bool
	faults   sim.Faults
	boot     time.Duration
	shutdown time.Duration
	users    []string
}

// addMachine makes a sim machine and registers it as an instance.
func (e *env) addMachine(o machineOpts) apiv1.Instance {
	e.t.Helper()
	ctx := context.Background()
	if o.tenant == "" {
		o.tenant = "acme"
	}
	if o.os == "" {
		o.os = sim.Linux
	}
	if o.users == nil {
		o.users = []string{o.os.DefaultUser(), "deploy"}
	}
	svc := e.srv.Service()
	if err := svc.EnsureTenant(ctx, o.tenant); err != nil {
		e.t.Fatal(err)
	}
	addr := "m-" + o.tenant + "-" + o.name
	if err := e.srv.Sim().Add(ctx, sim.Machine{ID: addr, OS: o.os, Users: o.users, Running: o.running,
		BootTime: o.boot, ShutdownTime: o.shutdown, Faults: o.faults}); err != nil {
		e.t.Fatal(err)
	}
	p := core.Principal{Kind: "key", ID: "test", Tenant: o.tenant, Admin: true}
	in, err := svc.RegisterInstance(ctx, p, apiv1.InstanceCreate{Name: o.name, Tenant: o.tenant, OSType: string(o.os),
		Power: apiv1.DriverLink{Driver: "sim", Address: addr}, Guest: apiv1.DriverLink{Driver: "sim", Address: addr}})
	if err != nil {
		e.t.Fatal(err)
	}
	state := apiv1.StateStopped
	if o.running {
		state = apiv1.StateRunning
	}
	alive := o.running && !o.faults.AgentDead
	if err := svc.SetInstanceObserved(ctx, in.ID, state, &alive); err != nil {
		e.t.Fatal(err)
	}
	in.State, in.GuestAlive = state, alive
	return in
}

// newKey makes an API key in tenant.
func (e *env) newKey(tenant string) key {
	e.t.Helper()
	_ = e.srv.Service().EnsureTenant(context.Background(), tenant)
	var k apiv1.KeyCreated
	e.mustDo(e.admin, "POST", "/v1/keys", apiv1.KeyCreate{Name: "test", Tenant: tenant}, http.StatusCreated, &k)
	return key{k.ID, k.Secret}
}

// reply is an HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errCode() string {
	var b apiv1.ErrorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Code
}

func (r reply) errBody() apiv1.ErrorBody {
	var b apiv1.ErrorBody
	_ = json.Unmarshal(r.body, &b)
	return b
}

// do sends a request; body may be nil, a string (sent raw) or a value
// (sent as JSON).
func (e *env) do(k key, method, path string, body any, headers ...string) reply {
	e.t.Helper()
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
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if k.id != "" {
		req.SetBasicAuth(k.id, k.secret)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func (e *env) mustDo(k key, method, path string, body any, want int, out any, headers ...string) reply {
	e.t.Helper()
	r := e.do(k, method, path, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, r.body)
		}
	}
	return r
}

func (e *env) reset(k key, req apiv1.PasswordReset) apiv1.Operation {
	e.t.Helper()
	var op apiv1.Operation
	e.mustDo(k, "POST", "/v1/password-resets", req, http.StatusAccepted, &op)
	return op
}

func (e *env) wait(k key, opID string) apiv1.Operation {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var op apiv1.Operation
		e.mustDo(k, "GET", "/v1/operations/"+opID+"/wait?timeout=20s", nil, http.StatusOK, &op)
		if op.Status != apiv1.OperationRunning {
			return op
		}
	}
	e.t.Fatalf("operation %s did not end", opID)
	return apiv1.Operation{}
}

func (e *env) instance(k key, id string) apiv1.Instance {
	e.t.Helper()
	var in apiv1.Instance
	e.mustDo(k, "GET", "/v1/instances/"+id, nil, http.StatusOK, &in)
	return in
}

func (e *env) checkPassword(in apiv1.Instance, user, pw string) bool {
	e.t.Helper()
	ok, err := e.srv.Sim().CheckPassword(context.Background(), in.Power.Address, user, []byte(pw))
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

func itemOf(op apiv1.Operation, id string) apiv1.Item {
	for _, it := range op.Items {
		if it.InstanceID == id {
			return it
		}
	}
	return apiv1.Item{}
}

func ids(ins ...apiv1.Instance) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.ID
	}
	return out
}

// assertNoSecret fails if secret appears in the logs or any file of the
// data directory (the database, its WAL, the simulated fleet), or, on
// PostgreSQL, in the cluster's files and log.
func (e *env) assertNoSecret(secret string) {
	e.t.Helper()
	if strings.Contains(e.logs.String(), secret) || strings.Contains(e.out.String(), secret) {
		e.t.Errorf("the password appears in the server's log")
	}
	filepath.WalkDir(e.dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(secret)) {
			e.t.Errorf("the password appears in %s", filepath.Base(path))
		}
		return nil
	})
	if e.databaseURL != "" {
		assertNotInPostgres(e.t, secret)
	}
}
