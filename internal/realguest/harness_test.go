package realguest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/agenttest"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// powerDriver is the name of the test guests' power driver.
const powerDriver = "guesttest"

const (
	adminKeyID  = "fpk-realguest"
	adminSecret = "realguest-admin-secret-0123456789"
	tenant      = "acme"
)

// env is the real fleetpass server in process (servertest), with the test
// guests' power driver plugged in through server.Open's configuration: as
// the power of the qga guests ("guesttest") and in place of "manual" for
// the agent guests, whose instances their agents enrol with that driver.
type env struct {
	t        testing.TB
	s        *servertest.Server
	dir      string
	url      string
	agentBin string
	power    *guestPower
	logs     *testutil.LogBuffer
	client   *client.Client
}

type envOpts struct {
	agent  agentserver.Config
	engine engine.Config
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	guesttest.EnsureTools(t)
	if o.agent == (agentserver.Config{}) {
		o.agent = agentserver.Config{Silence: 5 * time.Second, PollHold: time.Second, AckTimeout: 30 * time.Second,
			Recheck: 200 * time.Millisecond}
	}
	if o.engine.PollInterval == 0 {
		o.engine = engine.DefaultConfig()
		o.engine.PollInterval = 50 * time.Millisecond
		o.engine.ShutdownTimeout = 20 * time.Second
		o.engine.BootTimeout = 60 * time.Second
		o.engine.GuestTimeout = 60 * time.Second
		o.engine.RetryBase = 100 * time.Millisecond
		o.engine.FetchPoll = 20 * time.Millisecond
	}
	power := &guestPower{m: map[string]*machine{}}
	s := servertest.Start(t, servertest.WithoutSim(), servertest.WithAgent(o.agent), servertest.WithEngine(o.engine),
		servertest.WithDrivers(map[string]driver.Power{powerDriver: power, core.ManualPowerDriver: power}, nil),
		servertest.WithAdminKey(servertest.Key{ID: adminKeyID, Secret: adminSecret}), servertest.WithTenants(tenant),
		servertest.WithConfig(func(c *server.Config) {
			c.SyncInterval = 2 * time.Second
			// guesttest's guests keep their qemu-ga sockets below it.
			c.QGASocketDirs = []string{os.TempDir()}
		}))
	e := &env{t: t, s: s, dir: s.DataDir, url: s.URL, agentBin: agenttest.Build(t), power: power, logs: s.Logs}
	c, err := client.New(e.url, adminKeyID, adminSecret)
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	return e
}

// channel is the server's agent channel.
func (e *env) channel() *agentserver.Channel {
	e.t.Helper()
	ch, ok := e.s.Service().GuestDriver(core.AgentGuestDriver).(*agentserver.Channel)
	if !ok {
		e.t.Fatal("the server has no agent channel")
	}
	return ch
}

// machine is a test guest registered as an instance.
type machine struct {
	name     string
	g        *guesttest.Guest
	instance string
	agentID  string // empty for qga guests
	agentBin string
	agent    agenttest.Runs
}

// process is the name of the guest's process that receives the passwords
// (its guest channel): what an argv watch must have seen.
func (m *machine) process() string {
	if m.agentID == "" {
		return "qemu-ga"
	}
	return "fleetpass-agent"
}

// startAgent runs the agent in the guest, as its service manager would.
func (m *machine) startAgent() error {
	if m.agentID == "" {
		return nil
	}
	return m.agent.Start(m.g, m.agentBin)
}

// killAgent kills the guest's agent, as a crash would.
func (m *machine) killAgent(t testing.TB) {
	t.Helper()
	if err := m.agent.Kill(); err != nil {
		t.Fatal(err)
	}
}

// agentLogs is what every run of the guest's agent wrote.
func (m *machine) agentLogs() string { return m.agent.Logs() }

// guestPower is the test guests' power driver: power off kills every
// process of the guest, power on starts sshd (and qemu-ga) again, then the
// agent, as a boot would.
type guestPower struct {
	mu sync.Mutex
	m  map[string]*machine
}

func (p *guestPower) add(m *machine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[m.name] = m
	if m.agentID != "" {
		// The conformance suite gives one ref to both drivers.
		p.m[m.agentID] = m
	}
}

func (p *guestPower) machine(ref driver.Ref) (*machine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.m[ref.Address]
	if !ok {
		return nil, fmt.Errorf("guest %q: %w", ref.Address, driver.ErrMachineNotFound)
	}
	return m, nil
}

func (p *guestPower) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	m, err := p.machine(ref)
	if err != nil {
		return driver.PowerUnknown, err
	}
	if m.g.Running() {
		return driver.PowerRunning, nil
	}
	return driver.PowerStopped, nil
}

func (p *guestPower) Shutdown(ctx context.Context, ref driver.Ref) error { return p.Stop(ctx, ref) }

func (p *guestPower) Stop(ctx context.Context, ref driver.Ref) error {
	m, err := p.machine(ref)
	if err != nil {
		return err
	}
	return m.g.TryPowerOff()
}

func (p *guestPower) Start(ctx context.Context, ref driver.Ref) error {
	m, err := p.machine(ref)
	if err != nil {
		return err
	}
	if m.g.Running() {
		return nil
	}
	if err := m.g.TryPowerOn(); err != nil {
		return err
	}
	return m.startAgent()
}

// Initial passwords of the guests' user.
const user = "alice"

// newAgentGuest starts a guest, enrols its agent with a one-time token
// (given on standard input, never in arguments), starts the agent and waits
// until it is alive. The instance's power is "manual", which this server
// runs with the test guests' switch.
func (e *env) newAgentGuest(name, password string) *machine {
	e.t.Helper()
	m := e.agentGuestNoWait(name, password)
	e.waitAlive(m)
	return m
}

func (e *env) agentGuestNoWait(name, password string) *machine {
	e.t.Helper()
	g := guesttest.Start(e.t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: password}}})
	instance, agent := agenttest.Enrol(e.t, e.client, g, e.agentBin, e.url, tenant, name)
	m := &machine{name: name, g: g, instance: instance, agentID: agent, agentBin: e.agentBin}
	e.power.add(m)
	if err := m.startAgent(); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// newQGAGuest starts a guest running qemu-ga and registers it with the
// "qga" channel on its socket.
func (e *env) newQGAGuest(name, password string) *machine {
	e.t.Helper()
	g := guesttest.Start(e.t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: password}}, QGA: true})
	m := &machine{name: name, g: g}
	e.power.add(m)
	in, err := e.client.CreateInstance(e.t.Context(), apiv1.InstanceCreate{Name: name, Tenant: tenant, OSType: "linux",
		Power: apiv1.DriverLink{Driver: powerDriver, Address: name}, Guest: apiv1.DriverLink{Driver: "qga", Address: g.QGASocket()}})
	if err != nil {
		e.t.Fatal(err)
	}
	m.instance = in.ID
	e.waitAlive(m)
	return m
}

// waitAlive waits until the instance reads running with a live guest.
func (e *env) waitAlive(m *machine) {
	e.t.Helper()
	agenttest.WaitInstance(e.t, e.client, m.instance, 60*time.Second, "running with a live guest", agenttest.RunningAlive, m.agentLogs)
}

// newPassword makes a password that fits every rule.
func newPassword() string { return testutil.NewPassword() }

// reset asks the native API for a reset and waits for its end.
func (e *env) reset(mode string, force bool, pw string, ms ...*machine) *apiv1.Operation {
	e.t.Helper()
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.instance
	}
	op, err := e.client.ResetPassword(e.t.Context(), apiv1.PasswordReset{InstanceIDs: ids, User: user, Mode: mode,
		ForceStop: force, Password: pw})
	if err != nil {
		e.t.Fatalf("reset: %v", err)
	}
	return e.wait(op.ID)
}

func (e *env) wait(id string) *apiv1.Operation {
	e.t.Helper()
	return agenttest.WaitOperation(e.t, e.client, id, 5*time.Minute)
}

// wantLogins proves a reset: the new password logs in, the old one is
// refused by sshd.
func wantLogins(t testing.TB, m *machine, newPW, oldPW string) {
	t.Helper()
	agenttest.WantLogins(t, m.name, m.g, user, newPW, oldPW)
}

func itemOf(t testing.TB, op *apiv1.Operation, instance string) apiv1.Item {
	t.Helper()
	for _, it := range op.Items {
		if it.InstanceID == instance {
			return it
		}
	}
	t.Fatalf("operation %s has no item for %s", op.ID, instance)
	return apiv1.Item{}
}

func wantItem(t testing.TB, op *apiv1.Operation, m *machine, state, code string) {
	t.Helper()
	it := itemOf(t, op, m.instance)
	if it.State != state || it.ErrorCode != code {
		t.Errorf("%s: item %s/%q (%s), want %s/%q\nagent log:\n%s", m.name, it.State, it.ErrorCode, it.Message, state, code, m.agentLogs())
	}
}
