// Package events carries operation, item and instance changes to the
// clients of /v1/events and to waiters such as /v1/operations/{id}/wait.
//
// Events are rows of the database's event log, written in the same
// transaction as the change they report, so every replica sees every event
// and none is reported for a change that was rolled back. A Bus per process
// follows the log and wakes its readers: a local write pokes it so readers
// of the same process see changes at once, another replica's write by a
// database notification (PostgreSQL), and a slow poll catches anything
// both missed. A Bus with no reader waiting reads nothing: behind a load
// balancer most replicas have none at any moment, and every one of them
// reading every event was work for nobody.
package events

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Event types.
const (
	TypeOperation = "operation"
	TypeItem      = "item"
	TypeInstance  = "instance"
	// TypeRevocation says that a principal's credentials may have ended
	// (a key revoked, a console session signed out or a password
	// changed): open streams and long polls of that principal check
	// whether they still may run. It is never sent to clients.
	TypeRevocation = "revocation"
)

// ringSize is how many recent events a Bus keeps in memory; readers further
// behind read the database.
const ringSize = 8192

// Bus follows the event log.
type Bus struct {
	store *store.Store
	log   *slog.Logger
	poll  time.Duration

	poke chan struct{}

	mu      sync.Mutex
	last    int64            // every event up to it is settled (see Last)
	ring    []store.EventRow // ascending ids without a hole, ending at last
	changed chan struct{}    // closed and replaced when last moves
	readers int              // goroutines waiting in Next or Wait
	// skipped counts wake-ups left unread for want of a reader; covered
	// is how many of those a later read or jump has caught up with. While
	// they differ, the log may have grown past last.
	skipped, covered uint64
}

// behind reports whether the log may have grown past last unread. The
// caller holds b.mu.
func (b *Bus) behind() bool { return b.skipped != b.covered }

// NewBus makes a Bus reading s's event log every poll, and whenever poked:
// by a local commit, or by another replica's through the store's
// wake-ups (PostgreSQL), so the poll is only a safety net.
func NewBus(s *store.Store, log *slog.Logger, poll time.Duration) *Bus {
	b := &Bus{store: s, log: log, poll: poll, poke: make(chan struct{}, 1), changed: make(chan struct{})}
	s.OnNotify(store.NotifyEvents, func(string) { b.Poke() })
	return b
}

// Start reads the position of the log's end; events before it are history.
func (b *Bus) Start(ctx context.Context) error {
	last, err := b.store.LastEventID(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.last = last
	b.mu.Unlock()
	return nil
}

// Run polls the log until ctx ends, and prunes events older than an hour.
func (b *Bus) Run(ctx context.Context) {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	prune := time.NewTicker(10 * time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.poke:
		case <-prune.C:
			if err := b.store.PruneEvents(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
				b.log.Warn("prune events", "err", err)
			}
			continue
		}
		b.mu.Lock()
		idle := b.readers == 0
		if idle {
			b.skipped++
		} else {
			b.covered = b.skipped // the read below covers them
		}
		b.mu.Unlock()
		if idle {
			// Nobody to wake. The first reader to wait reads on from
			// last; one starting afresh jumps to the log's end (Last).
			continue
		}
		if err := b.fetch(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("read event log", "err", err)
		}
		// Under load every commit pokes: reading the log at most every
		// few milliseconds turns a storm of tiny reads (and of wake-ups of
		// every reader) into batches, at a latency nobody notices.
		select {
		case <-ctx.Done():
			return
		case <-time.After(minFetchGap):
		}
	}
}

// minFetchGap is the least time between two reads of the event log.
const minFetchGap = 15 * time.Millisecond

func (b *Bus) fetch(ctx context.Context) error {
	for {
		b.mu.Lock()
		after := b.last
		b.mu.Unlock()
		rows, err := b.store.EventsAfter(ctx, after, 1000)
		if err != nil || len(rows) == 0 {
			return err
		}
		b.mu.Lock()
		if b.last != after {
			// Last jumped meanwhile: these rows are behind it.
			b.mu.Unlock()
			continue
		}
		b.ring = append(b.ring, rows...)
		// Trimmed by halves: copying the whole ring at every read (under
		// load, a few dozen events each) was most of a busy bus's work.
		if len(b.ring) >= 2*ringSize {
			b.ring = append([]store.EventRow(nil), b.ring[len(b.ring)-ringSize:]...)
		}
		b.last = rows[len(rows)-1].ID
		close(b.changed)
		b.changed = make(chan struct{})
		b.mu.Unlock()
		if len(rows) < 1000 {
			return nil
		}
	}
}

// Poke tells the Bus the log has grown (after a local commit).
func (b *Bus) Poke() {
	select {
	case b.poke <- struct{}{}:
	default:
	}
}

// Last is a position for a reader starting now: every event after it that
// is committed, or commits later, is one Next returns; every event up to it
// has committed (or never will). A Bus that read nothing while it had no
// readers jumps to the log's end rather than read what nobody waited for.
func (b *Bus) Last(ctx context.Context) (int64, error) {
	b.mu.Lock()
	last, behind, skipped := b.last, b.behind(), b.skipped
	b.mu.Unlock()
	if !behind {
		return last, nil
	}
	end, ok, err := b.store.SettledLastEventID(ctx, last, settleWait)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !ok {
		// A transaction open for long may still add an event below the
		// end: start from last, which the Bus reads on from.
		return b.last, nil
	}
	if end > b.last {
		// The ring must have no hole: readers behind the jump read the log.
		b.last, b.ring = end, nil
		close(b.changed)
		b.changed = make(chan struct{})
	}
	// The end read covers what was skipped before it, not after.
	b.covered = max(b.covered, skipped)
	return b.last, nil
}

// settleWait bounds how long Last waits for the transactions that could
// still add an event below the log's end (usually a few milliseconds).
const settleWait = 250 * time.Millisecond

// await waits, as a reader, for last to move past what it was when ch was
// taken, or for ctx to end. The caller holds b.mu, which await releases.
func (b *Bus) await(ctx context.Context, ch chan struct{}) error {
	b.readers++
	if b.behind() {
		b.Poke() // read on from last: there is a reader now
	}
	b.mu.Unlock()
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-ch:
	}
	b.mu.Lock()
	b.readers--
	b.mu.Unlock()
	return err
}

// Next returns up to limit events with id > after, waiting until there is
// at least one or ctx ends.
func (b *Bus) Next(ctx context.Context, after int64, limit int) ([]store.EventRow, error) {
	for {
		b.mu.Lock()
		if b.last > after {
			if len(b.ring) > 0 && b.ring[0].ID <= after+1 {
				// Ids ascend: a reader costs the events it gets, not the
				// ring's length.
				i, _ := slices.BinarySearchFunc(b.ring, after+1, func(e store.EventRow, id int64) int { return cmp.Compare(e.ID, id) })
				out := slices.Clone(b.ring[i:min(len(b.ring), i+limit)])
				b.mu.Unlock()
				return out, nil
			}
			b.mu.Unlock()
			// Too far behind for the ring (or ids skipped by a rollback
			// before the ring's start): read the log itself.
			return b.store.EventsAfter(ctx, after, limit)
		}
		if err := b.await(ctx, b.changed); err != nil {
			return nil, err
		}
	}
}

// Wait blocks until an event after `after` exists or ctx ends.
func (b *Bus) Wait(ctx context.Context, after int64) error {
	b.mu.Lock()
	if b.last > after {
		b.mu.Unlock()
		return nil
	}
	return b.await(ctx, b.changed)
}

// Decode turns a stored event into its wire form.
func Decode(row store.EventRow) (apiv1.Event, error) {
	ev := apiv1.Event{ID: row.ID, Type: row.Type, Time: row.At}
	var err error
	switch row.Type {
	case TypeOperation:
		ev.Operation = new(apiv1.Operation)
		err = json.Unmarshal(row.Data, ev.Operation)
	case TypeItem:
		ev.Item = new(apiv1.ItemEvent)
		err = json.Unmarshal(row.Data, ev.Item)
	case TypeInstance:
		ev.Instance = new(apiv1.Instance)
		err = json.Unmarshal(row.Data, ev.Instance)
	default:
		err = fmt.Errorf("unknown event type %q", row.Type)
	}
	return ev, err
}

// EmitOperation records an operation event (without its items: item events
// carry those).
func EmitOperation(ctx context.Context, tx *sql.Tx, s *store.Store, op apiv1.Operation) error {
	ev, err := operationEvent(op)
	if err != nil {
		return err
	}
	return s.InsertEvent(ctx, tx, ev.Tenant, ev.Type, ev.Ref, ev.Data)
}

// EmitAccepted records what accepting op wrote, in one statement: its
// operation event, then an instance event for each of ins, in that order,
// with the instances as the caller's transaction left them.
func EmitAccepted(ctx context.Context, tx *sql.Tx, s *store.Store, op apiv1.Operation, ins []apiv1.Instance) error {
	ev, err := operationEvent(op)
	if err != nil {
		return err
	}
	evs := make([]store.NewEvent, 0, 1+len(ins))
	evs = append(evs, ev)
	for _, in := range ins {
		ev, err := instanceEvent(in)
		if err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	return s.InsertEvents(ctx, tx, evs)
}

func operationEvent(op apiv1.Operation) (store.NewEvent, error) {
	op.Items = nil
	op.GeneratedPassword = ""
	data, err := json.Marshal(op)
	if err != nil {
		return store.NewEvent{}, fmt.Errorf("event: %w", err)
	}
	return store.NewEvent{Tenant: op.Tenant, Type: TypeOperation, Ref: op.ID, Data: data}, nil
}

// EmitItem records an item event, then the instance's if in is not nil
// (kept up to date by the caller, as for EmitInstanceValue), then the
// operation's if op is not nil (the item ended it), in one statement.
func EmitItem(ctx context.Context, tx *sql.Tx, s *store.Store, w *store.ItemWork, in *apiv1.Instance, op *apiv1.Operation) error {
	ev, err := itemEvent(w)
	if err != nil {
		return err
	}
	evs := []store.NewEvent{ev}
	if in != nil {
		if ev, err = instanceEvent(*in); err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	if op != nil {
		if ev, err = operationEvent(*op); err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	return s.InsertEvents(ctx, tx, evs)
}

func itemEvent(w *store.ItemWork) (store.NewEvent, error) {
	it := w.Item
	// Events reach the tenant's every reader: the operator's detail stays
	// in the operation record, where only an admin reads it.
	it.Detail = ""
	data, err := json.Marshal(apiv1.ItemEvent{OperationID: w.OperationID, Item: it})
	if err != nil {
		return store.NewEvent{}, fmt.Errorf("event: %w", err)
	}
	return store.NewEvent{Tenant: w.Tenant, Type: TypeItem, Ref: w.OperationID, Data: data}, nil
}

// EmitInstance records an instance event with the instance as it now is.
func EmitInstance(ctx context.Context, q store.Querier, s *store.Store, id string) error {
	in, err := s.GetInstance(ctx, q, id)
	if err != nil {
		return err
	}
	return EmitInstanceValue(ctx, q, s, in)
}

// EmitInstanceValue records an instance event with in, which the caller
// keeps up to date with what its transaction changed (saving a read).
func EmitInstanceValue(ctx context.Context, q store.Querier, s *store.Store, in apiv1.Instance) error {
	ev, err := instanceEvent(in)
	if err != nil {
		return err
	}
	return s.InsertEvent(ctx, q, ev.Tenant, ev.Type, ev.Ref, ev.Data)
}

func instanceEvent(in apiv1.Instance) (store.NewEvent, error) {
	data, err := json.Marshal(in)
	if err != nil {
		return store.NewEvent{}, fmt.Errorf("event: %w", err)
	}
	return store.NewEvent{Tenant: in.Tenant, Type: TypeInstance, Ref: in.ID, Data: data}, nil
}
