package storetest

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// replicaCases are the membership and fencing cases of the suite.
var replicaCases = []struct {
	name string
	fn   func(t *testing.T, s *store.Store)
}{
	{"ReplicaHeartbeatsAreListedOnTheDatabaseClock", testReplicaHeartbeats},
	{"OnlyADeadReplicaIsForgotten", testForgetReplica},
	{"LongDeadReplicasArePruned", testPruneReplicas},
	{"ASupersededExecutionCannotWriteItsItem", testExecutionFence},
}

func testReplicaHeartbeats(t *testing.T, s *store.Store) {
	ctx := context.Background()
	before, err := s.DatabaseNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Heartbeat(ctx, store.Replica{ID: "r-a", Address: "https://a:8443", Version: "1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Before(before.Add(-time.Millisecond)) {
		t.Fatalf("heartbeat at %v, before the database's %v", first, before)
	}
	if _, err := s.Heartbeat(ctx, store.Replica{ID: "r-b", Address: "https://b:8443", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	// A second beat renews the row and updates what changed.
	second, err := s.Heartbeat(ctx, store.Replica{ID: "r-a", Address: "https://a:9443", Version: "1.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !second.After(first) {
		t.Fatalf("second heartbeat %v not after the first %v", second, first)
	}
	if err := s.StopReplica(ctx, "r-b"); err != nil {
		t.Fatal(err)
	}
	list, now, err := s.ListReplicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || now.Before(second) {
		t.Fatalf("listed %+v at %v", list, now)
	}
	byID := map[string]store.Replica{}
	for _, r := range list {
		byID[r.ID] = r
	}
	a, b := byID["r-a"], byID["r-b"]
	if a.Address != "https://a:9443" || a.Version != "1.1" || !a.HeartbeatAt.Equal(second) || a.StartedAt.After(first) ||
		a.StoppedAt != nil {
		t.Errorf("r-a %+v", a)
	}
	if b.StoppedAt == nil {
		t.Errorf("r-b was stopped: %+v", b)
	}
	// A stopped replica that beats again (restarted with its id) runs.
	if _, err := s.Heartbeat(ctx, store.Replica{ID: "r-b", Address: "https://b:8443", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	list, _, _ = s.ListReplicas(ctx)
	for _, r := range list {
		if r.ID == "r-b" && r.StoppedAt != nil {
			t.Errorf("r-b beat again but is still stopped")
		}
	}
}

func testForgetReplica(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for _, id := range []string{"r-live", "r-stopped", "r-silent"} {
		if _, err := s.Heartbeat(ctx, store.Replica{ID: id, Address: "x", Version: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StopReplica(ctx, "r-stopped"); err != nil {
		t.Fatal(err)
	}
	// Generous margins: a loaded machine may pause between statements.
	time.Sleep(time.Second)
	if _, err := s.Heartbeat(ctx, store.Replica{ID: "r-live", Address: "x", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	const ttl = 500 * time.Millisecond
	for _, c := range []struct {
		id   string
		want error
	}{
		{"r-live", store.ErrConflict},
		{"r-stopped", nil},
		{"r-silent", nil},
		{"r-silent", store.ErrNotFound}, // forgotten already
		{"r-never", store.ErrNotFound},
	} {
		err := s.ForgetReplica(ctx, c.id, ttl)
		if (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("forget %s: %v, want %v", c.id, err, c.want)
		}
	}
	list, _, _ := s.ListReplicas(ctx)
	if len(list) != 1 || list[0].ID != "r-live" {
		t.Fatalf("left %+v, want r-live alone", list)
	}
}

func testPruneReplicas(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if _, err := s.Heartbeat(ctx, store.Replica{ID: "r-old", Address: "x", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := s.Heartbeat(ctx, store.Replica{ID: "r-new", Address: "x", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneReplicas(ctx, 500*time.Millisecond)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	list, _, _ := s.ListReplicas(ctx)
	if len(list) != 1 || list[0].ID != "r-new" {
		t.Fatalf("left %+v", list)
	}
}

func testExecutionFence(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 1)
	createOp(t, s, "op-1", "acme", ids)
	older, err := s.BeginExecution(ctx, "op-1", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	older.State, older.Step = apiv1.ItemRunning, apiv1.StepShuttingDown
	if err := s.SaveItem(ctx, s.DB, &older); err != nil {
		t.Fatalf("the only execution could not save: %v", err)
	}
	newer, err := s.BeginExecution(ctx, "op-1", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if newer.ExecSeq <= older.ExecSeq || newer.Step != apiv1.StepShuttingDown {
		t.Fatalf("newer execution %d at %q, older %d", newer.ExecSeq, newer.Step, older.ExecSeq)
	}
	if _, err := s.BeginExecution(ctx, "op-1", "ins-none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown item's execution: %v", err)
	}
	// The older execution is refused everywhere, and changes nothing.
	if err := s.CheckExecution(ctx, s.DB, &older); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("check of the older execution: %v", err)
	}
	older.Step = apiv1.StepStarting
	if err := s.SaveItem(ctx, s.DB, &older); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("save of the older execution: %v", err)
	}
	older.State = apiv1.ItemFailed
	err = s.InTx(ctx, func(tx *sql.Tx) error {
		return s.FinishItem(ctx, tx, &older, apiv1.StateError, nil)
	})
	if !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("finish of the older execution: %v", err)
	}
	w, err := s.GetItem(ctx, s.DB, "op-1", ids[0])
	if err != nil || w.Step != apiv1.StepShuttingDown || w.Terminal() {
		t.Fatalf("the older execution moved the item: %+v %v", w, err)
	}
	if in, _ := s.GetInstance(ctx, s.DB, ids[0]); !in.Busy {
		t.Fatal("the older execution released the instance")
	}
	// The newer one works, and ends the item once.
	if err := s.CheckExecution(ctx, s.DB, &newer); err != nil {
		t.Fatal(err)
	}
	newer.Step = apiv1.StepStarting
	if err := s.SaveItem(ctx, s.DB, &newer); err != nil {
		t.Fatal(err)
	}
	newer.State, newer.Step = apiv1.ItemSucceeded, apiv1.StepDone
	mustTx(t, s, func(tx *sql.Tx) error {
		return s.FinishItem(ctx, tx, &newer, apiv1.StateRunning, nil)
	})
	if ended, err := s.EndOperation(ctx, "op-1", nil); err != nil || !ended {
		t.Fatalf("end operation: %v %v", ended, err)
	}
	op, err := s.GetOperation(ctx, s.DB, "op-1")
	if err != nil || op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 1 {
		t.Fatalf("operation %+v %v", op, err)
	}
}
