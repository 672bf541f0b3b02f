// Package sim is a SIMULATED fleet of machines for the demo
// (fleetpass serve --demo), service tests and load tests. It is not a driver
// for real machines: nothing here boots, stops or logs into anything.
//
// One *Fleet implements driver.Power, driver.Guest and driver.Stager. Each
// machine is addressed by its id in driver.Ref.Address and has an OS type, a
// set of users, a power state, a boot and a shutdown time, and faults that
// tests and the demo inject at run time (see Faults).
//
// Power transitions are computed from timestamps, not run by goroutines: a
// machine that began stopping at t0 with a shutdown time d reads
// driver.PowerStopping until t0+d and driver.PowerStopped from then on; a
// starting machine becomes running the same way, and that is the moment it
// applies passwords staged for it. The clock is injectable (Options.Now).
//
// # Where the fleet lives
//
//   - NewMemory: in memory only, for unit tests.
//   - Open: in memory, written through to a SQLite file before each call
//     returns, so a server killed with SIGKILL finds its machines as they
//     were, including transitions in flight. One process at a time may
//     open the file. This is the fleet of a server on SQLite: it is the
//     fastest, and such a server is alone anyway.
//   - OpenDB: in a table (sim_machines) of a SQL database, PostgreSQL or
//     SQLite, with nothing kept in memory, so that several Fleet values (the
//     replicas of a server on PostgreSQL, and the tests that watch them)
//     share one fleet. Every call that changes a machine is one
//     transaction that locks the machine's row, settles it, applies the
//     call and writes it back; a call that only reads reads the row once. On
//     PostgreSQL the times come from the database's clock, which all
//     replicas agree on; elsewhere from Options.Now or the local clock.
//
// # Detecting concurrent actions
//
// Tests of several replicas need to know that no machine was ever acted on
// by two of them at once, and that each password change took effect
// exactly once. Each mutating driver call (Start, Shutdown, Stop,
// SetPassword, Stage) marks its machine busy for Options.ActionTime,
// during which the call does not return; a mutating call that begins
// while another call's mark is live is an overlap. Fleet.Overlaps sums the
// overlaps of every machine, Snapshot.Overlaps and Snapshot.Applied give
// them per machine, and Fleet.Applied the number of password changes that
// took effect on one (a SetPassword, or a staged password applied at
// boot). With ActionTime zero (the default) calls take no time and no
// overlap can be seen. A mark left by a process that died expires by
// itself.
//
// Passwords are secrets even here: the fleet keeps only salted verifiers of
// them (never the passwords), never logs them and never puts them in errors.
//
// Error conventions, on top of those of package driver:
//   - an unknown machine id: an error wrapping driver.ErrMachineNotFound;
//   - Ping or SetPassword on a machine that is not running (stopped, starting,
//     stopping): an error wrapping driver.ErrGuestNotAlive, which is what a
//     real guest channel reports for a machine that is off, and also
//     driver.ErrNotRunning, so callers that know the difference can use it;
//   - Start on a stopping machine: a transient error (retry once it stopped);
//   - Stage on a running machine: an error (use SetPassword instead), because
//     a password staged on a running machine would be applied at some later
//     boot and could undo a newer change.
package sim

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// OS is a machine's operating system type.
type OS string

// Operating system types.
const (
	Linux   OS = "linux"
	Windows OS = "windows"
)

// DefaultUser is the administrator account of machines of type o: root on
// Linux, Administrator on Windows.
func (o OS) DefaultUser() string {
	if o == Windows {
		return "Administrator"
	}
	return "root"
}

// Faults are the failures a machine is told to simulate. The zero value is a
// healthy machine.
type Faults struct {
	// HangShutdown makes graceful shutdowns hang: Shutdown is accepted and
	// the machine reads stopping for as long as the fault is set. A forced
	// Stop still works. Clearing the fault lets a hung shutdown finish.
	HangShutdown bool
	// AgentDead makes the guest agent not answer: Ping and SetPassword fail
	// with driver.ErrGuestNotAlive, and staged passwords are not applied at
	// boot (they stay staged for a later boot with a live agent).
	AgentDead bool
	// Transient is how many of the next calls to the machine's driver
	// methods (State, Start, Shutdown, Stop, Ping, SetPassword, Stage) fail
	// with a driver.Transient error. Each failed call uses up one.
	Transient int
}

// Machine describes a machine to register with Add.
type Machine struct {
	// ID is the machine's address (driver.Ref.Address). Required.
	ID string
	// OS is linux or windows; empty means linux.
	OS OS
	// Users are the accounts on the machine, initially without a password
	// (no password verifies). Empty means the OS's default user.
	Users []string
	// Running registers the machine as running; otherwise it is stopped.
	Running bool
	// BootTime and ShutdownTime are how long starting and a graceful
	// shutdown take. Zero means instant.
	BootTime     time.Duration
	ShutdownTime time.Duration
	// Faults are the failures to simulate from the start.
	Faults Faults
}

// Snapshot is a machine as Get and List see it.
type Snapshot struct {
	// Machine is the machine as it would be registered now: Users sorted,
	// Running true when Power is running, Faults as currently set.
	Machine
	// Power is the power state at the time of the snapshot.
	Power driver.PowerState
	// Since is when the machine entered Power (for starting and stopping,
	// when the transition began).
	Since time.Time
	// Staged lists, sorted, the users with a password staged for the next
	// boot.
	Staged []string
	// Applied is how many password changes took effect on the machine: one
	// per successful SetPassword, and one per staged password applied at
	// boot.
	Applied int
	// Overlaps is how many mutating calls began while another one was in
	// progress on the machine (see Options.ActionTime).
	Overlaps int
}

// Options configure a Fleet.
type Options struct {
	// Now is the fleet's clock; nil means the database's clock for a fleet
	// opened with OpenDB on PostgreSQL, time.Now otherwise. Tests pass a
	// fake clock to step through transitions without sleeping.
	Now func() time.Time
	// ActionTime is how long each mutating driver call (Start, Shutdown,
	// Stop, SetPassword, Stage) holds its machine's busy mark, and so
	// takes: the window in which a concurrent call is counted as an
	// overlap. The call's effect happens at its start. Zero: instant.
	ActionTime time.Duration
}

// ErrMachineExists is returned by Add for an id that is already registered.
var ErrMachineExists = errors.New("machine already exists")

// ErrClosed is returned by calls on a Fleet after Close.
var ErrClosed = errors.New("sim: fleet is closed")

// Fleet is a simulated fleet. It is safe for concurrent use.
type Fleet struct {
	b          backend
	actionTime time.Duration
}

// backend is where a fleet's machines live: memory (optionally written
// through to a file) or a database table.
type backend interface {
	// time is the backend's clock: the time a new machine's state begins.
	time(ctx context.Context) (time.Time, error)
	remove(ctx context.Context, id string) error
	// update runs fn on a copy of machine id's state, under a lock on
	// that machine, at the time now, and stores the copy when fn reports
	// a change. fn may run more than once (a retried transaction, or a
	// read first) and must set everything it reports from scratch each
	// time. readMostly says fn seldom changes anything: a backend may run
	// it on an unlocked read first, and take the lock only when it does.
	update(ctx context.Context, id string, readMostly bool, fn func(s *state, now time.Time) bool) error
	// insert registers a machine with the state s as it is
	// (ErrMachineExists if id is taken).
	insert(ctx context.Context, id string, s state) error
	// list returns every machine, sorted by id, as of one moment.
	list(ctx context.Context) ([]Snapshot, error)
	overlaps(ctx context.Context) (int, error)
	close() error
}

// NewMemory returns a fleet that keeps its machines in memory only.
func NewMemory(opts Options) *Fleet {
	return &Fleet{b: newMemory(clockOf(opts), nil, nil), actionTime: opts.ActionTime}
}

// Open opens the fleet stored in the SQLite file at path, creating it if
// needed, and loads its machines. Path ":memory:" is the same as NewMemory.
// Only one Fleet at a time may have a file open; a second Open of the same
// file fails rather than let two fleets diverge.
func Open(ctx context.Context, path string, opts Options) (*Fleet, error) {
	if path == ":memory:" {
		return NewMemory(opts), nil
	}
	st, states, err := openStore(ctx, path)
	if err != nil {
		return nil, err
	}
	return &Fleet{b: newMemory(clockOf(opts), st, states), actionTime: opts.ActionTime}, nil
}

// clockOf is opts's clock in UTC without the monotonic reading, so that
// times are the same before and after a round trip through storage.
func clockOf(opts Options) func() time.Time {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return func() time.Time { return now().Round(0).UTC() }
}

// Close closes the fleet. It closes the fleet's file, if it has one, but
// not a database given to OpenDB. Calls made after Close fail with
// ErrClosed.
func (f *Fleet) Close() error { return f.b.close() }

// Add registers a machine.
func (f *Fleet) Add(ctx context.Context, m Machine) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: add machine %q: %w", m.ID, err)
	}
	if err := f.add(ctx, m); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("sim: add machine %q: %w", m.ID, err)
	}
	return nil
}

// add registers m with its state as of the backend's clock, one path for
// every backend.
func (f *Fleet) add(ctx context.Context, m Machine) error {
	now, err := f.b.time(ctx)
	if err != nil {
		return err
	}
	st, err := newState(m, now)
	if err != nil {
		return err
	}
	return f.b.insert(ctx, m.ID, st)
}

// Remove unregisters a machine.
func (f *Fleet) Remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: remove machine %q: %w", id, err)
	}
	if err := f.b.remove(ctx, id); err != nil {
		if errors.Is(err, ErrClosed) || errors.Is(err, driver.ErrMachineNotFound) {
			return err
		}
		return fmt.Errorf("sim: remove machine %q: %w", id, err)
	}
	return nil
}

// Get returns a snapshot of a machine.
func (f *Fleet) Get(ctx context.Context, id string) (Snapshot, error) {
	var snap Snapshot
	err := f.do(ctx, id, "get machine", false, false, "", func(s *state, _ time.Time) (bool, error) {
		snap = s.snapshot(id)
		return false, nil
	})
	return snap, err
}

// List returns snapshots of all machines, sorted by id.
func (f *Fleet) List(ctx context.Context) ([]Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim: list machines: %w", err)
	}
	snaps, err := f.b.list(ctx)
	if err != nil && !errors.Is(err, ErrClosed) {
		return nil, fmt.Errorf("sim: list machines: %w", err)
	}
	return snaps, err
}

// Import copies into f every machine of src that f does not have, as it
// is: users with their password verifiers, staged passwords, power state
// and transitions in flight, faults and counters. It moves a fleet from
// its file to a database (a server moved to PostgreSQL). It returns how
// many machines it copied.
func (f *Fleet) Import(ctx context.Context, src *Fleet) (int, error) {
	snaps, err := src.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, snap := range snaps {
		var st state
		err := src.b.update(ctx, snap.ID, true, func(s *state, _ time.Time) bool {
			st = s.clone()
			return false
		})
		if errors.Is(err, driver.ErrMachineNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return n, fmt.Errorf("sim: import machine %q: %w", snap.ID, err)
		}
		switch err := f.b.insert(ctx, snap.ID, st); {
		case errors.Is(err, ErrMachineExists):
		case err != nil:
			return n, fmt.Errorf("sim: import machine %q: %w", snap.ID, err)
		default:
			n++
		}
	}
	return n, nil
}

// Overlaps is the number of mutating calls, summed over every machine,
// that began while another mutating call on the same machine was in
// progress: zero when no machine was ever acted on twice at once. It sees
// overlaps only when calls take time (Options.ActionTime; with OpenDB, the
// ActionTime of the Fleet values that made the calls).
func (f *Fleet) Overlaps(ctx context.Context) (int, error) {
	n, err := f.b.overlaps(ctx)
	if err != nil && !errors.Is(err, ErrClosed) {
		return 0, fmt.Errorf("sim: count overlaps: %w", err)
	}
	return n, err
}

// Applied is the number of password changes that took effect on machine
// id (see Snapshot.Applied).
func (f *Fleet) Applied(ctx context.Context, id string) (int, error) {
	s, err := f.Get(ctx, id)
	return s.Applied, err
}

// SetFaults replaces the faults a machine simulates. Transitions that ended
// before the change are settled under the old faults first.
func (f *Fleet) SetFaults(ctx context.Context, id string, faults Faults) error {
	if faults.Transient < 0 {
		return fmt.Errorf("sim: set faults of machine %q: negative transient count %d", id, faults.Transient)
	}
	return f.do(ctx, id, "set faults", false, true, "", func(s *state, _ time.Time) (bool, error) {
		s.faults = faults
		return true, nil
	})
}

// CheckPassword reports whether password is the current password of the
// user called name on machine id, as a login would check it. It ignores
// faults and the power state. A user whose password was never set matches no
// password.
func (f *Fleet) CheckPassword(ctx context.Context, id, name string, password []byte) (bool, error) {
	var ok bool
	err := f.do(ctx, id, "check password", false, false, "", func(s *state, _ time.Time) (bool, error) {
		u, exists := s.users[name]
		if !exists {
			return false, fmt.Errorf("user %q: %w", name, driver.ErrUserNotFound)
		}
		ok = u.verifier.matches(password)
		return false, nil
	})
	return ok, err
}

// do runs fn on a settled copy of machine id's state under the machine's lock
// and stores the copy if it changed. fn reports whether it changed the state;
// it must not change it when it returns an error. With faults set, the call
// first uses up an injected transient fault, if any. A write is a call
// that changes the machine, as a rule; with a mark, it is a mutating
// driver call, which marks the machine busy until ActionTime from now (see
// state.mark), even when it fails.
func (f *Fleet) do(ctx context.Context, id, op string, faults, write bool, mark string,
	fn func(s *state, now time.Time) (bool, error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: %s on machine %q: %w", op, id, err)
	}
	var opErr error
	err := f.b.update(ctx, id, !write, func(s *state, now time.Time) bool {
		opErr = nil
		changed := s.settle(now)
		if mark != "" {
			s.mark(mark, now, now.Add(f.actionTime))
			changed = true
		}
		if faults && s.faults.Transient > 0 {
			s.faults.Transient--
			opErr = driver.Transientf("sim: %s on machine %q: injected transient fault", op, id)
			return true
		}
		c, err := fn(s, now)
		if err != nil {
			opErr = fmt.Errorf("sim: %s on machine %q: %w", op, id, err)
		}
		return changed || c
	})
	if err != nil {
		if errors.Is(err, ErrClosed) || errors.Is(err, driver.ErrMachineNotFound) {
			return err
		}
		err = fmt.Errorf("sim: %s on machine %q: %w", op, id, err)
		if ctx.Err() != nil {
			return err
		}
		// The fleet's storage failed (a database restarting): as for a
		// real machine whose link dropped, trying again later may work.
		return driver.Transient(err)
	}
	return opErr
}

// act runs a mutating driver call: do with a busy mark held for
// ActionTime, during which the call does not return.
func (f *Fleet) act(ctx context.Context, id, op string, fn func(s *state, now time.Time) (bool, error)) error {
	if f.actionTime <= 0 {
		return f.do(ctx, id, op, true, true, "", fn)
	}
	token := rand.Text()
	err := f.do(ctx, id, op, true, true, token, fn)
	if errors.Is(err, driver.ErrMachineNotFound) || errors.Is(err, ErrClosed) {
		return err
	}
	t := time.NewTimer(f.actionTime)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	// The mark ends with the call even when the caller gave up; should
	// this fail, the mark expires at its time anyway.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = f.b.update(uctx, id, false, func(s *state, _ time.Time) bool { return s.unmark(token) })
	if err == nil && ctx.Err() != nil {
		return fmt.Errorf("sim: %s on machine %q: %w", op, id, ctx.Err())
	}
	return err
}

func notFound(id string) error {
	return fmt.Errorf("sim: machine %q: %w", id, driver.ErrMachineNotFound)
}
