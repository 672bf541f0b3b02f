// Package drivertest is the conformance suite that every power driver and
// guest channel must pass (sim now; libvirt, the QEMU guest agent and the
// fleetpass agent later), so the engine can treat them all alike.
//
// A driver's test supplies a Harness, which makes machines in a requested
// state and checks passwords the way a user would (for a real machine, by
// logging in), and calls Run:
//
//	func TestConformance(t *testing.T) {
//		drivertest.Run(t, &myHarness{...})
//	}
//
// The suite never assumes transitions are instant: it polls State (and Ping)
// until a deadline taken from the harness's Config, so the same suite runs
// against simulated machines in milliseconds and real ones in minutes.
//
// Besides the rules written in package driver, the suite pins these, which
// the engine relies on:
//   - a machine on its way up reads stopped, starting or running, and on its
//     way down running, stopping or stopped; never unknown;
//   - Stop stops a machine whose graceful shutdown hangs;
//   - Start on a running machine, Shutdown and Stop on a stopped one, and a
//     second Start, Shutdown or Stop while the first is under way, return
//     nil and change nothing;
//   - Ping and SetPassword on a machine that is not running fail with an
//     error wrapping driver.ErrGuestNotAlive (a channel cannot tell an agent
//     that is dead from one whose machine is off), and so do they when the
//     agent is dead;
//   - an unknown user gives driver.ErrUserNotFound, not a transient error,
//     and leaves the other users' passwords alone;
//   - an unknown machine gives driver.ErrMachineNotFound from every method;
//   - a password staged while the machine is stopped is in force once it
//     has booted and the guest answers, and is applied only once: a later
//     SetPassword is not undone by the next boot;
//   - an implementation keeps no reference to the password buffer: the
//     suite wipes it as soon as the call returns;
//   - no error message, nor that of any error it wraps, shows the password.
package drivertest

import (
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// MachineSpec is the machine a sub-test asks the harness for.
type MachineSpec struct {
	// Running asks for a running machine whose guest channel answers (unless
	// DeadAgent); otherwise the machine is stopped.
	Running bool
	// Users must exist on the machine. A real machine may have more.
	Users []string
	// DeadAgent asks for a machine whose guest channel does not answer
	// although the machine runs. Only asked for when Config.CanKillAgent.
	DeadAgent bool
	// HangShutdown asks for a machine that ignores graceful shutdowns, so
	// only a forced Stop stops it. Only asked for when
	// Config.CanHangShutdown.
	HangShutdown bool
}

// Harness connects the suite to one driver implementation and the machines
// behind it.
type Harness interface {
	// Power returns the power driver under test, or nil for a guest channel
	// that has none (the power sub-tests are then skipped).
	Power() driver.Power
	// Guest returns the guest channel under test, or nil for a power driver
	// that has none. When it also implements driver.Stager, so does the
	// Stager sub-test.
	Guest() driver.Guest
	// Config returns the harness's timeouts and capabilities.
	Config() Config
	// NewMachine makes a fresh machine as spec asks and returns its ref. It
	// returns once the machine is in a stable state: stopped, or running
	// with its guest channel answering (unless spec.DeadAgent). It fails t
	// if it cannot, and registers any clean-up with t.Cleanup.
	NewMachine(t testing.TB, spec MachineSpec) driver.Ref
	// CheckPassword reports whether user can log in to the machine with
	// password, as a user would check it (for a real machine: by logging
	// in). The machine may be stopped only for harnesses that can check
	// without booting it; the suite asks only about running machines.
	CheckPassword(t testing.TB, ref driver.Ref, user string, password []byte) bool
}

// TransientInjector is implemented by harnesses that can make a machine's
// next driver calls fail with transient errors (a simulator can; a real
// machine usually cannot). The Transient sub-tests need it.
type TransientInjector interface {
	// InjectTransient makes the next n calls to any driver method for ref
	// fail with an error that satisfies driver.IsTransient.
	InjectTransient(t testing.TB, ref driver.Ref, n int)
}

// Config holds a harness's timeouts and capabilities. Zero fields take the
// defaults, which suit real virtual machines.
type Config struct {
	// TransitionTimeout bounds each wait for a power transition, and for
	// a guest channel to answer after a boot. Default 2 minutes.
	TransitionTimeout time.Duration
	// PollInterval is the pause between two reads of State or Ping while
	// waiting. Default 500ms.
	PollInterval time.Duration
	// CallTimeout bounds each single driver call. Default 30s.
	CallTimeout time.Duration
	// HangObservation is how long the suite watches a machine whose
	// graceful shutdown hangs to check that it does not stop. It should be
	// longer than a normal shutdown takes. Default 10s.
	HangObservation time.Duration

	// User is an account that exists on every machine the harness makes.
	// Default "root".
	User string
	// UnknownMachine is a ref that the driver does not know. Default: a
	// ref whose Address is "drivertest-no-such-machine".
	UnknownMachine driver.Ref

	// CanHangShutdown: NewMachine can make machines whose graceful shutdown
	// hangs (MachineSpec.HangShutdown).
	CanHangShutdown bool
	// CanKillAgent: NewMachine can make running machines whose guest
	// channel does not answer (MachineSpec.DeadAgent).
	CanKillAgent bool
}

// UnknownUser is the user name the suite uses for a user that does not
// exist; harnesses must not create it.
const UnknownUser = "drivertest-nouser"

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.TransitionTimeout, 2*time.Minute)
	def(&c.PollInterval, 500*time.Millisecond)
	def(&c.CallTimeout, 30*time.Second)
	def(&c.HangObservation, 10*time.Second)
	if c.User == "" {
		c.User = "root"
	}
	if c.UnknownMachine == (driver.Ref{}) {
		c.UnknownMachine = driver.Ref{InstanceID: "ins-drivertest0", Address: "drivertest-no-such-machine"}
	}
	return c
}

// Run runs the conformance suite against h. Sub-tests are named after the
// behaviour they pin down, so a failure reads as the broken rule, e.g.
// Run/Power/StopWhenShutdownHangs.
func Run(t *testing.T, h Harness) {
	s := &suite{h: h, cfg: h.Config().withDefaults(), power: h.Power(), guest: h.Guest()}
	if s.power == nil && s.guest == nil {
		t.Fatal("drivertest: harness has neither a power driver nor a guest channel")
	}
	s.stager, _ = s.guest.(driver.Stager)
	s.injector, _ = h.(TransientInjector)

	t.Run("Power", s.testPower)
	t.Run("Guest", s.testGuest)
	t.Run("Stager", s.testStager)
	t.Run("Transient", s.testTransient)
	t.Run("Secrets", s.testSecrets)
}

type suite struct {
	h        Harness
	cfg      Config
	power    driver.Power
	guest    driver.Guest
	stager   driver.Stager
	injector TransientInjector
}
