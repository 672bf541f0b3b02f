package realbmc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
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

	"log/slog"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/cli"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/ipmitest"
	"github.com/fleetpass/fleetpass/internal/server"
)

const (
	// user is the login the tests reset on the stand-in servers.
	user = "alice"
	// agentState is where a server's agent keeps its identity: the guest's
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

// env is a whole fleetpass server, assembled by server.Open as `fleetpass
// serve` does, serving over HTTP on a fixed loopback address, so that the
// agents find it again after a restart.
type env struct {
	t        testing.TB
	dataDir  string
	addr     string
	url      string
	credFile string
	client   *client.Client
	logs     *syncBuffer
	agentBin string

	mu  sync.Mutex
	run *serverRun
}

// serverRun is one run of the server, from Open to Close.
type serverRun struct {
	srv    *server.Server
	hs     *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func newEnv(t testing.TB) *env {
	t.Helper()
	guesttest.EnsureTools(t)
	ipmitest.EnsureTools(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dataDir: t.TempDir(), logs: &syncBuffer{}, agentBin: buildAgent(t), addr: ln.Addr().String()}
	ln.Close()
	e.url = "http://" + e.addr
	e.start()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs.String())
		}
	})
	var cred server.Credentials
	e.credFile = filepath.Join(e.dataDir, "admin-credentials")
	b, err := os.ReadFile(e.credFile)
	if err == nil {
		err = json.Unmarshal(b, &cred)
	}
	if err != nil {
		t.Fatalf("admin credentials: %v", err)
	}
	if e.client, err = client.New(e.url, cred.KeyID, cred.Secret); err != nil {
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
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.Open(ctx, server.Config{
		DataDir: e.dataDir,
		Engine:  eng,
		Agent: agentserver.Config{Silence: 5 * time.Second, PollHold: time.Second, AckTimeout: 30 * time.Second,
			Recheck: 200 * time.Millisecond},
		SyncInterval:    2 * time.Second,
		BMCSyncInterval: time.Second,
		IPMI:            ipmi.Config{Timeout: 500 * time.Millisecond},
		Log:             slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		cancel()
		srv.Close()
		e.t.Fatal(err)
	}
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
		srv.Close()
		e.t.Fatalf("listen on %s again: %v", e.addr, err)
	}
	r := &serverRun{srv: srv, cancel: cancel, done: make(chan struct{}),
		hs: &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}}
	go func() {
		defer close(r.done)
		_ = r.hs.Serve(ln)
	}()
	e.mu.Lock()
	e.run = r
	e.mu.Unlock()
}

// stop ends the server abruptly: connections are cut and running item
// executions cancelled; what was not committed is lost, as in a crash.
func (e *env) stop() {
	e.mu.Lock()
	r := e.run
	e.run = nil
	e.mu.Unlock()
	if r == nil {
		return
	}
	_ = r.hs.Close()
	<-r.done
	r.cancel()
	r.srv.Close()
}

// buildAgent builds cmd/fleetpass-agent for the stand-in servers to run.
func buildAgent(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetpass-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fleetpass/fleetpass/cmd/fleetpass-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fleetpass-agent: %v\n%s", err, out)
	}
	// The guests' users must reach it: t.TempDir is private to root.
	for dir := filepath.Dir(bin); dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
		_ = os.Chmod(dir, 0o755)
	}
	return bin
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
	daemons []*guesttest.Daemon
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
	d, err := c.g.StartDaemon("fleetpass-agent", c.agentBin, "run", "--state", agentState, "--log-level", "debug")
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.daemons = append(c.daemons, d)
	c.mu.Unlock()
	return nil
}

func (c *guestChassis) agentLogs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, d := range c.daemons {
		b.WriteString(d.Log())
	}
	return b.String()
}

var enrolled = regexp.MustCompile(`enrolled: instance (ins-[a-z0-9]+)`)

// newServer starts a stand-in server (on) behind its own BMC, registers it
// through the CLI (the BMC password on standard input), enrols its agent
// with a token bound to its name and waits until the agent is alive.
func (e *env) newServer(name, password string) *machine {
	e.t.Helper()
	s := e.newUnregistered(name, password)
	res := e.cli(s.bmc.Password+"\n", "instances", "add", name, "--os", "linux", "--ipmi", s.bmc.Addr(),
		"--ipmi-user", s.bmc.User, "--ipmi-password-stdin", "-o", "json")
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
	tok, err := e.client.CreateAgentToken(e.t.Context(), apiv1.AgentTokenCreate{InstanceName: s.name, TTL: "10m"})
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := s.g.RunInput([]byte(tok.Token+"\n"), e.agentBin, "enroll", "--server", e.url, "--token-file", "-",
		"--state", agentState, "--hostname", s.name)
	if err != nil {
		e.t.Fatalf("enroll: %v", err)
	}
	if m := enrolled.FindStringSubmatch(out); m == nil || m[1] != s.instance {
		e.t.Fatalf("enroll said %q; want it to join instance %s", out, s.instance)
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
	deadline := time.Now().Add(d)
	for {
		in, err := e.client.GetInstance(e.t.Context(), s.instance)
		if err == nil && ok(in) {
			return in
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not %s within %v (last: %+v, %v)\nagent log:\n%s", s.name, what, d, in, err, s.chassis.agentLogs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) waitAlive(s *machine) {
	e.t.Helper()
	e.waitInstance(s, 60*time.Second, "running with a live agent", func(in *apiv1.Instance) bool {
		return in.State == apiv1.StateRunning && in.GuestAlive
	})
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
	ctx, cancel := context.WithTimeout(e.t.Context(), 3*time.Minute)
	defer cancel()
	for {
		op, err := e.client.WaitOperationFor(ctx, id, 30*time.Second)
		if err == nil && op.Status != apiv1.OperationRunning {
			return op
		}
		if ctx.Err() != nil {
			e.t.Fatalf("operation %s did not finish: %v", id, err)
		}
	}
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
	if err := s.g.CheckLogin(user, newPW); err != nil {
		t.Errorf("%s: login with the new password: %v", s.name, err)
	}
	if err := s.g.CheckLogin(user, oldPW); !errors.Is(err, guesttest.ErrAuthFailed) {
		t.Errorf("%s: login with the old password: got %v, want an authentication failure", s.name, err)
	}
}

// metric reads one unlabelled metric's value from /metrics.
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
	}
	return ""
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
