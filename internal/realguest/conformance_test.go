package realguest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
)

// agentHarness runs the driver conformance suite against the agent
// channel, each machine a real guest running the real agent binary.
type agentHarness struct {
	e *env
	n atomic.Int64
}

func (h *agentHarness) Power() driver.Power { return h.e.power }
func (h *agentHarness) Guest() driver.Guest { return h.e.channel() }

func (h *agentHarness) Config() drivertest.Config {
	return drivertest.Config{TransitionTimeout: time.Minute, PollInterval: 100 * time.Millisecond,
		CallTimeout: time.Minute, User: user, CanKillAgent: true}
}

func (h *agentHarness) NewMachine(t testing.TB, spec drivertest.MachineSpec) driver.Ref {
	t.Helper()
	m := h.e.agentGuestNoWait(fmt.Sprintf("conf-%03d", h.n.Add(1)), newPassword())
	for _, u := range spec.Users {
		if u == user {
			continue
		}
		if _, err := m.g.Run("useradd", "--no-create-home", "--shell", "/bin/sh", u); err != nil {
			t.Fatal(err)
		}
	}
	ref := driver.Ref{InstanceID: m.instance, Address: m.agentID}
	ch := h.e.channel()
	waitPing(t, ch, ref, nil)
	switch {
	case !spec.Running:
		m.g.PowerOff()
		waitPing(t, ch, ref, driver.ErrGuestNotAlive)
	case spec.DeadAgent:
		m.killAgent(t)
		waitPing(t, ch, ref, driver.ErrGuestNotAlive)
	}
	return ref
}

// waitPing waits until Ping returns want (nil: alive).
func waitPing(t testing.TB, g driver.Guest, ref driver.Ref, want error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := g.Ping(context.Background(), ref)
		if (want == nil && err == nil) || (want != nil && errors.Is(err, want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping(%s) = %v, want %v", ref.InstanceID, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *agentHarness) CheckPassword(t testing.TB, ref driver.Ref, u string, password []byte) bool {
	t.Helper()
	m, err := h.e.power.machine(ref)
	if err != nil {
		t.Fatal(err)
	}
	return m.g.CheckLogin(u, string(password)) == nil
}

// The agent channel must behave like every other guest channel; the power
// sub-tests exercise the test guests' own power driver.
func TestAgentChannelConformance(t *testing.T) {
	drivertest.Run(t, &agentHarness{e: newEnv(t, envOpts{})})
}
