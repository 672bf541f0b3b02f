package sim

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// memory keeps a fleet's machines in a map, optionally written through to
// a file (store) before each change is visible.
type memory struct {
	now   func() time.Time
	store *fileStore // nil: memory only

	// mu guards machines. Lock order: mu before machine.mu; operations on
	// one machine release mu before taking machine.mu, so a slow write on
	// one machine never blocks the others.
	mu       sync.RWMutex
	machines map[string]*machine
	// closed is atomic so that a call holding only a machine lock can
	// check it without breaking the lock order.
	closed atomic.Bool
}

// machine is one registered machine. st is replaced, never changed in place,
// so a failed write leaves it as it was.
type machine struct {
	mu      sync.Mutex
	removed bool
	st      state
}

func newMemory(now func() time.Time, st *fileStore, states map[string]state) *memory {
	m := &memory{now: now, store: st, machines: make(map[string]*machine, len(states))}
	for id, s := range states {
		m.machines[id] = &machine{st: s}
	}
	return m
}

func (b *memory) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Swap(true) {
		return nil
	}
	if b.store == nil {
		return nil
	}
	// Waiting for every machine lock makes sure no write is in flight when
	// the database goes away.
	for _, m := range b.machines {
		m.mu.Lock()
		defer m.mu.Unlock()
	}
	return b.store.close()
}

func (b *memory) time(context.Context) (time.Time, error) { return b.now(), nil }

func (b *memory) insert(ctx context.Context, id string, st state) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	if _, ok := b.machines[id]; ok {
		return ErrMachineExists
	}
	if b.store != nil {
		if err := b.store.insertMachine(ctx, id, st); err != nil {
			return err
		}
	}
	b.machines[id] = &machine{st: st}
	return nil
}

func (b *memory) remove(ctx context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return ErrClosed
	}
	m, ok := b.machines[id]
	if !ok {
		return notFound(id)
	}
	// Holding the machine lock while it is marked removed makes a call that
	// looked the machine up earlier fail instead of writing it back.
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.store != nil {
		if err := b.store.deleteMachine(ctx, id); err != nil {
			return err
		}
	}
	m.removed = true
	delete(b.machines, id)
	return nil
}

func (b *memory) lookup(id string) (*machine, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	m, ok := b.machines[id]
	if !ok {
		return nil, notFound(id)
	}
	return m, nil
}

func (b *memory) update(ctx context.Context, id string, _ bool, fn func(s *state, now time.Time) bool) error {
	m, err := b.lookup(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.removed {
		return notFound(id)
	}
	if b.closed.Load() { // closed while we waited for the lock
		return ErrClosed
	}
	s := m.st.clone()
	if !fn(&s, b.now()) {
		return nil
	}
	if b.store != nil {
		if err := b.store.updateMachine(ctx, id, s); err != nil {
			return err
		}
	}
	m.st = s
	return nil
}

func (b *memory) list(ctx context.Context) ([]Snapshot, error) {
	b.mu.RLock()
	if b.closed.Load() {
		b.mu.RUnlock()
		return nil, ErrClosed
	}
	ids := make([]string, 0, len(b.machines))
	for id := range b.machines {
		ids = append(ids, id)
	}
	b.mu.RUnlock()
	slices.Sort(ids)

	snaps := make([]Snapshot, 0, len(ids))
	for _, id := range ids {
		var snap Snapshot
		err := b.update(ctx, id, true, func(s *state, now time.Time) bool {
			changed := s.settle(now)
			snap = s.snapshot(id)
			return changed
		})
		if errors.Is(err, driver.ErrMachineNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, snap)
	}
	return snaps, nil
}

func (b *memory) overlaps(ctx context.Context) (int, error) {
	b.mu.RLock()
	if b.closed.Load() {
		b.mu.RUnlock()
		return 0, ErrClosed
	}
	ms := make([]*machine, 0, len(b.machines))
	for _, m := range b.machines {
		ms = append(ms, m)
	}
	b.mu.RUnlock()
	n := 0
	for _, m := range ms {
		m.mu.Lock()
		n += m.st.overlaps
		m.mu.Unlock()
	}
	return n, ctx.Err()
}
