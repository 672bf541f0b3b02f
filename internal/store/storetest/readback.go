package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// What a write returns stands for a read of what it wrote: the callers
// answer and emit events from it without reading again, so it must be
// exactly what a read gives.

// testLockedInstancesAsStored: LockInstances returns the instances as a
// read in the same transaction gives them, in the order asked; a refused
// lock returns none, and a vanished instance is ErrNotFound.
func testLockedInstancesAsStored(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 4)
	asked := []string{ids[2], ids[0], ids[3]}
	mustTx(t, s, func(tx *sql.Tx) error {
		locked, busy, err := s.LockInstances(ctx, tx, "op-1", apiv1.KindResetPassword, asked)
		if err != nil || len(busy) > 0 {
			t.Fatalf("lock: busy %v, %v", busy, err)
		}
		read, err := s.GetInstances(ctx, tx, asked)
		if err != nil {
			return err
		}
		if len(locked) != len(asked) {
			t.Fatalf("%d instances returned, want %d", len(locked), len(asked))
		}
		for i, id := range asked {
			if !reflect.DeepEqual(locked[i], read[id]) {
				t.Errorf("instance %d returned as\n%+v\nread as\n%+v", i, locked[i], read[id])
			}
			if lo := locked[i].LatestOperation; !locked[i].Busy || lo == nil || lo.ID != "op-1" {
				t.Errorf("instance %s returned without its lock: %+v", id, locked[i])
			}
		}
		return nil
	})
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		locked, busy, err := s.LockInstances(ctx, tx, "op-2", apiv1.KindResetPassword, ids[:2])
		if err != nil {
			return err
		}
		if locked != nil || len(busy) != 1 || busy[0] != ids[0] {
			t.Errorf("a refused lock returned %d instances, busy %v; want none, busy [%s]", len(locked), busy, ids[0])
		}
		return errRolledBack
	})
	if !errors.Is(err, errRolledBack) {
		t.Fatal(err)
	}
	err = s.InTx(ctx, func(tx *sql.Tx) error {
		_, _, err := s.LockInstances(ctx, tx, "op-3", apiv1.KindResetPassword, []string{ids[1], "ins-acme-gone"})
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("locking an instance that does not exist: %v, want ErrNotFound", err)
	}
}

// testCreatedOperationAsReadBack: CreateOperation returns the operation as
// GetOperation reads it: times to the millisecond in UTC, items in their
// sequence, the summary counted, fields the table does not keep left out.
func testCreatedOperationAsReadBack(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 3)
	at := time.Date(2031, 5, 6, 7, 8, 9, 123_456_789, time.FixedZone("UTC+2", 2*3600))
	op := apiv1.Operation{ID: "op-1", Tenant: "acme", Kind: apiv1.KindResetPassword, Status: apiv1.OperationRunning,
		CreatedAt: at, RequestedBy: apiv1.Requester{Kind: "user", ID: "alice", Name: "Alice", Address: "192.0.2.7"}}
	items := []store.ItemWork{
		{Item: apiv1.Item{InstanceID: ids[2], InstanceName: "vm-c", State: apiv1.ItemPending, Step: apiv1.StepQueued,
			Mode: apiv1.ModeOffline, Method: apiv1.MethodDisk, User: "root", Shutdown: true}, Seq: 2, ForceStop: true,
			SealedSecret: []byte("sealed")},
		{Item: apiv1.Item{InstanceID: ids[0], InstanceName: "vm-a", State: apiv1.ItemPending, Step: apiv1.StepQueued,
			Mode: apiv1.ModeOnline, Method: apiv1.MethodGuest, User: "Administrator"}, Seq: 0},
		{Item: apiv1.Item{InstanceID: ids[1], InstanceName: "vm-b", State: apiv1.ItemPending, Step: apiv1.StepQueued,
			Mode: apiv1.ModeOnline, Method: apiv1.MethodGuest, User: "root"}, Seq: 1},
	}
	for i := range items {
		items[i].OperationID, items[i].Tenant, items[i].Kind = op.ID, op.Tenant, op.Kind
	}
	accepted := apiv1.AuditEntry{Tenant: "acme", Actor: apiv1.Requester{Kind: "user", ID: "alice", Address: "192.0.2.7"}, Action: "operation.reset_password",
		Target: ids[0] + "," + ids[1] + "," + ids[2], OperationID: op.ID, RequestID: "req-1"}
	var created apiv1.Operation
	mustTx(t, s, func(tx *sql.Tx) error {
		var err error
		if created, err = s.CreateOperation(ctx, tx, op, "req-1", items, accepted); err != nil {
			return err
		}
		read, err := s.GetOperation(ctx, tx, op.ID)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(created, read) {
			t.Errorf("created operation\n%+v\nread back in its transaction as\n%+v", created, read)
		}
		return nil
	})
	read, err := s.GetOperation(ctx, s.DB, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(created, read) {
		t.Errorf("created operation\n%+v\nread back after its commit as\n%+v", created, read)
	}
	trail, err := s.ListAudit(ctx, "acme", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 1 {
		t.Fatalf("%d audit lines after one operation, want 1: %+v", len(trail), trail)
	}
	got := trail[0]
	got.ID, got.Time = 0, time.Time{}
	if !reflect.DeepEqual(got, accepted) {
		t.Errorf("audit line\n%+v\nwant\n%+v", got, accepted)
	}
}

// testEndedOperationAsReadBack: the operation EndOperation hands to its
// caller is what GetOperation reads once it has ended, without its items.
func testEndedOperationAsReadBack(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 3)
	createOp(t, s, "op-1", "acme", ids)
	for i, id := range ids {
		mustTx(t, s, func(tx *sql.Tx) error {
			w, err := s.GetItem(ctx, tx, "op-1", id)
			if err != nil {
				return err
			}
			w.State, w.Step = apiv1.ItemSucceeded, apiv1.StepDone
			if i == 1 {
				w.State, w.ErrorCode, w.Message = apiv1.ItemFailed, "GUEST_ERROR", "no"
			}
			return s.FinishItem(ctx, tx, &w, "", nil)
		})
	}
	var handed apiv1.Operation
	ended, err := s.EndOperation(ctx, "op-1", func(tx *sql.Tx, op apiv1.Operation) error {
		handed = op
		return nil
	})
	if err != nil || !ended {
		t.Fatalf("ended %v, %v", ended, err)
	}
	endedAsReadBack(t, s, handed)
	if handed.Status != apiv1.OperationPartial || handed.FinishedAt == nil || handed.Summary.Failed != 1 {
		t.Errorf("ended operation %+v, want partial with one failure and an end time", handed)
	}
}

// testOperationEndsInItsOnlyItemsTransaction: EndOperationIn ends an
// operation in the transaction that ended its last item, sees that
// transaction's own writes, and does not end one with an item to go.
func testOperationEndsInItsOnlyItemsTransaction(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 3)
	createOp(t, s, "op-1", "acme", ids[:1])
	createOp(t, s, "op-2", "acme", ids[1:])

	// finishAndEnd ends the item of id in tx, then its operation of total
	// items if that can be ended there. (It reads the item in tx: an
	// execution begun outside it, as the engine's, would wait forever for
	// SQLite's one writer connection.)
	finishAndEnd := func(tx *sql.Tx, opID, id string, total int) (apiv1.Operation, bool, error) {
		w, err := s.GetItem(ctx, tx, opID, id)
		if err != nil {
			return apiv1.Operation{}, false, err
		}
		if w.OperationTotal != total {
			return apiv1.Operation{}, false, fmt.Errorf("an item of an operation of %d reads OperationTotal %d", total, w.OperationTotal)
		}
		w.State, w.Step = apiv1.ItemSucceeded, apiv1.StepDone
		if err := s.FinishItem(ctx, tx, &w, "", nil); err != nil {
			return apiv1.Operation{}, false, err
		}
		return s.EndOperationIn(ctx, tx, opID)
	}
	if w, err := s.BeginExecution(ctx, "op-1", ids[0]); err != nil || w.OperationTotal != 1 {
		t.Fatalf("an execution of the item of an operation of one reads OperationTotal %d (%v)", w.OperationTotal, err)
	}
	// A rolled-back end leaves the operation running.
	errRollback := errors.New("roll back")
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		if _, ok, err := finishAndEnd(tx, "op-1", ids[0], 1); err != nil || !ok {
			return fmt.Errorf("ended %v, %v", ok, err)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if op, err := s.GetOperation(ctx, s.DB, "op-1"); err != nil || op.Status != apiv1.OperationRunning {
		t.Fatalf("after a rolled-back end: %s, %v; want running", op.Status, err)
	}

	var handed apiv1.Operation
	mustTx(t, s, func(tx *sql.Tx) error {
		op, ok, err := finishAndEnd(tx, "op-1", ids[0], 1)
		if err != nil || !ok {
			return fmt.Errorf("the only item's transaction did not end its operation (%v, %v)", ok, err)
		}
		handed = op
		return nil
	})
	endedAsReadBack(t, s, handed)
	if handed.Status != apiv1.OperationSucceeded || handed.Summary != (apiv1.Summary{Total: 1, Succeeded: 1}) {
		t.Errorf("ended operation %s %+v, want succeeded 1 of 1", handed.Status, handed.Summary)
	}

	mustTx(t, s, func(tx *sql.Tx) error {
		if _, ok, err := finishAndEnd(tx, "op-2", ids[1], 2); err != nil || ok {
			return fmt.Errorf("an operation with an item to go was ended (%v, %v)", ok, err)
		}
		return nil
	})
}

// testBeginWorkIsBeginExecutionThenTheInstance: BeginWork reads what
// BeginExecution and GetInstanceForWork read, takes the next fencing
// token, and tells a removed instance (nil) from an unknown item
// (ErrNotFound).
func testBeginWorkIsBeginExecutionThenTheInstance(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	vm := apiv1.Instance{ID: "ins-work1", Tenant: "acme", Name: "vm-1", OSType: "linux", AdminUser: "root", State: apiv1.StateRunning,
		Power: apiv1.DriverLink{Driver: "sim", Address: "m-1"}, Guest: apiv1.DriverLink{Driver: "sim", Address: "m-1"}}
	if err := s.CreateInstance(ctx, s.DB, &vm); err != nil {
		t.Fatal(err)
	}
	other := instances(t, s, "acme", 1)
	createOp(t, s, "op-1", "acme", []string{vm.ID, other[0]})

	before, err := s.BeginExecution(ctx, "op-1", vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	w, in, held, err := s.BeginWork(ctx, "op-1", vm.ID)
	if err != nil || in == nil {
		t.Fatalf("BeginWork: %v, %v", in, err)
	}
	if w.ExecSeq != before.ExecSeq+1 {
		t.Errorf("token %d after %d, want the next", w.ExecSeq, before.ExecSeq)
	}
	if w.TokenAt.IsZero() || w.OperationTotal != 2 {
		t.Errorf("token taken at %v, operation total %d; want a time and 2", w.TokenAt, w.OperationTotal)
	}
	want, wantHeld, err := s.GetInstanceForWork(ctx, s.DB, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*in, want) || held != wantHeld {
		t.Errorf("BeginWork read\n%+v %+v\nGetInstanceForWork reads\n%+v %+v", *in, held, want, wantHeld)
	}
	w.ExecSeq, before.ExecSeq, w.TokenAt, before.TokenAt = 0, 0, time.Time{}, time.Time{}
	if !reflect.DeepEqual(w, before) {
		t.Errorf("BeginWork read the item\n%+v\nBeginExecution reads\n%+v", w, before)
	}

	// Removed while its item is pending: the API refuses that, but the
	// engine still meets an item whose instance is gone.
	if err := s.ReleaseInstance(ctx, s.DB, other[0], "op-1", apiv1.OpStateFailed, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstance(ctx, s.DB, other[0]); err != nil {
		t.Fatal(err)
	}
	if w, in, _, err := s.BeginWork(ctx, "op-1", other[0]); err != nil || in != nil || w.InstanceID != other[0] {
		t.Errorf("the item of a removed instance: %q, %v, %v; want its item, no instance", w.InstanceID, in, err)
	}
	if _, _, _, err := s.BeginWork(ctx, "op-1", "ins-nowhere"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown item: %v, want ErrNotFound", err)
	}
}

// endedAsReadBack checks that the ended operation handed to its caller is
// what GetOperation reads of it, without its items.
func endedAsReadBack(t *testing.T, s *store.Store, handed apiv1.Operation) {
	t.Helper()
	read, err := s.GetOperation(context.Background(), s.DB, handed.ID)
	if err != nil {
		t.Fatal(err)
	}
	read.Items = nil
	if !reflect.DeepEqual(handed, read) {
		t.Errorf("ended operation handed as\n%+v\nread back as\n%+v", handed, read)
	}
}
