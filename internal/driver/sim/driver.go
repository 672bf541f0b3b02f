package sim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

var (
	_ driver.Power  = (*Fleet)(nil)
	_ driver.Guest  = (*Fleet)(nil)
	_ driver.Stager = (*Fleet)(nil)
)

// State implements driver.Power.
func (f *Fleet) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	var p driver.PowerState
	err := f.do(ctx, ref.Address, "read state", true, false, "", func(s *state, _ time.Time) (bool, error) {
		p = s.power
		return false, nil
	})
	if err != nil {
		return driver.PowerUnknown, err
	}
	return p, nil
}

// Start implements driver.Power. Start on a stopping machine fails with a
// transient error: the machine can be started once it has stopped.
func (f *Fleet) Start(ctx context.Context, ref driver.Ref) error {
	return f.act(ctx, ref.Address, "start", func(s *state, now time.Time) (bool, error) {
		switch s.power {
		case driver.PowerRunning, driver.PowerStarting:
			return false, nil
		case driver.PowerStopping:
			return false, driver.Transient(errors.New("machine is still stopping"))
		}
		s.power, s.since = driver.PowerStarting, now
		s.settle(now) // a zero boot time ends the boot at once
		return true, nil
	})
}

// Shutdown implements driver.Power. A shutdown during boot interrupts the
// boot: staged passwords stay staged.
func (f *Fleet) Shutdown(ctx context.Context, ref driver.Ref) error {
	return f.act(ctx, ref.Address, "shut down", func(s *state, now time.Time) (bool, error) {
		switch s.power {
		case driver.PowerStopped, driver.PowerStopping:
			return false, nil
		}
		s.power, s.since = driver.PowerStopping, now
		s.settle(now)
		return true, nil
	})
}

// Stop implements driver.Power.
func (f *Fleet) Stop(ctx context.Context, ref driver.Ref) error {
	return f.act(ctx, ref.Address, "stop", func(s *state, now time.Time) (bool, error) {
		if s.power == driver.PowerStopped {
			return false, nil
		}
		s.power, s.since = driver.PowerStopped, now
		return true, nil
	})
}

// Ping implements driver.Guest.
func (f *Fleet) Ping(ctx context.Context, ref driver.Ref) error {
	return f.do(ctx, ref.Address, "ping guest", true, false, "", func(s *state, _ time.Time) (bool, error) {
		return false, s.guestAlive()
	})
}

// SetPassword implements driver.Guest. It also drops a password staged for
// user: the newer password wins.
func (f *Fleet) SetPassword(ctx context.Context, ref driver.Ref, name string, password []byte) error {
	return f.act(ctx, ref.Address, "set password", func(s *state, _ time.Time) (bool, error) {
		if err := s.guestAlive(); err != nil {
			return false, err
		}
		if _, ok := s.users[name]; !ok {
			return false, fmt.Errorf("user %q: %w", name, driver.ErrUserNotFound)
		}
		s.users[name] = user{verifier: newVerifier(password)}
		s.applied++
		return true, nil
	})
}

// Stage implements driver.Stager. The password is applied when the machine
// next finishes booting with a live agent. Staging on a running machine is an
// error.
func (f *Fleet) Stage(ctx context.Context, ref driver.Ref, name string, password []byte) error {
	return f.act(ctx, ref.Address, "stage password", func(s *state, _ time.Time) (bool, error) {
		if s.power == driver.PowerRunning {
			return false, errors.New("machine is running: set the password instead of staging it")
		}
		u, ok := s.users[name]
		if !ok {
			return false, fmt.Errorf("user %q: %w", name, driver.ErrUserNotFound)
		}
		u.staged = newVerifier(password)
		s.users[name] = u
		return true, nil
	})
}

func (s *state) guestAlive() error {
	if s.power != driver.PowerRunning {
		return fmt.Errorf("machine is %s: %w (%w)", s.power, driver.ErrGuestNotAlive, driver.ErrNotRunning)
	}
	if s.faults.AgentDead {
		return fmt.Errorf("no answer from the guest agent: %w", driver.ErrGuestNotAlive)
	}
	return nil
}
