package ipmi_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/ipmitest"
)

// TestLostAnswerOfIdempotentCommandIsRetransmitted: power on whose answer
// is lost is sent again; the BMC runs it twice, which changes nothing.
func TestLostAnswerOfIdempotentCommandIsRetransmitted(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	lossy := m.sim.Lossy(t)
	ref := m.ref
	ref.Address = lossy.Addr()
	h.mu.Lock()
	h.bmcs[ref.InstanceID].addr = lossy.Addr()
	h.mu.Unlock()
	ctx := t.Context()
	if st, err := h.d.State(ctx, ref); err != nil || st != driver.PowerStopped {
		t.Fatalf("State = %s, %v", st, err)
	}
	// The status read before the command, then the command's answer.
	lossy.DropResponses(1)
	if err := h.d.Start(ctx, ref); err != nil {
		t.Fatalf("Start with a lost answer: %v", err)
	}
	if lossy.Dropped() != 1 {
		t.Fatalf("dropped %d answers, want 1", lossy.Dropped())
	}
	if !m.chassis.Power() || m.chassis.Boots() != 1 {
		t.Errorf("machine on=%v after %d boots, want on after 1", m.chassis.Power(), m.chassis.Boots())
	}
}

// TestLostAnswerOfCycleIsNotRetransmitted: a power cycle whose answer is
// lost is reported as of unknown outcome, and the chassis cycled once.
func TestLostAnswerOfCycleIsNotRetransmitted(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	lossy := m.sim.Lossy(t)
	ref := m.ref
	h.mu.Lock()
	h.bmcs[ref.InstanceID].addr = lossy.Addr()
	h.mu.Unlock()
	ctx := t.Context()
	if err := m.chassis.SetPower(true); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.State(ctx, ref); err != nil {
		t.Fatal(err)
	}
	lossy.DropResponses(1)
	err := h.d.Cycle(ctx, ref)
	if !errors.Is(err, ipmi.ErrOutcomeUnknown) || driver.IsTransient(err) {
		t.Fatalf("Cycle with a lost answer: %v, want a non-transient ErrOutcomeUnknown", err)
	}
	time.Sleep(3 * time.Second) // the BMC's cycle interval, and any retransmission's
	if got := m.sim.Commands(); !slices.Equal(got, []string{"set power 0", "set power 1"}) {
		t.Errorf("chassis commands %q, want one cycle (off, on)", got)
	}
}

// TestFaults: each way a BMC can fail gives its own error, and nothing is
// done to the server.
func TestFaults(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	ctx := t.Context()

	t.Run("WrongPassword", func(t *testing.T) {
		m := h.newBMC(t)
		h.mu.Lock()
		h.bmcs[m.ref.InstanceID].password = "not-the-password"
		h.mu.Unlock()
		err := h.d.Start(ctx, m.ref)
		if !errors.Is(err, ipmi.ErrAuth) || driver.IsTransient(err) {
			t.Fatalf("Start with a wrong password: %v, want a non-transient ErrAuth", err)
		}
		if strings.Contains(err.Error(), "not-the-password") || strings.Contains(err.Error(), m.sim.Password) {
			t.Errorf("error shows a password: %v", err)
		}
		if len(m.sim.Commands()) != 0 || m.chassis.Power() {
			t.Errorf("commands %q reached the chassis", m.sim.Commands())
		}
	})

	t.Run("UnknownUser", func(t *testing.T) {
		m := h.newBMC(t)
		h.mu.Lock()
		h.bmcs[m.ref.InstanceID].user = "nobody"
		h.mu.Unlock()
		if _, err := h.d.State(ctx, m.ref); !errors.Is(err, ipmi.ErrAuth) {
			t.Fatalf("State with an unknown user: %v, want ErrAuth", err)
		}
	})

	t.Run("CipherSuiteTheBMCLacks", func(t *testing.T) {
		// ipmi_sim has no suite 17 (SHA-256).
		m := h.newBMC(t)
		h.mu.Lock()
		h.bmcs[m.ref.InstanceID].suite = 17
		h.mu.Unlock()
		err := h.d.Start(ctx, m.ref)
		if !errors.Is(err, ipmi.ErrCipherSuite) || driver.IsTransient(err) {
			t.Fatalf("Start with suite 17: %v, want a non-transient ErrCipherSuite", err)
		}
		if m.chassis.Power() {
			t.Error("the server was powered on")
		}
	})

	t.Run("Suite0Refused", func(t *testing.T) {
		m := h.newBMC(t)
		h.mu.Lock()
		h.bmcs[m.ref.InstanceID].suite = 0
		h.mu.Unlock()
		err := h.d.Start(ctx, m.ref)
		if !errors.Is(err, ipmi.ErrCipherSuite) {
			t.Fatalf("Start with suite 0: %v, want ErrCipherSuite", err)
		}
		for _, c := range m.sim.HookCalls() {
			if c != "get power" || m.chassis.Power() {
				t.Fatalf("the BMC was used with suite 0: %q", m.sim.HookCalls())
			}
		}
	})

	t.Run("BMCDown", func(t *testing.T) {
		m := h.newBMC(t)
		m.sim.Kill()
		start := time.Now()
		_, err := h.d.State(ctx, m.ref)
		if !errors.Is(err, ipmi.ErrUnreachable) || !driver.IsTransient(err) {
			t.Fatalf("State of a dead BMC: %v, want a transient ErrUnreachable", err)
		}
		t.Logf("a dead BMC is reported in %v", time.Since(start))
	})

	t.Run("BMCKilledMidSessionThenBack", func(t *testing.T) {
		m := h.newBMC(t)
		if _, err := h.d.State(ctx, m.ref); err != nil {
			t.Fatal(err)
		}
		m.sim.Kill()
		if err := h.d.Start(ctx, m.ref); !errors.Is(err, ipmi.ErrUnreachable) {
			t.Fatalf("Start with the BMC killed: %v, want ErrUnreachable", err)
		}
		m.sim.Restart()
		// The old session is gone with the old process: a new one is opened.
		if err := h.d.Start(ctx, m.ref); err != nil {
			t.Fatalf("Start once the BMC is back: %v", err)
		}
		if !m.chassis.Power() {
			t.Error("the server is not on")
		}
	})
}

// TestProbe: registration's check reads the power and flags a BMC that
// accepts cipher suite 0 (ipmi_sim, as configured here, does).
func TestProbe(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	b, err := h.creds(t.Context(), m.ref)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.d.Probe(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	if p.On || !p.AcceptsSuite0 {
		t.Errorf("Probe = %+v, want off and accepting suite 0", p)
	}
	b.Password = []byte("wrong-password")
	if _, err := h.d.Probe(t.Context(), b); !errors.Is(err, ipmi.ErrAuth) {
		t.Errorf("Probe with a wrong password: %v, want ErrAuth", err)
	}
}

// TestSoftOffIsPressedOncePerShutdown: the engine asks again while a
// server stays on; the driver presses the power button once per shutdown,
// and again for the next shutdown after a boot, however soon.
func TestSoftOffIsPressedOncePerShutdown(t *testing.T) {
	ipmitest.EnsureTools(t)
	h := newHarness(t)
	m := h.newBMC(t)
	ctx := t.Context()
	m.chassis.ShutdownDelay = time.Second
	if err := m.chassis.SetPower(true); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := h.d.Shutdown(ctx, m.ref); err != nil {
			t.Fatal(err)
		}
	}
	waitOff := func() {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := h.d.State(ctx, m.ref)
			if err == nil && st == driver.PowerStopped {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not stopped: %s, %v", st, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitOff()
	if err := h.d.Start(ctx, m.ref); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Shutdown(ctx, m.ref); err != nil {
		t.Fatal(err)
	}
	waitOff()
	want := []string{"set shutdown 1", "set power 1", "set shutdown 1"}
	if got := m.sim.Commands(); !slices.Equal(got, want) {
		t.Errorf("chassis commands %q, want %q", got, want)
	}
}
