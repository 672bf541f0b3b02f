package drivertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// call returns a context for one driver call, bounded by CallTimeout. It is
// released when the test ends; loops that call many times use callCtx.
func (s *suite) call(t testing.TB) context.Context {
	ctx, cancel := s.callCtx(t)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) callCtx(t testing.TB) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), s.cfg.CallTimeout)
}

func (s *suite) needPower(t testing.TB) {
	t.Helper()
	if s.power == nil {
		t.Skip("harness has no power driver")
	}
}

func (s *suite) needGuest(t testing.TB) {
	t.Helper()
	if s.guest == nil {
		t.Skip("harness has no guest channel")
	}
}

// machine asks the harness for a machine with the suite's user on it.
func (s *suite) machine(t testing.TB, spec MachineSpec) driver.Ref {
	t.Helper()
	if spec.HangShutdown && !s.cfg.CanHangShutdown {
		t.Skip("harness cannot make a machine whose shutdown hangs")
	}
	if spec.DeadAgent && !s.cfg.CanKillAgent {
		t.Skip("harness cannot make a machine with a dead guest agent")
	}
	if spec.Users == nil {
		spec.Users = []string{s.cfg.User}
	}
	return s.h.NewMachine(t, spec)
}

// state reads the power state once and fails t on error.
func (s *suite) state(t testing.TB, ref driver.Ref) driver.PowerState {
	t.Helper()
	ctx, cancel := s.callCtx(t)
	defer cancel()
	p, err := s.power.State(ctx, ref)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	return p
}

// pause waits for d or until the test ends.
func pause(t testing.TB, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.Context().Done():
		t.Fatal("test ended while waiting")
	}
}

// waitState polls State until it reads want, failing t at the deadline or
// when it reads a state outside allowed (the states the machine may pass on
// its way to want). Transient errors are retried, as the engine does.
func (s *suite) waitState(t testing.TB, ref driver.Ref, want driver.PowerState, allowed ...driver.PowerState) {
	t.Helper()
	deadline := time.Now().Add(s.cfg.TransitionTimeout)
	var last driver.PowerState
	var lastErr error
	for {
		ctx, cancel := s.callCtx(t)
		got, err := s.power.State(ctx, ref)
		cancel()
		switch {
		case err == nil && got == want:
			return
		case err == nil && !slices.Contains(allowed, got):
			t.Fatalf("waiting for %s: State read %s, want one of %s", want, got, append(allowed, want))
		case err != nil && !driver.IsTransient(err):
			t.Fatalf("waiting for %s: State: %v", want, err)
		}
		last, lastErr = got, err
		if time.Now().After(deadline) {
			t.Fatalf("machine not %s after %v: last State %s, %v", want, s.cfg.TransitionTimeout, last, lastErr)
		}
		pause(t, s.cfg.PollInterval)
	}
}

// waitGuest polls Ping until the guest channel answers. A channel that is
// not alive yet, or a transient error, is retried until the deadline.
func (s *suite) waitGuest(t testing.TB, ref driver.Ref) {
	t.Helper()
	deadline := time.Now().Add(s.cfg.TransitionTimeout)
	for {
		ctx, cancel := s.callCtx(t)
		err := s.guest.Ping(ctx, ref)
		cancel()
		if err == nil {
			return
		}
		if !errors.Is(err, driver.ErrGuestNotAlive) && !driver.IsTransient(err) {
			t.Fatalf("waiting for the guest: Ping: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest not answering after %v: %v", s.cfg.TransitionTimeout, err)
		}
		pause(t, s.cfg.PollInterval)
	}
}

// newPassword returns a password no other sub-test uses, with lower and upper
// case letters, digits and a symbol, 15 characters long, so that it passes
// every password policy fleetpass knows.
func newPassword() []byte {
	return []byte("p" + strings.ToLower(rand.Text()[:6]) + rand.Text()[:6] + "9x!")
}

// setPassword calls SetPassword with a copy of password and wipes the copy
// afterwards, as the engine does, so that an implementation keeping a
// reference to the buffer fails the checks that follow.
func (s *suite) setPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	buf := slices.Clone(password)
	defer clear(buf)
	return s.guest.SetPassword(ctx, ref, user, buf)
}

// stage is setPassword for Stage.
func (s *suite) stage(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	buf := slices.Clone(password)
	defer clear(buf)
	return s.stager.Stage(ctx, ref, user, buf)
}

func (s *suite) mustSetPassword(t testing.TB, ref driver.Ref, user string, password []byte) {
	t.Helper()
	if err := s.setPassword(s.call(t), ref, user, password); err != nil {
		t.Fatalf("SetPassword(%q): %s", user, safe(err, password))
	}
}

// checkPassword fails t unless the harness's login check gives want.
func (s *suite) checkPassword(t testing.TB, ref driver.Ref, user string, password []byte, want bool, which string) {
	t.Helper()
	if got := s.h.CheckPassword(t, ref, user, password); got != want {
		t.Errorf("CheckPassword(%q, %s password) = %v, want %v", user, which, got, want)
	}
}

// wantErr fails t unless err wraps target, and checks that err does not give
// password away.
func wantErr(t testing.TB, call string, err, target error, password []byte) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %s, want one wrapping %q", call, safe(err, password), target)
	}
	noSecret(t, err, password)
}

// safe returns err's message for a test log, unless it shows password.
func safe(err error, password []byte) string {
	if err == nil {
		return "<nil>"
	}
	if leak(err, password) != nil {
		return fmt.Sprintf("<message of a %T withheld: it shows the password>", err)
	}
	return err.Error()
}

// noSecret fails t when err, or any error it wraps, shows password in its
// message.
func noSecret(t testing.TB, err error, password []byte) {
	t.Helper()
	if e := leak(err, password); e != nil {
		t.Errorf("error of type %T shows the password in its message", e)
	}
}

// leak returns the first error in err's chain whose message shows password,
// or nil.
func leak(err error, password []byte) error {
	if len(password) == 0 {
		return nil
	}
	for _, e := range chain(err) {
		for _, msg := range []string{e.Error(), fmt.Sprintf("%+v", e)} {
			if strings.Contains(msg, string(password)) {
				return e
			}
		}
	}
	return nil
}

// chain returns err and every error it wraps, depth first.
func chain(err error) []error {
	if err == nil {
		return nil
	}
	out := []error{err}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		out = append(out, chain(u.Unwrap())...)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, chain(e)...)
		}
	}
	return out
}
