package drivertest

import (
	"slices"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

var (
	// onTheWayUp are the states a machine may read between Start and
	// running: a host may report the old state for a moment.
	onTheWayUp = []driver.PowerState{driver.PowerStopped, driver.PowerStarting}
	// onTheWayDown are the states between Shutdown or Stop and stopped.
	onTheWayDown = []driver.PowerState{driver.PowerRunning, driver.PowerStopping}
)

func (s *suite) testPower(t *testing.T) {
	s.needPower(t)

	t.Run("StateOfRunningMachine", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if got := s.state(t, ref); got != driver.PowerRunning {
			t.Errorf("State = %s, want %s", got, driver.PowerRunning)
		}
	})

	t.Run("StateOfStoppedMachine", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{})
		if got := s.state(t, ref); got != driver.PowerStopped {
			t.Errorf("State = %s, want %s", got, driver.PowerStopped)
		}
	})

	t.Run("StartReachesRunning", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{})
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
	})

	t.Run("ShutdownReachesStopped", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
	})

	t.Run("StopReachesStopped", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
	})

	t.Run("StopWhenShutdownHangs", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true, HangShutdown: true})
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		// The machine must go on not stopping for as long as we watch it.
		for end := time.Now().Add(s.cfg.HangObservation); time.Now().Before(end); {
			if got := s.state(t, ref); !slices.Contains(onTheWayDown, got) {
				t.Fatalf("machine whose shutdown hangs reads %s, want one of %s", got, onTheWayDown)
			}
			pause(t, s.cfg.PollInterval)
		}
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
	})

	t.Run("StartWhenRunningIsNoop", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start on a running machine: %v", err)
		}
		if got := s.state(t, ref); got != driver.PowerRunning {
			t.Errorf("State after Start on a running machine = %s, want %s", got, driver.PowerRunning)
		}
		if s.guest != nil {
			// A no-op must not have rebooted the guest.
			if err := s.guest.Ping(s.call(t), ref); err != nil {
				t.Errorf("Ping after Start on a running machine: %v", err)
			}
		}
	})

	t.Run("StartTwice", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{})
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		// The machine is starting or already running: both are no-ops.
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("second Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
	})

	t.Run("ShutdownWhenStoppedIsNoop", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{})
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown on a stopped machine: %v", err)
		}
		if got := s.state(t, ref); got != driver.PowerStopped {
			t.Errorf("State after Shutdown on a stopped machine = %s, want %s", got, driver.PowerStopped)
		}
	})

	t.Run("ShutdownTwice", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		// The machine is stopping or already stopped: both are no-ops.
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
	})

	t.Run("StopWhenStoppedIsNoop", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{})
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("Stop on a stopped machine: %v", err)
		}
		if got := s.state(t, ref); got != driver.PowerStopped {
			t.Errorf("State after Stop on a stopped machine = %s, want %s", got, driver.PowerStopped)
		}
	})

	t.Run("StopTwice", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
	})

	t.Run("RestartAfterShutdown", func(t *testing.T) {
		// The engine's offline cycle: down, then up again with a live guest.
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
		if s.guest != nil {
			s.waitGuest(t, ref)
		}
	})

	t.Run("UnknownMachine", func(t *testing.T) {
		ref := s.cfg.UnknownMachine
		_, err := s.power.State(s.call(t), ref)
		wantErr(t, "State", err, driver.ErrMachineNotFound, nil)
		wantErr(t, "Start", s.power.Start(s.call(t), ref), driver.ErrMachineNotFound, nil)
		wantErr(t, "Shutdown", s.power.Shutdown(s.call(t), ref), driver.ErrMachineNotFound, nil)
		wantErr(t, "Stop", s.power.Stop(s.call(t), ref), driver.ErrMachineNotFound, nil)
	})
}
