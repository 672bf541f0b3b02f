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
func startBus(t *testing.T, s *store.Store) *events.Bus { return startBusEvery(t, s, time.Hour) }

// startPolling starts a Bus that polls every 5 ms: one with no reader
// soon has wake-ups it did not read.
func startPolling(t *testing.T, s *store.Store) *events.Bus {
	return startBusEvery(t, s, 5*time.Millisecond)
}

func startBusEvery(t *testing.T, s *store.Store, poll time.Duration) *events.Bus {
	t.Helper()
	b := events.NewBus(s, slog.New(slog.NewTextHandler(io.Discard, nil)), poll)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// last is b.Last for a test.
func last(t *testing.T, b *events.Bus) int64 {
	t.Helper()
	pos, err := b.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pos
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
	start := last(t, b)
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
	if last(t, b) != got[0].ID {
		t.Errorf("Last %d, want the event's id %d", last(t, b), got[0].ID)
	}
}

func TestEventsBeforeStartAreHistoryStillReadable(t *testing.T) {
	s := storetest.OpenSQLite(t)
	emitOperation(t, s, apiv1.Operation{ID: "op-old", Tenant: "acme"}, true)
	b := startBus(t, s)
	if last(t, b) == 0 {
		t.Fatal("Start did not read the end of the log")
	}
	// Nothing newer: Wait blocks until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, last(t, b)); !errors.Is(err, context.DeadlineExceeded) {
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
	start := last(t, b)
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
	start := last(t, b)
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
	start := last(t, b)
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
		testutil.WaitFor(t, 30*time.Second, "the bus to read the batch", func() bool { return last(t, b) >= start+int64(done+2_000) })
	}
	end := last(t, b)
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

// openPair opens two stores on one fresh PostgreSQL database, as two
// replicas see it.
func openPair(t testing.TB) (a, c *store.Store) {
	t.Helper()
	url := storetest.PostgresURL(t)
	open := func() *store.Store {
		s, err := store.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open()
}

// TestABusWithNoReaderReadsNothingAndItsNextReaderStartsAtTheEnd: a
// replica whose bus nobody waits on sends no statement however much the
// log grows and however often it is poked; a reader starting there later
// starts at the log's end and gets what commits after it.
func TestABusWithNoReaderReadsNothingAndItsNextReaderStartsAtTheEnd(t *testing.T) {
	a, c := openPair(t)
	b := startPolling(t, c)
	before := c.DatabaseStatements()
	for i := range 20 {
		emitOperation(t, a, apiv1.Operation{ID: fmt.Sprintf("op-%d", i), Tenant: "acme"}, true)
		b.Poke()
	}
	time.Sleep(100 * time.Millisecond) // twenty polls
	if n := c.DatabaseStatements() - before; n != 0 {
		t.Errorf("a bus with no reader ran %d statements", n)
	}
	end, err := a.LastEventID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a reader starting at the log's end", func() bool { return last(t, b) == end })
	emitOperation(t, a, apiv1.Operation{ID: "op-after", Tenant: "acme"}, true)
	if got := next(t, b, end); len(got) != 1 || got[0].Operation.ID != "op-after" {
		t.Errorf("events after the end: %+v, want op-after alone", got)
	}
}

// TestAReaderStartingBeforeAnEarlierEventCommitsStillGetsIt: the end a
// reader of an idle bus jumps to is never past an event that can still
// commit. An event whose transaction is open below a committed one stays
// ahead of the reader's position however long it stays open, and reaches
// the reader when it commits; one committing while the reader starts is
// either before its position or among what it reads.
func TestAReaderStartingBeforeAnEarlierEventCommitsStillGetsIt(t *testing.T) {
	for _, commitAfter := range []time.Duration{20 * time.Millisecond, 2 * time.Second} {
		t.Run(fmt.Sprintf("commit after %v", commitAfter), func(t *testing.T) {
			a, c := openPair(t)
			b := startPolling(t, c)
			ctx := context.Background()
			tx, err := a.DB.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if err := events.EmitOperation(ctx, tx, a, apiv1.Operation{ID: "op-late", Tenant: "acme"}); err != nil {
				t.Fatal(err)
			}
			emitOperation(t, a, apiv1.Operation{ID: "op-early", Tenant: "acme"}, true)
			time.Sleep(50 * time.Millisecond) // polls unread: the bus has no reader
			commitStart := make(chan time.Time, 1)
			committed := make(chan error, 1)
			go func() {
				time.Sleep(commitAfter)
				commitStart <- time.Now()
				committed <- tx.Commit()
			}()
			pos := last(t, b)
			returned := time.Now()
			if err := <-committed; err != nil {
				t.Fatal(err)
			}
			end, err := a.LastEventID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			late := end - 1 // its id was taken first
			if (<-commitStart).After(returned) && pos >= late {
				t.Fatalf("a reader started at %d, past event %d, still uncommitted when it started", pos, late)
			}
			// Every event after the position reaches the reader, in order.
			for after := pos; after < end; {
				got := next(t, b, after)
				if got[0].ID != after+1 {
					t.Fatalf("after %d the reader got %d", after, got[0].ID)
				}
				after = got[len(got)-1].ID
			}
		})
	}
}
