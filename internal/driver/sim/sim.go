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
// A Fleet opened with Open is durable: every change is written through to a
// SQLite file before the call returns, so a server killed with SIGKILL finds
// its machines as they were, including transitions in flight. NewMemory makes
// a fleet that lives in memory only, for unit tests.
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
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
}

// Options configure a Fleet.
type Options struct {
	// Now is the fleet's clock; nil means time.Now. Tests pass a fake clock
	// to step through transitions without sleeping.
	Now func() time.Time
}

// ErrMachineExists is returned by Add for an id that is already registered.
var ErrMachineExists = errors.New("machine already exists")

// ErrClosed is returned by calls on a Fleet after Close.
var ErrClosed = errors.New("sim: fleet is closed")

// Fleet is a simulated fleet. It is safe for concurrent use.
type Fleet struct {
	now   func() time.Time
	store *store // nil for an in-memory fleet

	// mu guards machines. Lock order: mu before machine.mu; operations on
	// one machine release mu before taking machine.mu, so a slow write on
	// one machine never blocks the others.
	mu       sync.RWMutex
	machines map[string]*machine
	// closed is atomic so that a call holding only a machine lock can
	// check it without breaking the lock order.
	closed atomic.Bool
}

// NewMemory returns a fleet that keeps its machines in memory only.
func NewMemory(opts Options) *Fleet {
	return newFleet(opts, nil, nil)
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
	return newFleet(opts, st, states), nil
}

func newFleet(opts Options, st *store, states map[string]state) *Fleet {
	f := &Fleet{
		now:      opts.Now,
		store:    st,
		machines: make(map[string]*machine, len(states)),
	}
	if f.now == nil {
		f.now = time.Now
	}
	for id, s := range states {
		f.machines[id] = &machine{st: s}
	}
	return f
}

// Close closes the fleet's file, if it has one. Calls made after Close fail
// with ErrClosed.
func (f *Fleet) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Swap(true) {
		return nil
	}
	if f.store == nil {
		return nil
	}
	// Waiting for every machine lock makes sure no write is in flight when
	// the database goes away.
	for _, m := range f.machines {
		m.mu.Lock()
		defer m.mu.Unlock()
	}
	return f.store.close()
}

// Add registers a machine.
func (f *Fleet) Add(ctx context.Context, m Machine) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: add machine %q: %w", m.ID, err)
	}
	st, err := newState(m, f.clock())
	if err != nil {
		return fmt.Errorf("sim: add machine %q: %w", m.ID, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	if _, ok := f.machines[m.ID]; ok {
		return fmt.Errorf("sim: add machine %q: %w", m.ID, ErrMachineExists)
	}
	if f.store != nil {
		if err := f.store.insertMachine(ctx, m.ID, st); err != nil {
			return fmt.Errorf("sim: add machine %q: %w", m.ID, err)
		}
	}
	f.machines[m.ID] = &machine{st: st}
	return nil
}

// Remove unregisters a machine.
func (f *Fleet) Remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: remove machine %q: %w", id, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed.Load() {
		return ErrClosed
	}
	m, ok := f.machines[id]
	if !ok {
		return notFound(id)
	}
	// Holding the machine lock while it is marked removed makes a call that
	// looked the machine up earlier fail instead of writing it back.
	m.mu.Lock()
	defer m.mu.Unlock()
	if f.store != nil {
		if err := f.store.deleteMachine(ctx, id); err != nil {
			return fmt.Errorf("sim: remove machine %q: %w", id, err)
		}
	}
	m.removed = true
	delete(f.machines, id)
	return nil
}

// Get returns a snapshot of a machine.
func (f *Fleet) Get(ctx context.Context, id string) (Snapshot, error) {
	var snap Snapshot
	err := f.do(ctx, id, "get machine", false, func(s *state, _ time.Time) (bool, error) {
		snap = s.snapshot(id)
		return false, nil
	})
	return snap, err
}

// List returns snapshots of all machines, sorted by id.
func (f *Fleet) List(ctx context.Context) ([]Snapshot, error) {
	if f.closed.Load() {
		return nil, ErrClosed
	}
	f.mu.RLock()
	ids := make([]string, 0, len(f.machines))
	for id := range f.machines {
		ids = append(ids, id)
	}
	f.mu.RUnlock()
	slices.Sort(ids)

	snaps := make([]Snapshot, 0, len(ids))
	for _, id := range ids {
		s, err := f.Get(ctx, id)
		if errors.Is(err, driver.ErrMachineNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, s)
	}
	return snaps, nil
}

// SetFaults replaces the faults a machine simulates. Transitions that ended
// before the change are settled under the old faults first.
func (f *Fleet) SetFaults(ctx context.Context, id string, faults Faults) error {
	if faults.Transient < 0 {
		return fmt.Errorf("sim: set faults of machine %q: negative transient count %d", id, faults.Transient)
	}
	return f.do(ctx, id, "set faults", false, func(s *state, _ time.Time) (bool, error) {
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
	err := f.do(ctx, id, "check password", false, func(s *state, _ time.Time) (bool, error) {
		u, exists := s.users[name]
		if !exists {
			return false, fmt.Errorf("user %q: %w", name, driver.ErrUserNotFound)
		}
		ok = u.verifier.matches(password)
		return false, nil
	})
	return ok, err
}

// machine is one registered machine. st is replaced, never changed in place,
// so a failed write leaves it as it was.
type machine struct {
	mu      sync.Mutex
	removed bool
	st      state
}

// clock reads the fleet's clock in UTC without the monotonic reading, so
// that times are the same before and after a round trip through the file.
func (f *Fleet) clock() time.Time {
	return f.now().Round(0).UTC()
}

// do runs fn on a settled copy of machine id's state under the machine's lock
// and stores the copy if it changed. fn reports whether it changed the state;
// it must not change it when it returns an error. With faults set, the call
// first uses up an injected transient fault, if any.
func (f *Fleet) do(ctx context.Context, id, op string, faults bool, fn func(s *state, now time.Time) (bool, error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: %s on machine %q: %w", op, id, err)
	}
	if f.closed.Load() {
		return ErrClosed
	}
	f.mu.RLock()
	m, ok := f.machines[id]
	f.mu.RUnlock()
	if !ok {
		return notFound(id)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if f.closed.Load() { // closed while we waited for the lock
		return ErrClosed
	}
	if m.removed {
		return notFound(id)
	}
	now := f.clock()
	s := m.st.clone()
	changed := s.settle(now)

	var opErr error
	if faults && s.faults.Transient > 0 {
		s.faults.Transient--
		changed = true
		opErr = driver.Transientf("sim: %s on machine %q: injected transient fault", op, id)
	} else {
		var c bool
		c, opErr = fn(&s, now)
		changed = changed || c
		if opErr != nil {
			opErr = fmt.Errorf("sim: %s on machine %q: %w", op, id, opErr)
		}
	}
	if !changed {
		return opErr
	}
	if f.store != nil {
		if err := f.store.updateMachine(ctx, id, s); err != nil {
			return fmt.Errorf("sim: %s on machine %q: %w", op, id, err)
		}
	}
	m.st = s
	return opErr
}

func notFound(id string) error {
	return fmt.Errorf("sim: machine %q: %w", id, driver.ErrMachineNotFound)
}
