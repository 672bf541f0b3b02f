package ipmi_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/ipmitest"
)

// harness gives every machine of the conformance suite a BMC of its own:
// an ipmi_sim whose chassis is a process in a PID namespace.
type harness struct {
	d *ipmi.Driver

	mu   sync.Mutex
	n    int
	bmcs map[string]*bmc
}

// bmc is one machine's BMC and what the driver is told of it; the fault
// tests change the latter.
type bmc struct {
	sim            *ipmitest.BMC
	chassis        *ipmitest.ProcessChassis
	addr           string
	user, password string
	suite          int
}

func newHarness(t *testing.T) *harness {
	h := &harness{bmcs: map[string]*bmc{}}
	h.d = newDriver(h)
	t.Cleanup(h.d.Close)
	return h
}

func newDriver(h *harness) *ipmi.Driver {
	return ipmi.New(ipmi.CredentialsFunc(h.creds), ipmi.Config{Timeout: 500 * time.Millisecond})
}

func (h *harness) creds(_ context.Context, ref driver.Ref) (ipmi.BMC, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.bmcs[ref.InstanceID]
	if !ok {
		return ipmi.BMC{}, fmt.Errorf("instance %s has no BMC: %w", ref.InstanceID, driver.ErrMachineNotFound)
	}
	return ipmi.BMC{Address: b.addr, User: b.user, Password: []byte(b.password), CipherSuite: b.suite}, nil
}

func (h *harness) Power() driver.Power { return h.d }
func (h *harness) Guest() driver.Guest { return nil }
func (h *harness) Config() drivertest.Config {
	return drivertest.Config{TransitionTimeout: 30 * time.Second, PollInterval: 50 * time.Millisecond,
		CallTimeout: 20 * time.Second, HangObservation: time.Second, CanHangShutdown: true}
}

func (h *harness) NewMachine(t testing.TB, spec drivertest.MachineSpec) driver.Ref {
	b := h.newBMC(t)
	b.chassis.SetHangShutdown(spec.HangShutdown)
	if spec.Running {
		if err := b.chassis.SetPower(true); err != nil {
			t.Fatal(err)
		}
	}
	return b.ref
}

type machine struct {
	*bmc
	ref driver.Ref
}

func (h *harness) newBMC(t testing.TB) machine {
	t.Helper()
	ch := &ipmitest.ProcessChassis{}
	t.Cleanup(ch.Close)
	sim := ipmitest.Start(t, ch, ipmitest.Options{})
	h.mu.Lock()
	h.n++
	id := fmt.Sprintf("ins-bmc%05d", h.n)
	b := &bmc{sim: sim, chassis: ch, addr: sim.Addr(), user: sim.User, password: sim.Password, suite: ipmi.DefaultCipherSuite}
	h.bmcs[id] = b
	h.mu.Unlock()
	return machine{bmc: b, ref: driver.Ref{InstanceID: id, Address: sim.Addr()}}
}

func (h *harness) CheckPassword(testing.TB, driver.Ref, string, []byte) bool { return false }

func TestConformance(t *testing.T) {
	ipmitest.EnsureTools(t)
	drivertest.Run(t, newHarness(t))
}

// TestPowerCrossCheckedWithIPMITool: what the driver does, a second client
// of the same BMC sees.
func TestPowerCrossCheckedWithIPMITool(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	ctx := t.Context()
	want := func(on bool) {
		t.Helper()
		got, err := m.sim.PowerStatus()
		if err != nil || got != on {
			t.Fatalf("ipmitool says on=%v (%v), want %v", got, err, on)
		}
	}
	want(false)
	if err := h.d.Start(ctx, m.ref); err != nil {
		t.Fatal(err)
	}
	want(true)
	if _, err := m.sim.IPMITool("chassis", "power", "off"); err != nil {
		t.Fatal(err)
	}
	if st, err := h.d.State(ctx, m.ref); err != nil || st != driver.PowerStopped {
		t.Fatalf("State after ipmitool's power off = %s, %v; want stopped", st, err)
	}
}

// TestCycleAndResetAreSentOnce: a power cycle is off then on, a reset is
// one reset, and neither reaches the chassis twice.
func TestCycleAndResetAreSentOnce(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	ctx := t.Context()
	if err := m.chassis.SetPower(true); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Reset(ctx, m.ref); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if err := h.d.Cycle(ctx, m.ref); err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(m.sim.Commands(), []string{"set reset 1", "set power 0", "set power 1"}) {
		if time.Now().After(deadline) {
			t.Fatalf("chassis commands %q, want a reset then one cycle (off, on)", m.sim.Commands())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m.chassis.Boots() != 3 {
		t.Errorf("the machine booted %d times, want 3 (on, reset, cycle)", m.chassis.Boots())
	}
}
