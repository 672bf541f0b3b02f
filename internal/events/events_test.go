package events_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// startBus starts a Bus that polls rarely: the tests see events at once
// only where a Poke says the log grew.
func startBus(t *testing.T, s *store.Store) *events.Bus {
	t.Helper()
	b := events.NewBus(s, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Hour)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func emitOperation(t *testing.T, s *store.Store, op apiv1.Operation, commit bool) {
	t.Helper()
	rollback := errors.New("rolled back on purpose")
	err := s.InTx(context.Background(), func(tx *sql.Tx) error {
		if err := events.EmitOperation(context.Background(), tx, s, op); err != nil {
			return err
		}
		if !commit {
			return rollback
		}
		return nil
	})
	if commit && err != nil || !commit && !errors.Is(err, rollback) {
		t.Fatal(err)
	}
}

func next(t *testing.T, b *events.Bus, after int64) []apiv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := b.Next(ctx, after, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]apiv1.Event, len(rows))
	for i, r := range rows {
		if out[i], err = events.Decode(r); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestACommittedChangeIsAnEventAndARolledBackOneIsNot(t *testing.T) {
	s := storetest.OpenSQLite(t)
	b := startBus(t, s)
	start := b.Last()
	emitOperation(t, s, apiv1.Operation{ID: "op-rolledback", Tenant: "acme", Status: apiv1.OperationRunning}, false)
	emitOperation(t, s, apiv1.Operation{ID: "op-committed", Tenant: "acme", Status: apiv1.OperationRunning,
		GeneratedPassword: "Never-In-An-Event-1", Items: []apiv1.Item{{InstanceID: "ins-aaaaaaaa"}}}, true)
	b.Poke()
	got := next(t, b, start)
	if len(got) != 1 || got[0].Type != events.TypeOperation || got[0].Operation == nil || got[0].Operation.ID != "op-committed" {
		t.Fatalf("events %+v, want the committed operation only", got)
	}
	if op := got[0].Operation; op.GeneratedPassword != "" || op.Items != nil {
		t.Errorf("the operation event carries %q and %d items; it carries neither", op.GeneratedPassword, len(op.Items))
	}
	if b.Last() != got[0].ID {
		t.Errorf("Last %d, want the event's id %d", b.Last(), got[0].ID)
	}
}

func TestEventsBeforeStartAreHistoryStillReadable(t *testing.T) {
	s := storetest.OpenSQLite(t)
	emitOperation(t, s, apiv1.Operation{ID: "op-old", Tenant: "acme"}, true)
	b := startBus(t, s)
	if b.Last() == 0 {
		t.Fatal("Start did not read the end of the log")
	}
	// Nothing newer: Wait blocks until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, b.Last()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with nothing new: %v, want the deadline", err)
	}
	// A reader resuming from the start reads the log itself.
	got := next(t, b, 0)
	if len(got) != 1 || got[0].Operation.ID != "op-old" {
		t.Errorf("events after 0: %+v", got)
	}
}

func TestWaitAndNextWakeUpOnAPoke(t *testing.T) {
	s := storetest.OpenSQLite(t)
	b := startBus(t, s)
	start := b.Last()
	woke := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		woke <- b.Wait(ctx, start)
	}()
	in := apiv1.Instance{ID: "ins-bbbbbbbb", Tenant: "acme", Name: "web-1", State: apiv1.StateRunning}
	if err := events.EmitInstanceValue(context.Background(), s.DB, s, in); err != nil {
		t.Fatal(err)
	}
	b.Poke()
	if err := <-woke; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	got := next(t, b, start)
	if len(got) != 1 || got[0].Instance == nil || got[0].Instance.Name != "web-1" {
		t.Errorf("events %+v, want the instance", got)
	}
}

func TestNextPagesByLimitInOrder(t *testing.T) {
	s := storetest.OpenSQLite(t)
	b := startBus(t, s)
	start := b.Last()
	for _, id := range []string{"op-1", "op-2", "op-3"} {
		emitOperation(t, s, apiv1.Operation{ID: id, Tenant: "acme"}, true)
	}
	b.Poke()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	after := start
	for len(ids) < 3 {
		rows, err := b.Next(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) > 2 {
			t.Fatalf("%d events for a limit of 2", len(rows))
		}
		for _, r := range rows {
			ev, err := events.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.Operation.ID)
			after = r.ID
		}
	}
	if ids[0] != "op-1" || ids[1] != "op-2" || ids[2] != "op-3" {
		t.Errorf("events in order %v", ids)
	}
}

func TestDecodeRefusesAnUnknownType(t *testing.T) {
	if _, err := events.Decode(store.EventRow{ID: 1, Type: "gossip", Data: []byte(`{}`)}); err == nil {
		t.Error("an unknown event type decoded")
	}
}

// TestAReaderGetsTheEventsAfterItsPositionWhereverItIs: a bus that has
// followed more events than its ring keeps gives each reader, from the
// ring or from the log, the events right after its position, in order,
// up to its limit.
func TestAReaderGetsTheEventsAfterItsPositionWhereverItIs(t *testing.T) {
	s := storetest.OpenSQLite(t)
	b := startBus(t, s)
	start := b.Last()
	const n = 20_000 // more than twice the ring
	for done := 0; done < n; done += 2_000 {
		evs := make([]store.NewEvent, 2_000)
		for i := range evs {
			evs[i] = store.NewEvent{Tenant: "acme", Type: events.TypeOperation, Ref: fmt.Sprint(done + i), Data: []byte(`{}`)}
		}
		if err := s.InTx(context.Background(), func(tx *sql.Tx) error { return s.InsertEvents(context.Background(), tx, evs) }); err != nil {
			t.Fatal(err)
		}
		b.Poke()
		testutil.WaitFor(t, 30*time.Second, "the bus to read the batch", func() bool { return b.Last() >= start+int64(done+2_000) })
	}
	end := b.Last()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, after := range []int64{start, start + 1, end - 15_000, end - 8_000, end - 1_000, end - 500, end - 1} {
		rows, err := b.Next(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(1000, int(end-after)); len(rows) != want {
			t.Fatalf("after %d: %d events, want %d", after, len(rows), want)
		}
		for i, r := range rows {
			if r.ID != after+1+int64(i) {
				t.Fatalf("after %d: event %d has id %d, want %d", after, i, r.ID, after+1+int64(i))
			}
		}
	}
}
