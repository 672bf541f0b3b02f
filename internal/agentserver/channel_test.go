package agentserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/enginetest"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// fixture is the agent endpoints and channel over a fresh database, served
// on loopback, with no engine: what the channel and the agent need.
type fixture struct {
	t     *testing.T
	store *store.Store
	svc   *core.Service
	ch    *agentserver.Channel
	api   *agentserver.API
	url   string
}

func newFixture(t *testing.T, cfg agentserver.Config) *fixture {
	t.Helper()
	return newFixtureOf(t, cfg, nil)
}

// newFixtureOf is newFixture with an engine when power is not nil: power
// then stands in for the "manual" power driver (whose addresses are agent
// ids, as the harness's are), so offline resets can power machines.
func newFixtureOf(t *testing.T, cfg agentserver.Config, power driver.Power) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seal, err := sealer.LoadOrCreate(filepath.Join(dir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch := agentserver.NewChannel(st, cfg)
	drivers := engine.Drivers{Power: map[string]driver.Power{core.ManualPowerDriver: agentserver.NewManual(ch)},
		Guest: map[string]driver.Guest{core.AgentGuestDriver: ch}, AgentDriver: core.AgentGuestDriver}
	bus := events.NewBus(st, log, time.Hour)
	var eng *engine.Engine
	if power != nil {
		drivers.Power[core.ManualPowerDriver] = power
		eng = enginetest.Start(t, ctx, cancel, st, drivers, seal, bus, metrics.New(), log, enginetest.Fast())
	}
	svc := core.New(st, eng, seal, bus, drivers, log)
	if err := svc.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api := agentserver.NewAPI(svc, ch, log)
	api.Register(mux)
	// Tokens are made through the native API, as in the server.
	nativeapi.New(svc, log, metrics.New(), nativeapi.Config{}).Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &fixture{t: t, store: st, svc: svc, ch: ch, api: api, url: hs.URL}
}

func (f *fixture) token(name string) string {
	f.t.Helper()
	tok, err := f.svc.CreateAgentToken(context.Background(), core.Principal{Kind: "key", ID: "test", Tenant: "acme"},
		apiv1.AgentTokenCreate{InstanceName: name})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// fakeMachine is a machine whose "OS" is a map of passwords, with the real
// agent code running in process while it is powered on.
type fakeMachine struct {
	st *agent.State

	mu        sync.Mutex
	passwords map[string]string
	sets      int // the agent's set-password applications
	running   bool
	stop      context.CancelFunc
	done      chan struct{}
}

func (m *fakeMachine) set(ctx context.Context, user string, pw []byte) agent.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets++
	if _, ok := m.passwords[user]; !ok {
		return agent.Result{Code: agentproto.ResultUserNotFound, Message: "no such user"}
	}
	m.passwords[user] = string(pw)
	return agent.Result{Code: agentproto.ResultOK}
}

func (m *fakeMachine) startAgent() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		_ = agent.Run(ctx, m.st, agent.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Setter: m.set,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	}()
}

func (m *fakeMachine) killAgent() {
	if m.stop != nil {
		m.stop()
		<-m.done
		m.stop = nil
	}
}

// harness runs the driver conformance suite against the channel, with
// fake machines powered by a power driver of the harness's own.
type harness struct {
	f  *fixture
	mu sync.Mutex
	m  map[string]*fakeMachine
}

func (h *harness) machine(ref driver.Ref) (*fakeMachine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.m[ref.Address]
	if !ok {
		return nil, driver.ErrMachineNotFound
	}
	return m, nil
}

func (h *harness) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	m, err := h.machine(ref)
	if err != nil {
		return driver.PowerUnknown, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return driver.PowerRunning, nil
	}
	return driver.PowerStopped, nil
}

func (h *harness) Shutdown(ctx context.Context, ref driver.Ref) error { return h.Stop(ctx, ref) }

func (h *harness) Stop(ctx context.Context, ref driver.Ref) error {
	m, err := h.machine(ref)
	if err != nil {
		return err
	}
	m.killAgent()
	m.mu.Lock()
	m.running = false
	m.mu.Unlock()
	return nil
}

func (h *harness) Start(ctx context.Context, ref driver.Ref) error {
	m, err := h.machine(ref)
	if err != nil {
		return err
	}
	m.mu.Lock()
	was := m.running
	m.running = true
	m.mu.Unlock()
	if !was {
		m.startAgent()
	}
	return nil
}

func (h *harness) Power() driver.Power { return h }
func (h *harness) Guest() driver.Guest { return h.f.ch }
func (h *harness) Config() drivertest.Config {
	return drivertest.Config{TransitionTimeout: 10 * time.Second, PollInterval: 20 * time.Millisecond,
		CallTimeout: 10 * time.Second, HangObservation: time.Second, CanKillAgent: true}
}

func (h *harness) NewMachine(t testing.TB, spec drivertest.MachineSpec) driver.Ref {
	t.Helper()
	st, err := agent.Enroll(context.Background(), agent.EnrollOptions{Server: h.f.url, Token: h.f.token("fake"), Hostname: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMachine{st: st, passwords: map[string]string{"root": "initial"}}
	for _, u := range spec.Users {
		m.passwords[u] = "initial"
	}
	h.mu.Lock()
	h.m[st.AgentID] = m
	h.mu.Unlock()
	t.Cleanup(m.killAgent)
	ref := driver.Ref{InstanceID: st.InstanceID, Address: st.AgentID}
	if spec.Running {
		_ = h.Start(context.Background(), ref)
		waitPing(t, h.f.ch, ref)
		if spec.DeadAgent {
			m.killAgent()
			waitNotAlive(t, h.f.ch, ref)
		}
	}
	return ref
}

func (h *harness) CheckPassword(t testing.TB, ref driver.Ref, user string, password []byte) bool {
	m, err := h.machine(ref)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.passwords[user] == string(password)
}

func waitPing(t testing.TB, ch *agentserver.Channel, ref driver.Ref) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ch.Ping(context.Background(), ref)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent of %s never became alive: %v", ref.InstanceID, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitNotAlive(t testing.TB, ch *agentserver.Channel, ref driver.Ref) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ch.Ping(context.Background(), ref)
		if errors.Is(err, driver.ErrGuestNotAlive) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed agent of %s still counts as alive: %v", ref.InstanceID, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fastConfig() agentserver.Config {
	return agentserver.Config{Silence: 2 * time.Second, PollHold: 500 * time.Millisecond, AckTimeout: 5 * time.Second,
		Recheck: 50 * time.Millisecond}
}

func TestConformanceWithAgentsInProcess(t *testing.T) {
	drivertest.Run(t, &harness{f: newFixture(t, fastConfig()), m: map[string]*fakeMachine{}})
}
