package drivertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

func (s *suite) testGuest(t *testing.T) {
	s.needGuest(t)
	user := s.cfg.User

	t.Run("PingAlive", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		if err := s.guest.Ping(s.call(t), ref); err != nil {
			t.Fatalf("Ping on a running machine: %v", err)
		}
	})

	t.Run("SetPasswordReplacesOld", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		old, pw := newPassword(), newPassword()
		s.mustSetPassword(t, ref, user, old)
		s.checkPassword(t, ref, user, old, true, "old")
		s.mustSetPassword(t, ref, user, pw)
		s.checkPassword(t, ref, user, pw, true, "new")
		s.checkPassword(t, ref, user, old, false, "old")
	})

	t.Run("SetPasswordTwiceIsHarmless", func(t *testing.T) {
		// The engine calls SetPassword again after a crash.
		ref := s.machine(t, MachineSpec{Running: true})
		pw := newPassword()
		s.mustSetPassword(t, ref, user, pw)
		s.mustSetPassword(t, ref, user, pw)
		s.checkPassword(t, ref, user, pw, true, "new")
	})

	t.Run("UnknownUser", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true})
		old, pw := newPassword(), newPassword()
		s.mustSetPassword(t, ref, user, old)
		err := s.setPassword(s.call(t), ref, UnknownUser, pw)
		wantErr(t, "SetPassword for an unknown user", err, driver.ErrUserNotFound, pw)
		if driver.IsTransient(err) {
			t.Errorf("SetPassword for an unknown user: error is transient; retrying cannot help")
		}
		s.checkPassword(t, ref, user, old, true, "unchanged")
	})

	t.Run("DeadAgent", func(t *testing.T) {
		ref := s.machine(t, MachineSpec{Running: true, DeadAgent: true})
		pw := newPassword()
		wantErr(t, "Ping", s.guest.Ping(s.call(t), ref), driver.ErrGuestNotAlive, nil)
		err := s.setPassword(s.call(t), ref, user, pw)
		wantErr(t, "SetPassword", err, driver.ErrGuestNotAlive, pw)
		s.checkPassword(t, ref, user, pw, false, "refused")
	})

	t.Run("NotRunning", func(t *testing.T) {
		// A guest channel cannot reach a machine that is off, and says so
		// the way it says so for a dead agent.
		ref := s.machine(t, MachineSpec{})
		pw := newPassword()
		wantErr(t, "Ping", s.guest.Ping(s.call(t), ref), driver.ErrGuestNotAlive, nil)
		err := s.setPassword(s.call(t), ref, user, pw)
		wantErr(t, "SetPassword", err, driver.ErrGuestNotAlive, pw)
	})

	t.Run("UnknownMachine", func(t *testing.T) {
		ref := s.cfg.UnknownMachine
		pw := newPassword()
		wantErr(t, "Ping", s.guest.Ping(s.call(t), ref), driver.ErrMachineNotFound, nil)
		err := s.setPassword(s.call(t), ref, user, pw)
		wantErr(t, "SetPassword", err, driver.ErrMachineNotFound, pw)
	})

	t.Run("ConcurrentMachines", func(t *testing.T) {
		// The engine resets the machines of a batch concurrently.
		const n = 3
		refs := make([]driver.Ref, n)
		pws := make([][]byte, n)
		for i := range refs {
			refs[i], pws[i] = s.machine(t, MachineSpec{Running: true}), newPassword()
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range refs {
			wg.Go(func() {
				errs[i] = s.setPassword(s.call(t), refs[i], user, pws[i])
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("SetPassword on machine %d: %s", i, safe(err, pws[i]))
			}
		}
		for i := range refs {
			s.checkPassword(t, refs[i], user, pws[i], true, fmt.Sprintf("machine %d's new", i))
		}
	})
}

func (s *suite) testStager(t *testing.T) {
	s.needGuest(t)
	s.needPower(t)
	if s.stager == nil {
		t.Skip("guest channel does not implement driver.Stager")
	}
	user := s.cfg.User

	t.Run("StagedWhileStoppedAppliedAfterStart", func(t *testing.T) {
		// The engine's offline reset: shut down, stage, start, confirm.
		ref := s.machine(t, MachineSpec{Running: true})
		old, pw := newPassword(), newPassword()
		s.mustSetPassword(t, ref, user, old)
		if err := s.power.Shutdown(s.call(t), ref); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
		if err := s.stage(s.call(t), ref, user, pw); err != nil {
			t.Fatalf("Stage: %s", safe(err, pw))
		}
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
		s.waitGuest(t, ref)
		s.checkPassword(t, ref, user, pw, true, "staged")
		s.checkPassword(t, ref, user, old, false, "old")
		// The engine still calls SetPassword, which confirms the change.
		s.mustSetPassword(t, ref, user, pw)
		s.checkPassword(t, ref, user, pw, true, "staged")
	})

	t.Run("StagedAppliedOnlyOnce", func(t *testing.T) {
		// A staged password must be dropped once applied, or the next boot
		// would undo any password set since.
		ref := s.machine(t, MachineSpec{})
		staged, pw := newPassword(), newPassword()
		if err := s.stage(s.call(t), ref, user, staged); err != nil {
			t.Fatalf("Stage: %s", safe(err, staged))
		}
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
		s.waitGuest(t, ref)
		s.mustSetPassword(t, ref, user, pw)
		if err := s.power.Stop(s.call(t), ref); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		s.waitState(t, ref, driver.PowerStopped, onTheWayDown...)
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
		s.waitGuest(t, ref)
		s.checkPassword(t, ref, user, pw, true, "new")
		s.checkPassword(t, ref, user, staged, false, "staged")
	})

	t.Run("StagedCheckerKnowsItsOwnStagingOnly", func(t *testing.T) {
		// The engine's offline reset through a StagedChecker: the guest's
		// word on this very staging, and nothing else, confirms it.
		sc, ok := s.stager.(driver.StagedChecker)
		if !ok {
			t.Skip("guest channel does not implement driver.StagedChecker")
		}
		ref := s.machine(t, MachineSpec{})
		key, missing := ref.InstanceID+"/"+t.Name(), ref.InstanceID+"/"+t.Name()+"/missing"
		pw := newPassword()
		stageAs := func(user string, pw []byte, key string) {
			t.Helper()
			buf := slices.Clone(pw)
			defer clear(buf)
			if err := sc.StageAs(s.call(t), ref, user, buf, key); err != nil {
				t.Fatalf("StageAs(%q): %s", user, safe(err, pw))
			}
		}
		stageAs(user, pw, key)
		stageAs(UnknownUser, newPassword(), missing)
		if sc.StagedApplied(s.call(t), ref, user, key) {
			t.Error("StagedApplied before the boot: true, want false")
		}
		if err := s.power.Start(s.call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s.waitState(t, ref, driver.PowerRunning, onTheWayUp...)
		s.waitGuest(t, ref)
		s.checkPassword(t, ref, user, pw, true, "staged")
		for _, c := range []struct {
			user, key string
			want      bool
		}{
			{user, key, true},
			{user, key + "/other", false},
			{UnknownUser, key, false},
			{UnknownUser, missing, false}, // applied at boot, and failed
		} {
			if got := sc.StagedApplied(s.call(t), ref, c.user, c.key); got != c.want {
				t.Errorf("StagedApplied(%q, %q) = %v, want %v", c.user, c.key, got, c.want)
			}
		}
		// Staged again under its key (a crash before the engine recorded
		// the staging): what the guest acknowledged stands.
		stageAs(user, pw, key)
		if !sc.StagedApplied(s.call(t), ref, user, key) {
			t.Error("StagedApplied after staging again under the same key: false, want true")
		}
	})

	t.Run("UnknownMachine", func(t *testing.T) {
		pw := newPassword()
		err := s.stage(s.call(t), s.cfg.UnknownMachine, user, pw)
		wantErr(t, "Stage", err, driver.ErrMachineNotFound, pw)
	})
}

func (s *suite) testTransient(t *testing.T) {
	if s.injector == nil {
		t.Skip("harness cannot inject transient faults")
	}
	user := s.cfg.User

	// Each method fails while faults are injected, with an error the engine
	// retries, and works again afterwards.
	type method struct {
		name    string
		power   bool // needs the power driver, else the guest channel
		running bool
		call    func(t *testing.T, ref driver.Ref, pw []byte) error
	}
	methods := []method{
		{"State", true, true, func(t *testing.T, ref driver.Ref, _ []byte) error {
			_, err := s.power.State(s.call(t), ref)
			return err
		}},
		{"Start", true, false, func(t *testing.T, ref driver.Ref, _ []byte) error {
			return s.power.Start(s.call(t), ref)
		}},
		{"Shutdown", true, true, func(t *testing.T, ref driver.Ref, _ []byte) error {
			return s.power.Shutdown(s.call(t), ref)
		}},
		{"Stop", true, true, func(t *testing.T, ref driver.Ref, _ []byte) error {
			return s.power.Stop(s.call(t), ref)
		}},
		{"Ping", false, true, func(t *testing.T, ref driver.Ref, _ []byte) error {
			return s.guest.Ping(s.call(t), ref)
		}},
		{"SetPassword", false, true, func(t *testing.T, ref driver.Ref, pw []byte) error {
			return s.setPassword(s.call(t), ref, user, pw)
		}},
	}
	if s.stager != nil && s.power != nil {
		methods = append(methods, method{"Stage", false, false, func(t *testing.T, ref driver.Ref, pw []byte) error {
			return s.stage(s.call(t), ref, user, pw)
		}})
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			if m.power {
				s.needPower(t)
			} else {
				s.needGuest(t)
			}
			ref := s.machine(t, MachineSpec{Running: m.running})
			pw := newPassword()
			const n = 2
			s.injector.InjectTransient(t, ref, n)
			for i := range n {
				err := m.call(t, ref, pw)
				if !driver.IsTransient(err) {
					t.Fatalf("%s with a transient fault injected (call %d of %d): error %s, want a transient one",
						m.name, i+1, n, safe(err, pw))
				}
				noSecret(t, err, pw)
			}
			if m.name == "SetPassword" {
				s.checkPassword(t, ref, user, pw, false, "failed")
			}
			if err := m.call(t, ref, pw); err != nil {
				t.Fatalf("%s after the transient faults: %s", m.name, safe(err, pw))
			}
			if m.name == "SetPassword" {
				s.checkPassword(t, ref, user, pw, true, "new")
			}
		})
	}
}

func (s *suite) testSecrets(t *testing.T) {
	s.needGuest(t)
	user := s.cfg.User

	t.Run("ErrorsDoNotContainPassword", func(t *testing.T) {
		// Drive every failure of SetPassword and Stage the harness can
		// produce with one password, and look for it in the errors.
		pw := newPassword()
		type failure struct {
			what string
			err  error
		}
		var failures []failure
		try := func(what string, err error) {
			if err == nil {
				t.Errorf("%s: succeeded, want an error", what)
				return
			}
			failures = append(failures, failure{what, err})
		}

		running := s.machine(t, MachineSpec{Running: true})
		try("SetPassword for an unknown user", s.setPassword(s.call(t), running, UnknownUser, pw))
		try("SetPassword on an unknown machine", s.setPassword(s.call(t), s.cfg.UnknownMachine, user, pw))
		stopped := s.machine(t, MachineSpec{})
		try("SetPassword on a stopped machine", s.setPassword(s.call(t), stopped, user, pw))
		if s.cfg.CanKillAgent {
			dead := s.machine(t, MachineSpec{Running: true, DeadAgent: true})
			try("SetPassword with a dead agent", s.setPassword(s.call(t), dead, user, pw))
		}
		if s.injector != nil {
			s.injector.InjectTransient(t, running, 1)
			try("SetPassword with a transient fault", s.setPassword(s.call(t), running, user, pw))
		}
		if s.stager != nil {
			try("Stage on an unknown machine", s.stage(s.call(t), s.cfg.UnknownMachine, user, pw))
			if s.injector != nil {
				s.injector.InjectTransient(t, stopped, 1)
				try("Stage with a transient fault", s.stage(s.call(t), stopped, user, pw))
			}
		}

		for _, f := range failures {
			if e := leak(f.err, pw); e != nil {
				t.Errorf("%s: error of type %T shows the password in its message", f.what, e)
			}
		}
		if len(failures) == 0 {
			t.Fatal("no failure could be produced")
		}
	})
}
