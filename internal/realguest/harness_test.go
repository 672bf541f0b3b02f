package realguest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/actionapi"
	"github.com/fleetpass/fleetpass/internal/dialect/baremetal"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/inventory"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/qga"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// powerDriver is the name of the test guests' power driver.
const powerDriver = "guesttest"

const (
	adminKeyID  = "fpk-realguest"
	adminSecret = "realguest-admin-secret-0123456789"
	tenant      = "acme"
	// agentState is where a guest's agent keeps its identity: the guest's
	// private /etc, which survives its power cycles.
	agentState = "/etc/fleetpass-agent/state.json"
)

// syncBuffer is a log sink tests read while the server writes.
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

// buildAgent builds cmd/fleetpass-agent for the guests to run.
func buildAgent(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetpass-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fleetpass/fleetpass/cmd/fleetpass-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fleetpass-agent: %v\n%s", err, out)
	}
	// Guests' users must reach it: t.TempDir is private to root.
	for dir := filepath.Dir(bin); dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
		_ = os.Chmod(dir, 0o755)
	}
	return bin
}

// env is a fleetpass server assembled in process like server.Open, plus
// a power driver for the test guests, on a fixed loopback address so that
// agents find it again after a restart.
type env struct {
	t        testing.TB
	dir      string
	addr     string
	url      string
	agentBin string
	power    *guestPower
	agentCfg agentserver.Config
	engCfg   engine.Config
	logs     *syncBuffer
	client   *client.Client

	mu  sync.Mutex
	run *serverRun
}

type serverRun struct {
	store  *store.Store
	svc    *core.Service
	eng    *engine.Engine
	ch     *agentserver.Channel
	hs     *http.Server
	cancel context.CancelFunc
	done   chan struct{}
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := &env{t: t, dir: t.TempDir(), addr: addr, url: "http://" + addr, agentBin: buildAgent(t),
		power: &guestPower{m: map[string]*machine{}}, agentCfg: o.agent, engCfg: o.engine, logs: &syncBuffer{}}
	e.start()
	t.Cleanup(e.stop)
	c, err := client.New(e.url, adminKeyID, adminSecret)
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	return e
}

// start opens the data directory and serves, as `fleetpass serve` would.
func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.OpenSQLite(ctx, filepath.Join(e.dir, "fleetpass.db"))
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	seal, err := sealer.LoadOrCreate(filepath.Join(e.dir, "secret.key"))
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	ch := agentserver.NewChannel(st, e.agentCfg)
	drivers := engine.Drivers{
		Power: map[string]driver.Power{powerDriver: e.power, core.ManualPowerDriver: agentserver.NewManual(ch)},
		Guest: map[string]driver.Guest{"qga": &qga.Channel{}, core.AgentGuestDriver: ch},
	}
	m := metrics.New()
	bus := events.NewBus(st, log, 100*time.Millisecond)
	if err := bus.Start(ctx); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	eng, err := engine.New(ctx, st, drivers, seal, bus, m, log, e.engCfg)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	svc := core.New(st, eng, seal, bus, drivers, log)
	if n, err := svc.CountKeys(ctx); err != nil || n == 0 {
		if err := svc.InsertKey(ctx, adminKeyID, adminSecret, core.AdminTenant, "test admin", true); err != nil {
			cancel()
			e.t.Fatal(err)
		}
		if err := svc.EnsureTenant(ctx, tenant); err != nil {
			cancel()
			e.t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	nativeapi.New(svc, log, m, nativeapi.Config{}).Register(mux)
	actionapi.New(svc, log, m, nil).Register(mux)
	baremetal.New(svc, log, m, nil).Register(mux)
	agentserver.NewAPI(svc, st, ch, log).Register(mux)
	hs := &http.Server{Handler: httpx.Middleware(log, mux), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	var ln net.Listener
	for i := 0; ; i++ {
		// The port was ours a moment ago; a closing run may hold it briefly.
		if ln, err = net.Listen("tcp", e.addr); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		cancel()
		e.t.Fatalf("listen on %s again: %v", e.addr, err)
	}
	if err := eng.Start(ctx); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	r := &serverRun{store: st, svc: svc, eng: eng, ch: ch, hs: hs, cancel: cancel, done: make(chan struct{})}
	go bus.Run(ctx)
	go inventory.New(svc, st, drivers, log, 2*time.Second).Run(ctx)
	go func() {
		defer close(r.done)
		_ = hs.Serve(ln)
	}()
	e.mu.Lock()
	e.run = r
	e.mu.Unlock()
}

// stop ends the server abruptly, as a crash would for everything not yet
// committed: connections are cut, running item executions cancelled.
func (e *env) stop() {
	e.mu.Lock()
	r := e.run
	e.run = nil
	e.mu.Unlock()
	if r == nil {
		return
	}
	r.cancel()
	_ = r.hs.Close()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = r.eng.Stop(ctx)
	cancel()
	r.store.Close()
}

func (e *env) current() *serverRun {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		e.t.Fatal("the server is not running")
	}
	return e.run
}

// machine is a test guest registered as an instance.
type machine struct {
	name     string
	g        *guesttest.Guest
	instance string
	agentID  string // empty for qga guests
	agentBin string

	mu      sync.Mutex
	daemons []*guesttest.Daemon
}

// startAgent runs the agent in the guest, as its service manager would.
func (m *machine) startAgent() error {
	if m.agentID == "" {
		return nil
	}
	d, err := m.g.StartDaemon("fleetpass-agent", m.agentBin, "run", "--state", agentState, "--log-level", "debug")
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.daemons = append(m.daemons, d)
	m.mu.Unlock()
	return nil
}

// killAgent kills the guest's agent, as a crash would.
func (m *machine) killAgent(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	ds := append([]*guesttest.Daemon(nil), m.daemons...)
	m.mu.Unlock()
	for _, d := range ds {
		if err := d.Kill(); err != nil {
			t.Fatal(err)
		}
	}
}

// agentLogs is what every run of the guest's agent wrote.
func (m *machine) agentLogs() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	for _, d := range m.daemons {
		b.WriteString(d.Log())
	}
	return b.String()
}

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

var enrolled = regexp.MustCompile(`enrolled: instance (ins-[a-z0-9]+) \(tenant [a-z0-9-]+\), agent (agt-[a-z0-9]+)`)

// newAgentGuest starts a guest, enrols its agent with a one-time token
// (given on standard input, never in arguments), moves the instance to the
// test power driver, starts the agent and waits until it is alive.
func (e *env) newAgentGuest(name, password string) *machine {
	e.t.Helper()
	m := e.agentGuestNoWait(name, password)
	e.waitAlive(m)
	return m
}

func (e *env) agentGuestNoWait(name, password string) *machine {
	e.t.Helper()
	ctx := e.t.Context()
	g := guesttest.Start(e.t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: password}}})
	tok, err := e.client.CreateAgentToken(ctx, apiv1.AgentTokenCreate{Tenant: tenant, InstanceName: name, TTL: "10m"})
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := g.RunInput([]byte(tok.Token+"\n"), e.agentBin, "enroll", "--server", e.url, "--token-file", "-",
		"--state", agentState, "--hostname", name)
	if err != nil {
		e.t.Fatalf("enroll: %v", err)
	}
	sm := enrolled.FindStringSubmatch(out)
	if sm == nil {
		e.t.Fatalf("enroll said %q", out)
	}
	m := &machine{name: name, g: g, instance: sm[1], agentID: sm[2], agentBin: e.agentBin}
	e.usePower(m)
	e.power.add(m)
	if err := m.startAgent(); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// usePower gives the instance the test guests' power driver: an agent
// enrols its machine with power "manual", and these guests have a switch.
func (e *env) usePower(m *machine) {
	e.t.Helper()
	_, err := e.current().store.DB.ExecContext(e.t.Context(),
		`UPDATE instances SET power_driver = ?, power_address = ? WHERE id = ?`, powerDriver, m.name, m.instance)
	if err != nil {
		e.t.Fatal(err)
	}
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
	deadline := time.Now().Add(60 * time.Second)
	for {
		in, err := e.client.GetInstance(e.t.Context(), m.instance)
		if err == nil && in.State == apiv1.StateRunning && in.GuestAlive {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s never became running with a live guest (last: %+v, %v)\nagent log:\n%s", m.name, in, err, m.agentLogs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newPassword makes a password that fits the Linux rule.
func newPassword() string {
	const alnum = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := []byte("Fp-")
	for range 13 {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		b = append(b, alnum[n.Int64()])
	}
	return string(b) + "9"
}

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
	ctx, cancel := context.WithTimeout(e.t.Context(), 5*time.Minute)
	defer cancel()
	for {
		op, err := e.client.WaitOperationFor(ctx, id, 30*time.Second)
		if err == nil && op.Status != apiv1.OperationRunning {
			return op
		}
		if ctx.Err() != nil {
			e.t.Fatalf("operation %s did not finish: %v", id, err)
		}
		if err != nil {
			time.Sleep(200 * time.Millisecond) // the server may be restarting
		}
	}
}

// wantLogins proves a reset: the new password logs in, the old one is
// refused by sshd.
func wantLogins(t testing.TB, m *machine, newPW, oldPW string) {
	t.Helper()
	if err := m.g.CheckLogin(user, newPW); err != nil {
		t.Errorf("%s: login with the new password: %v", m.name, err)
	}
	if err := m.g.CheckLogin(user, oldPW); !errors.Is(err, guesttest.ErrAuthFailed) {
		t.Errorf("%s: login with the old password: got %v, want an authentication failure", m.name, err)
	}
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
