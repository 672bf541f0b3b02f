package realbmc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/agenttest"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/cli"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/ipmitest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

const (
	// user is the login the tests reset on the stand-in servers.
	user = "alice"
)

// env is a whole fleetpass server (servertest: server.Open as `fleetpass
// serve` runs it) on SQLite in its data directory, serving on a fixed
// loopback address so that the agents find it again after a restart.
type env struct {
	t        testing.TB
	dataDir  string
	addr     string
	url      string
	credFile string
	client   *client.Client
	agentBin string

	mu   sync.Mutex
	srv  *servertest.Server
	runs []*testutil.LogBuffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	guesttest.EnsureTools(t)
	ipmitest.EnsureTools(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dataDir: t.TempDir(), agentBin: agenttest.Build(t), addr: ln.Addr().String()}
	ln.Close()
	e.url = "http://" + e.addr
	e.start()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs())
		}
	})
	e.credFile = filepath.Join(e.dataDir, "admin-credentials")
	if e.client, err = client.New(e.url, e.srv.Admin.ID, e.srv.Admin.Secret); err != nil {
		t.Fatal(err)
	}
	return e
}

// start opens the data directory and serves, as `fleetpass serve` would.
func (e *env) start() {
	e.t.Helper()
	eng := engine.DefaultConfig()
	eng.PollInterval = 50 * time.Millisecond
	eng.ShutdownTimeout = 8 * time.Second
	eng.StopTimeout = 20 * time.Second
	eng.BootTimeout = 60 * time.Second
	eng.GuestTimeout = 60 * time.Second
	eng.RetryBase = 200 * time.Millisecond
	eng.MaxAttempts = 4
	eng.FetchPoll = 20 * time.Millisecond
	s := servertest.Start(e.t, servertest.WithoutSim(), servertest.WithSQLite(), servertest.WithDataDir(e.dataDir),
		servertest.WithListen(e.addr), servertest.WithEngine(eng),
		servertest.WithAgent(agentserver.Config{Silence: 5 * time.Second, PollHold: time.Second, AckTimeout: 30 * time.Second,
			Recheck: 200 * time.Millisecond}),
		servertest.WithConfig(func(c *server.Config) {
			c.SyncInterval = 2 * time.Second
			c.BMCSyncInterval = time.Second
			c.IPMI = ipmi.Config{Timeout: 500 * time.Millisecond}
		}))
	e.mu.Lock()
	e.srv = s
	e.runs = append(e.runs, s.Logs)
	e.mu.Unlock()
}

// stop ends the server abruptly: connections are cut and running item
// executions cancelled; what was not committed is lost, as in a crash.
func (e *env) stop() {
	e.mu.Lock()
	s := e.srv
	e.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

// logs is what every run of the server logged, at debug level.
func (e *env) logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, l := range e.runs {
		b.WriteString(l.String())
	}
	return b.String()
}

// cliResult is what a CLI run printed and how it ended.
type cliResult struct {
	stdout, stderr string
	err            error
}

// cli runs the fleetpass CLI against the server with the admin key.
func (e *env) cli(stdin string, args ...string) cliResult {
	e.t.Helper()
	var out, errb bytes.Buffer
	root := cli.NewRoot(strings.NewReader(stdin), &out, &errb)
	root.SetArgs(append([]string{"--server", e.url, "--credentials", e.credFile}, args...))
	err := root.ExecuteContext(e.t.Context())
	return cliResult{out.String(), errb.String(), err}
}

// machine is a bare-metal stand-in: a guesttest guest (sshd, the real agent)
// whose power is a real BMC, ipmi_sim, through the chassis hook.
type machine struct {
	name     string
	tenant   string // empty: the admin's
	g        *guesttest.Guest
	bmc      *ipmitest.BMC
	chassis  *guestChassis
	instance string
}

// guestChassis powers a guest from ipmi_sim's hook. ipmi_sim waits for the
// hook (and its client retransmits after a second), so power changes are
// queued to a worker and the hook answers at once; the power reads on as
// soon as it is switched on, as a real chassis does while the OS boots.
type guestChassis struct {
	g        *guesttest.Guest
	agentBin string

	mu       sync.Mutex
	on       bool
	hang     bool
	broken   bool
	enrolled bool
	// softOff is set while a soft off is under way; a power command
	// cancels it, as the power button's effect is moot once power is cut.
	softOff bool
	work    chan func()
	agent   agenttest.Runs
	errs    []error
}

func newGuestChassis(t testing.TB, g *guesttest.Guest, agentBin string) *guestChassis {
	c := &guestChassis{g: g, agentBin: agentBin, on: g.Running(), work: make(chan func(), 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range c.work {
			f()
		}
	}()
	t.Cleanup(func() {
		close(c.work)
		<-done
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			t.Errorf("stand-in server: %v", err)
		}
	})
	return c
}

func (c *guestChassis) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

// setHang makes the OS ignore the power button (a hung OS).
func (c *guestChassis) setHang(h bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hang = h
}

// setFailPower makes power commands fail, as a chassis whose power
// supply is faulty would.
func (c *guestChassis) setFailPower(f bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broken = f
}

func (c *guestChassis) Power() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

func (c *guestChassis) SetPower(on bool) error {
	c.mu.Lock()
	if c.broken {
		c.mu.Unlock()
		return errors.New("power supply fault")
	}
	was := c.on
	c.on, c.softOff = on, false
	c.mu.Unlock()
	switch {
	case on && !was:
		c.work <- c.boot
	case !on && was:
		c.work <- c.halt
	}
	return nil
}

func (c *guestChassis) SoftOff() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || c.hang || c.softOff {
		return nil
	}
	c.softOff = true
	c.work <- func() {
		// The OS takes a moment to shut down, then the power goes.
		time.Sleep(300 * time.Millisecond)
		c.mu.Lock()
		if !c.softOff {
			c.mu.Unlock()
			return
		}
		c.softOff = false
		c.mu.Unlock()
		c.halt()
		c.mu.Lock()
		c.on = false
		c.mu.Unlock()
	}
	return nil
}

func (c *guestChassis) Reset() error {
	c.mu.Lock()
	c.on, c.softOff = true, false
	c.mu.Unlock()
	c.work <- func() { c.halt(); c.boot() }
	return nil
}

// boot starts the guest's processes, then its agent, as a boot would.
func (c *guestChassis) boot() {
	if err := c.g.TryPowerOn(); err != nil {
		c.fail(err)
		return
	}
	if err := c.startAgent(); err != nil {
		c.fail(err)
	}
}

func (c *guestChassis) halt() {
	if err := c.g.TryPowerOff(); err != nil {
		c.fail(err)
	}
}

func (c *guestChassis) startAgent() error {
	c.mu.Lock()
	enrolled := c.enrolled
	c.mu.Unlock()
	if !enrolled {
		return nil
	}
	return c.agent.Start(c.g, c.agentBin)
}

func (c *guestChassis) agentLogs() string { return c.agent.Logs() }

// newServer starts a stand-in server (on) behind its own BMC, registers it
// through the CLI (the BMC password on standard input), enrols its agent
// with a token bound to its name and waits until the agent is alive.
func (e *env) newServer(name, password string) *machine {
	e.t.Helper()
	return e.newServerOf("", name, password)
}

// newServerOf is newServer for a server the operator registers in tenant
// (empty: the admin's own).
func (e *env) newServerOf(tenant, name, password string) *machine {
	e.t.Helper()
	s := e.newUnregistered(name, password)
	s.tenant = tenant
	args := []string{"instances", "add", name, "--os", "linux", "--ipmi", s.bmc.Addr(),
		"--ipmi-user", s.bmc.User, "--ipmi-password-stdin", "-o", "json"}
	if tenant != "" {
		args = append(args, "--tenant", tenant)
	}
	res := e.cli(s.bmc.Password+"\n", args...)
	if res.err != nil {
		e.t.Fatalf("instances add: %v\n%s", res.err, res.stderr)
	}
	var in apiv1.Instance
	if err := json.Unmarshal([]byte(res.stdout), &in); err != nil {
		e.t.Fatalf("instances add printed %q: %v", res.stdout, err)
	}
	if in.State != apiv1.StateRunning || in.Power.Driver != "ipmi" || in.BMC == nil {
		e.t.Fatalf("registered %+v, want a RUNNING ipmi instance with its BMC", in)
	}
	s.instance = in.ID
	e.enrol(s)
	e.waitAlive(s)
	return s
}

func (e *env) newUnregistered(name, password string) *machine {
	e.t.Helper()
	g := guesttest.Start(e.t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: password}}})
	ch := newGuestChassis(e.t, g, e.agentBin)
	bmc := ipmitest.Start(e.t, ch, ipmitest.Options{User: "fleetpass"})
	return &machine{name: name, g: g, bmc: bmc, chassis: ch}
}

// enrol enrols the server's agent with a one-time token bound to its name
// (given on standard input, never in arguments) and starts it.
func (e *env) enrol(s *machine) {
	e.t.Helper()
	if in, _ := agenttest.Enrol(e.t, e.client, s.g, e.agentBin, e.url, s.tenant, s.name); in != s.instance {
		e.t.Fatalf("the agent joined instance %s; want %s", in, s.instance)
	}
	s.chassis.mu.Lock()
	s.chassis.enrolled = true
	s.chassis.mu.Unlock()
	if err := s.chassis.startAgent(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) instance(s *machine) *apiv1.Instance {
	e.t.Helper()
	in, err := e.client.GetInstance(e.t.Context(), s.instance)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// waitInstance polls the instance until ok, for up to d.
func (e *env) waitInstance(s *machine, d time.Duration, what string, ok func(*apiv1.Instance) bool) *apiv1.Instance {
	e.t.Helper()
	return agenttest.WaitInstance(e.t, e.client, s.instance, d, what, ok, s.chassis.agentLogs)
}

func (e *env) waitAlive(s *machine) {
	e.t.Helper()
	e.waitInstance(s, 60*time.Second, "running with a live agent", agenttest.RunningAlive)
}

// power runs a power action through the native API and waits for its end.
func (e *env) power(action, stopMode string, s *machine) *apiv1.Operation {
	e.t.Helper()
	op, err := e.client.PowerAction(e.t.Context(), apiv1.PowerAction{Action: action, InstanceIDs: []string{s.instance}, StopMode: stopMode})
	if err != nil {
		e.t.Fatalf("%s: %v", action, err)
	}
	return e.wait(op.ID)
}

func (e *env) wait(id string) *apiv1.Operation {
	e.t.Helper()
	return agenttest.WaitOperation(e.t, e.client, id, 3*time.Minute)
}

func item(t testing.TB, op *apiv1.Operation) apiv1.Item {
	t.Helper()
	if len(op.Items) != 1 {
		t.Fatalf("operation %s has %d items, want 1", op.ID, len(op.Items))
	}
	return op.Items[0]
}

func wantItem(t testing.TB, op *apiv1.Operation, state, code string) apiv1.Item {
	t.Helper()
	it := item(t, op)
	if it.State != state || it.ErrorCode != code {
		t.Fatalf("item %s/%q (%s), want %s/%q", it.State, it.ErrorCode, it.Message, state, code)
	}
	return it
}

// wantPower asks ipmitool, a second client of the same BMC.
func wantPower(t testing.TB, s *machine, on bool) {
	t.Helper()
	got, err := s.bmc.PowerStatus()
	if err != nil || got != on {
		t.Fatalf("%s: ipmitool says on=%v (%v), want %v", s.name, got, err, on)
	}
}

// wantLogins proves a reset: the new password logs in, the old one is
// refused by sshd.
func wantLogins(t testing.TB, s *machine, newPW, oldPW string) {
	t.Helper()
	agenttest.WantLogins(t, s.name, s.g, user, newPW, oldPW)
}

// metric reads the value of a metric with no labels but the replica
// label every series carries.
func (e *env) metric(name string) string {
	e.t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
		rest, ok := strings.CutPrefix(line, name+`{replica="`)
		if end := strings.Index(rest, `"} `); ok && end >= 0 && !strings.Contains(rest[:end], `"`) {
			return rest[end+3:]
		}
	}
	return ""
}

// newPassword makes a password that fits every rule.
func newPassword() string { return testutil.NewPassword() }
