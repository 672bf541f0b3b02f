package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// TestMain stops the throwaway PostgreSQL cluster of a run on PostgreSQL
// (servertest.DatabaseURL).
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// env is a whole server in process (servertest), on the test kit's
// database, with the sim drivers; its methods are the native API calls the
// tests here make.
type env struct {
	t   testing.TB
	s   *servertest.Server
	srv *server.Server
	url string
	// http.URL is url, as tests written before servertest spell it.
	http    struct{ URL string }
	dataDir string
	// databaseURL is the server's PostgreSQL database, or empty (SQLite).
	databaseURL string
	logs        *testutil.LogBuffer
	out         *testutil.LogBuffer
	admin       key
}

type key struct{ id, secret string }

func (k key) kit() servertest.Key { return servertest.Key{ID: k.id, Secret: k.secret} }

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

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	opts := []servertest.Option{servertest.WithAPI(nativeapi.Config{RateLimit: o.rateLimit, Burst: o.burst})}
	if o.engine.PollInterval != 0 {
		opts = append(opts, servertest.WithEngine(o.engine))
	}
	if o.dataDir != "" {
		opts = append(opts, servertest.WithDataDir(o.dataDir))
	}
	if o.sqlite {
		opts = append(opts, servertest.WithSQLite())
	}
	opts = append(opts, servertest.WithConfig(func(c *server.Config) {
		if o.databaseURL != "" {
			c.DatabaseURL = o.databaseURL
		}
		if o.syncInterval != 0 {
			c.SyncInterval = o.syncInterval
		}
		c.QGASocketDirs, c.MaxInstancesPerTenant, c.TrustedProxies = o.qgaDirs, o.maxPerTenant, o.trustedProxies
	}))
	s := servertest.Start(t, opts...)
	e := &env{t: t, s: s, srv: s.Server, url: s.URL, dataDir: s.DataDir, databaseURL: s.DatabaseURL, logs: s.Logs,
		out: s.Out, admin: key{s.Admin.ID, s.Admin.Secret}}
	e.http.URL = s.URL
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
	return e.s.AddMachine(servertest.Machine{Name: o.name, Tenant: o.tenant, OS: o.os, Running: o.running,
		Faults: o.faults, Boot: o.boot, Shutdown: o.shutdown, Users: o.users})
}

// newKey makes an API key in tenant.
func (e *env) newKey(tenant string) key {
	e.t.Helper()
	k := e.s.NewKey(tenant)
	return key{k.ID, k.Secret}
}

// reply is an HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errCode() string { return r.errBody().Error.Code }

func (r reply) errBody() apiv1.ErrorBody {
	var b apiv1.ErrorBody
	_ = json.Unmarshal(r.body, &b)
	return b
}

// do sends a request; body may be nil, a string (sent raw) or a value
// (sent as JSON).
func (e *env) do(k key, method, path string, body any, headers ...string) reply {
	e.t.Helper()
	r := e.s.Do(k.kit(), method, path, body, headers...)
	return reply{status: r.Status, header: r.Header, body: r.Body}
}

func (e *env) mustDo(k key, method, path string, body any, want int, out any, headers ...string) reply {
	e.t.Helper()
	r := e.s.MustDo(k.kit(), method, path, body, want, out, headers...)
	return reply{status: r.Status, header: r.Header, body: r.Body}
}

func (e *env) reset(k key, req apiv1.PasswordReset) apiv1.Operation {
	e.t.Helper()
	return e.s.Reset(k.kit(), req)
}

func (e *env) wait(k key, opID string) apiv1.Operation {
	e.t.Helper()
	return e.s.Wait(k.kit(), opID)
}

func (e *env) instance(k key, id string) apiv1.Instance {
	e.t.Helper()
	return e.s.Instance(k.kit(), id)
}

func (e *env) checkPassword(in apiv1.Instance, user, pw string) bool {
	e.t.Helper()
	return e.s.CheckPassword(in, user, pw)
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
	e.s.AssertNoSecret(secret)
}

// holdingShutdowns is the fast engine with graceful shutdowns that may take
// minutes: with sim.Faults{HangShutdown: true}, an instance stays busy
// until the test calls releaseShutdown, however slow the machine.
func holdingShutdowns() engine.Config {
	c := servertest.FastEngine()
	c.ShutdownTimeout = 5 * time.Minute
	return c
}

// releaseShutdown lets the hung graceful shutdown of in finish.
func (e *env) releaseShutdown(in apiv1.Instance) {
	e.t.Helper()
	if err := e.srv.Sim().SetFaults(context.Background(), in.Power.Address, sim.Faults{}); err != nil {
		e.t.Fatal(err)
	}
}
