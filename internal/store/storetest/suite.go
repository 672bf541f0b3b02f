package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Run runs the conformance suite on stores open makes (a fresh, migrated
// database per test).
func Run(t *testing.T, open Opener) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, s *store.Store)
	}{
		{"MillisecondTimesBeyond32Bits", testTimes},
		{"DuplicateIDsAreConflicts", testConflicts},
		{"SearchInstancesFiltersPagesAndCounts", testSearchInstances},
		{"TaskNumbersCountPerTenantFromOne", testTaskNumbers},
		{"ReplayKeyIsRefusedUntilItExpires", testReplayKeys},
		{"IdempotencyKeyIsTakenOnce", testIdempotency},
		{"InstanceLockIsHeldByOneOperation", testInstanceLock},
		{"LockedInstancesAreReturnedAsStored", testLockedInstancesAsStored},
		{"ACreatedOperationIsWhatIsReadBack", testCreatedOperationAsReadBack},
		{"AnEndedOperationIsWhatIsReadBackWithoutItems", testEndedOperationAsReadBack},
		{"AnOperationEndsInItsOnlyItemsTransaction", testOperationEndsInItsOnlyItemsTransaction},
		{"BeginWorkIsBeginExecutionThenTheInstance", testBeginWorkIsBeginExecutionThenTheInstance},
		{"FinishedItemCountsOnce", testFinishItem},
		{"AnOperationOfManyItemsKeepsThemAll", testManyItems},
		{"EventsInsertedTogetherKeepTheirOrder", testInsertEvents},
		{"SignInFailuresCountInAWindow", testSignInFailures},
		{"EventsAreReadInIDOrder", testEvents},
		{"AnOperationsFirstEventIsFoundByItsID", testFirstOperationEvent},
		{"AFailedStatementRollsTheTransactionBack", testRollback},
		{"ConcurrentIdempotencyGivesOneWinner", testConcurrentIdempotency},
		{"ConcurrentSignInFailuresAllCount", testConcurrentSignInFailures},
		{"ConcurrentLastItemsEndTheOperationOnce", testConcurrentEnds},
		{"ALateEndingCallerLeavesTheOperationToTheOneEndingIt", testEndWhileAnotherEnds},
		{"ConcurrentInstanceLocksNeverOverlapNorDeadlock", testConcurrentLocks},
		{"ConcurrentHostReconcilesAddADomainOnce", testConcurrentReconcile},
		{"EventFollowerNeverSkipsALateCommit", testEventsNeverSkipped},
		{"BMCLinkIsTheInstancesOwn", testBMCLinkIsTheInstancesOwn},                    // links.go
		{"AnInstanceReadForWorkCountsWhoHoldsItsLinks", testInstanceForWork},          // links.go
		{"APollAfterTheAgentWasMarkedGoneIsAChange", testAgentPollAfterGoneIsAChange}, // agents.go
		// shared.go: what replicas share through the database.
		{"RateBudgetIsSharedPerKey", testRateBudget},
		{"HostSlotsAreBoundedByTheHostsLimit", testHostSlots},
		{"ConcurrentHostSlotsNeverExceedTheLimit", testConcurrentHostSlots},
		{"CommittedWritesWakeEveryListener", testWakeups},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open(t))
		})
	}
	for _, c := range leaseCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open(t))
		})
	}
	for _, c := range replicaCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open(t))
		})
	}
}

func mustTx(t *testing.T, s *store.Store, fn func(tx *sql.Tx) error) {
	t.Helper()
	if err := s.InTx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func tenant(t *testing.T, s *store.Store, id string) {
	t.Helper()
	mustTx(t, s, func(tx *sql.Tx) error {
		_, err := s.CreateTenant(context.Background(), tx, id, id)
		return err
	})
}

func instance(id, tenant, name string) apiv1.Instance {
	return apiv1.Instance{ID: id, Tenant: tenant, Name: name, OSType: "linux", AdminUser: "root", State: apiv1.StateRunning,
		Power: apiv1.DriverLink{Driver: "sim", Address: name}, Guest: apiv1.DriverLink{Driver: "sim", Address: name}}
}

func instances(t *testing.T, s *store.Store, tenantID string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	mustTx(t, s, func(tx *sql.Tx) error {
		for i := range ids {
			ids[i] = fmt.Sprintf("ins-%s-%04d", tenantID, i)
			in := instance(ids[i], tenantID, fmt.Sprintf("vm-%04d", i))
			if err := s.CreateInstance(context.Background(), tx, &in); err != nil {
				return err
			}
		}
		return nil
	})
	return ids
}

// testTimes: every time is unix milliseconds in a 64-bit column (a 32-bit
// INTEGER on PostgreSQL would fail for any date after 1970-01-25).
func testTimes(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 18, 0, 0, 123_000_000, time.UTC)
	s.SetClock(func() time.Time { return at })
	tenant(t, s, "acme")
	got, err := s.GetTenant(ctx, s.DB, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(at) {
		t.Fatalf("created at %v, want %v", got.CreatedAt, at)
	}
}

func testConflicts(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	in := instance("ins-1", "acme", "web")
	mustTx(t, s, func(tx *sql.Tx) error { return s.CreateInstance(ctx, tx, &in) })
	again := instance("ins-1", "acme", "web-2")
	if err := s.CreateInstance(ctx, s.DB, &again); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a second instance ins-1: %v, want ErrConflict", err)
	}
	h := apiv1.Host{ID: "host-1", Tenant: "acme", Name: "kvm", Driver: "libvirt", URI: "qemu+ssh://kvm/system",
		MaxConcurrency: 4, DefaultOSType: "linux"}
	if err := s.CreateHost(ctx, s.DB, &h); err != nil {
		t.Fatal(err)
	}
	h2 := h
	h2.ID = "host-2"
	if err := s.CreateHost(ctx, s.DB, &h2); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a second host with the same URI: %v, want ErrConflict", err)
	}
}

func testSearchInstances(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	tenant(t, s, "other")
	mustTx(t, s, func(tx *sql.Tx) error {
		for i, name := range []string{"web-1", "web-2", "db-1", "web-3"} {
			in := instance(fmt.Sprintf("ins-0000000%d", i), "acme", name)
			if i == 3 {
				in.Tenant = "other"
			}
			if i == 1 {
				in.State = apiv1.StateStopped
			}
			if err := s.CreateInstance(ctx, tx, &in); err != nil {
				return err
			}
		}
		return nil
	})
	for _, c := range []struct {
		name  string
		f     store.InstanceSearch
		total int
		want  []string
	}{
		{"tenant", store.InstanceSearch{Tenant: "acme", Limit: 10}, 3, []string{"db-1", "web-1", "web-2"}},
		{"all tenants", store.InstanceSearch{Limit: 10}, 4, []string{"db-1", "web-1", "web-2", "web-3"}},
		{"page", store.InstanceSearch{Tenant: "acme", Offset: 1, Limit: 1}, 3, []string{"web-1"}},
		{"state", store.InstanceSearch{Tenant: "acme", States: []string{apiv1.StateStopped}, Limit: 10}, 1, []string{"web-2"}},
		{"name part", store.InstanceSearch{NameContains: "eb-", Limit: 10}, 3, []string{"web-1", "web-2", "web-3"}},
		{"name part with a placeholder's character", store.InstanceSearch{NameContains: "?", Limit: 10}, 0, nil},
		{"ids", store.InstanceSearch{Tenant: "acme", IDs: []string{"ins-00000000", "ins-00000003"}, Limit: 10}, 1, []string{"web-1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			list, total, err := s.SearchInstances(ctx, c.f)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, in := range list {
				names = append(names, in.Name)
			}
			if total != c.total || fmt.Sprint(names) != fmt.Sprint(c.want) {
				t.Errorf("got %d %v, want %d %v", total, names, c.total, c.want)
			}
		})
	}
}

func testTaskNumbers(t *testing.T, s *store.Store) {
	ctx := context.Background()
	number := func(tenant, op string) int64 {
		t.Helper()
		var n int64
		if err := s.InTx(ctx, func(tx *sql.Tx) (err error) {
			n, err = s.NumberTask(ctx, tx, tenant, op)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a1, b1, a2 := number("acme", "op-a1"), number("beta", "op-b1"), number("acme", "op-a2")
	if a1 != 1 || b1 != 1 || a2 != 2 {
		t.Fatalf("acme %d then %d, beta %d; want 1, 2 and 1", a1, a2, b1)
	}
	if n, err := s.TaskNumber(ctx, "op-a2"); err != nil || n != 2 {
		t.Fatalf("task of op-a2: %d %v", n, err)
	}
	if _, err := s.TaskNumber(ctx, "op-never-numbered"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an operation never numbered has a task: %v", err)
	}
	if op, err := s.OperationOfTask(ctx, "beta", 1); err != nil || op != "op-b1" {
		t.Fatalf("%q %v", op, err)
	}
	if _, err := s.OperationOfTask(ctx, "beta", 2); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("beta's task 2 was found: another tenant's number leaked across")
	}
}

func testReplayKeys(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	s.SetClock(func() time.Time { return now })
	expires := now.Add(5 * time.Minute)
	for i, want := range []bool{true, false, false} {
		fresh, err := s.UseReplayKey(ctx, "zc2:abc", expires)
		if err != nil || fresh != want {
			t.Fatalf("use %d: fresh %v, %v; want %v", i+1, fresh, err, want)
		}
	}
	if _, err := s.UseReplayKey(ctx, "zc2:other", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	now = expires.Add(time.Second)
	if fresh, err := s.UseReplayKey(ctx, "zc2:abc", now.Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("an expired key was refused: %v %v", fresh, err)
	}
	// Taken again, it is a replay until its new expiry; pruning deletes
	// only the keys that expired (zc2:other).
	if fresh, err := s.UseReplayKey(ctx, "zc2:abc", now.Add(time.Minute)); err != nil || fresh {
		t.Fatalf("a key taken again after it expired: fresh %v, %v; want a replay", fresh, err)
	}
	if n, err := s.PruneReplayKeys(ctx); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want the one expired key", n, err)
	}
	if fresh, err := s.UseReplayKey(ctx, "zc2:abc", now.Add(time.Minute)); err != nil || fresh {
		t.Fatalf("pruning forgot a key that has not expired: fresh %v, %v", fresh, err)
	}
}

func testIdempotency(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := store.Idempotency{RequestHash: []byte{1, 2, 3}, OperationID: "op-1"}
	if err := s.PutIdempotency(ctx, s.DB, "key:k1", "abc", r); err != nil {
		t.Fatal(err)
	}
	if err := s.PutIdempotency(ctx, s.DB, "key:k1", "abc", store.Idempotency{RequestHash: []byte{9}, OperationID: "op-2"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second put: %v, want ErrConflict", err)
	}
	if err := s.PutIdempotency(ctx, s.DB, "key:k2", "abc", r); err != nil {
		t.Fatalf("another principal's key: %v", err)
	}
	got, err := s.GetIdempotency(ctx, s.DB, "key:k1", "abc")
	if err != nil || got.OperationID != "op-1" || !slices.Equal(got.RequestHash, r.RequestHash) {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := s.GetIdempotency(ctx, s.DB, "key:k1", "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
}

func lock(ctx context.Context, s *store.Store, opID string, ids []string) (busy []string, err error) {
	err = s.InTx(ctx, func(tx *sql.Tx) error {
		_, b, err := s.LockInstances(ctx, tx, opID, apiv1.KindResetPassword, ids)
		if err != nil {
			return err
		}
		busy = b
		if len(b) > 0 {
			return errBusy
		}
		return nil
	})
	if errors.Is(err, errBusy) {
		err = nil
	}
	return busy, err
}

var (
	errBusy       = errors.New("busy")
	errRolledBack = errors.New("rolled back on purpose")
)

func testInstanceLock(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 3)
	if busy, err := lock(ctx, s, "op-1", ids[:2]); err != nil || len(busy) != 0 {
		t.Fatalf("first lock: %v %v", busy, err)
	}
	busy, err := lock(ctx, s, "op-2", ids[1:])
	if err != nil || !slices.Equal(busy, ids[1:2]) {
		t.Fatalf("overlapping lock: busy %v (%v), want %v", busy, err, ids[1:2])
	}
	if in, _ := s.GetInstance(ctx, s.DB, ids[2]); in.Busy {
		t.Fatal("a refused lock left an instance locked")
	}
	if err := s.ReleaseInstance(ctx, s.DB, ids[1], "op-1", apiv1.OpStateSuccess, ""); err != nil {
		t.Fatal(err)
	}
	if busy, err := lock(ctx, s, "op-2", ids[1:]); err != nil || len(busy) != 0 {
		t.Fatalf("after release: %v %v", busy, err)
	}
}

func createOp(t *testing.T, s *store.Store, opID, tenantID string, ids []string) {
	t.Helper()
	ctx := context.Background()
	op := apiv1.Operation{ID: opID, Tenant: tenantID, Kind: apiv1.KindResetPassword, Status: apiv1.OperationRunning,
		CreatedAt: s.Now(), RequestedBy: apiv1.Requester{Kind: "key", ID: "k1", Address: "127.0.0.1"}}
	items := make([]store.ItemWork, len(ids))
	for i, id := range ids {
		items[i] = store.ItemWork{Item: apiv1.Item{InstanceID: id, InstanceName: id, State: apiv1.ItemPending, Step: "queued"}, Seq: i}
	}
	mustTx(t, s, func(tx *sql.Tx) error {
		if _, busy, err := s.LockInstances(ctx, tx, opID, op.Kind, ids); err != nil || len(busy) > 0 {
			return fmt.Errorf("lock: %v %v", busy, err)
		}
		_, err := s.CreateOperation(ctx, tx, op, "req-1", items, apiv1.AuditEntry{Tenant: tenantID, Actor: op.RequestedBy,
			Action: "operation." + op.Kind, Target: strings.Join(ids, ","), OperationID: opID, RequestID: "req-1"})
		return err
	})
}

func testFinishItem(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 2)
	createOp(t, s, "op-1", "acme", ids)
	for range 2 { // a finish retried after a crash counts once
		mustTx(t, s, func(tx *sql.Tx) error {
			w, err := s.GetItem(ctx, tx, "op-1", ids[0])
			if err != nil {
				return err
			}
			w.State, w.Step = apiv1.ItemSucceeded, "done"
			return s.FinishItem(ctx, tx, &w, "", nil)
		})
	}
	op, err := s.GetOperation(ctx, s.DB, "op-1")
	if err != nil {
		t.Fatal(err)
	}
	if op.Summary.Succeeded != 1 || op.Summary.Total != 2 {
		t.Fatalf("summary %+v, want 1 of 2 succeeded", op.Summary)
	}
	if in, _ := s.GetInstance(ctx, s.DB, ids[0]); in.Busy {
		t.Fatal("a finished item left its instance locked")
	}
}

func testManyItems(t *testing.T, s *store.Store) {
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 250) // more than one multi-row INSERT holds
	createOp(t, s, "op-1", "acme", ids)
	op, err := s.GetOperation(context.Background(), s.DB, "op-1")
	if err != nil {
		t.Fatal(err)
	}
	if op.Summary.Total != 250 || len(op.Items) != 250 {
		t.Fatalf("total %d, %d items; want 250", op.Summary.Total, len(op.Items))
	}
	for i, it := range op.Items {
		if it.InstanceID != ids[i] {
			t.Fatalf("item %d is %s, want %s", i, it.InstanceID, ids[i])
		}
	}
}

func testInsertEvents(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var evs []store.NewEvent
	for i := range 230 {
		evs = append(evs, store.NewEvent{Tenant: "acme", Type: "instance", Ref: fmt.Sprintf("ins-%03d", i), Data: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	mustTx(t, s, func(tx *sql.Tx) error { return s.InsertEvents(ctx, tx, evs) })
	got, err := s.EventsAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("%d events, want %d", len(got), len(evs))
	}
	for i, e := range got {
		if e.Ref != evs[i].Ref || string(e.Data) != string(evs[i].Data) || e.Tenant != "acme" || e.Type != "instance" {
			t.Fatalf("event %d is %+v, want %+v", i, e, evs[i])
		}
		if i > 0 && e.ID <= got[i-1].ID {
			t.Fatalf("ids out of order at %d: %d after %d", i, e.ID, got[i-1].ID)
		}
	}
}

func testSignInFailures(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	count := func(at time.Time) store.SignInFailures {
		t.Helper()
		f, err := s.CountSignInFailure(ctx, s.DB, "user:alice", at, 15*time.Minute, 3, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := count(now); f.Failures != 1 || !f.LockedUntil.Before(now) {
		t.Fatalf("first failure: %+v", f)
	}
	count(now.Add(time.Minute))
	if f := count(now.Add(2 * time.Minute)); f.Failures != 3 || !f.LockedUntil.Equal(now.Add(12*time.Minute)) {
		t.Fatalf("third failure: %+v, want locked until %v", f, now.Add(12*time.Minute))
	}
	later := now.Add(time.Hour)
	if f := count(later); f.Failures != 1 || !f.WindowStart.Equal(later) || f.LockedUntil.After(later) {
		t.Fatalf("a failure after the window: %+v, want a new window of 1", f)
	}
}

func testEvents(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for i := range 5 {
		if err := s.InsertEvent(ctx, s.DB, "acme", "instance", fmt.Sprint(i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.EventsAfter(ctx, 0, 3)
	if err != nil || len(rows) != 3 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	rest, _ := s.EventsAfter(ctx, rows[2].ID, 10)
	if len(rest) != 2 || rest[0].Ref != "3" || rest[1].Ref != "4" {
		t.Fatalf("after %d: %+v", rows[2].ID, rest)
	}
	last, err := s.LastEventID(ctx)
	if err != nil || last != rest[1].ID {
		t.Fatalf("last %d %v, want %d", last, err, rest[1].ID)
	}
}

func testFirstOperationEvent(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for _, ev := range []struct{ tenant, typ, ref string }{
		{"acme", "instance", "op-1"}, // an instance event with the same ref is not the operation's
		{"acme", "operation", "op-1"},
		{"acme", "item", "op-1"},
		{"other", "operation", "op-2"},
		{"acme", "operation", "op-1"},
	} {
		if err := s.InsertEvent(ctx, s.DB, ev.tenant, ev.typ, ev.ref, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.EventsAfter(ctx, 0, 10)
	if err != nil || len(rows) != 5 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	id, tenant, ok, err := s.FirstOperationEvent(ctx, "op-1")
	if err != nil || !ok || id != rows[1].ID || tenant != "acme" {
		t.Errorf("op-1: %d %q %v %v, want %d acme", id, tenant, ok, err, rows[1].ID)
	}
	if id, tenant, ok, err = s.FirstOperationEvent(ctx, "op-2"); err != nil || !ok || id != rows[3].ID || tenant != "other" {
		t.Errorf("op-2: %d %q %v %v, want %d other", id, tenant, ok, err, rows[3].ID)
	}
	if _, _, ok, err = s.FirstOperationEvent(ctx, "op-none"); err != nil || ok {
		t.Errorf("an operation without events: ok %v, %v", ok, err)
	}
}

func testRollback(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	in := instance("ins-1", "acme", "web")
	mustTx(t, s, func(tx *sql.Tx) error { return s.CreateInstance(ctx, tx, &in) })
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.CreateTenant(ctx, tx, "other", "other"); err != nil {
			return err
		}
		return s.CreateInstance(ctx, tx, &in)
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a duplicate instance: %v, want ErrConflict", err)
	}
	if _, err := s.GetTenant(ctx, s.DB, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed transaction's first insert was kept: %v", err)
	}
}

// parallel runs fn(i) for i < n on n goroutines started together.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func testConcurrentIdempotency(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const n = 16
	errs := parallel(n, func(i int) error {
		return s.InTx(ctx, func(tx *sql.Tx) error {
			return s.PutIdempotency(ctx, tx, "key:k1", "same", store.Idempotency{RequestHash: []byte{byte(i)}, OperationID: fmt.Sprint("op-", i)})
		})
	})
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("a racing put failed with %v, want nil or ErrConflict", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d puts of one key won, want 1", won)
	}
}

func testConcurrentEnds(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	const n = 32
	ids := instances(t, s, "acme", n)
	createOp(t, s, "op-1", "acme", ids)
	if ended, err := s.EndOperation(ctx, "op-1", nil); err != nil || ended {
		t.Fatalf("an operation none of whose items ended was ended (%v, %v)", ended, err)
	}
	var events atomic.Int32
	ended := parallel(n, func(i int) error {
		err := s.InTx(ctx, func(tx *sql.Tx) error {
			w, err := s.GetItem(ctx, tx, "op-1", ids[i])
			if err != nil {
				return err
			}
			w.State, w.Step = apiv1.ItemSucceeded, "done"
			if i%4 == 0 {
				w.State = apiv1.ItemFailed
			}
			return s.FinishItem(ctx, tx, &w, "", nil)
		})
		if err != nil {
			return err
		}
		ok, err := s.EndOperation(ctx, "op-1", func(tx *sql.Tx, op apiv1.Operation) error {
			events.Add(1)
			return nil
		})
		if err == nil && !ok {
			return errNotEnded
		}
		return err
	})
	won := 0
	for _, err := range ended {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, errNotEnded):
			t.Fatal(err)
		}
	}
	if won != 1 || events.Load() != 1 {
		t.Fatalf("%d callers ended the operation (%d events), want exactly 1", won, events.Load())
	}
	op, err := s.GetOperation(ctx, s.DB, "op-1")
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apiv1.OperationPartial || op.Summary.Succeeded != n*3/4 || op.Summary.Failed != n/4 || op.FinishedAt == nil {
		t.Fatalf("operation %s, summary %+v, finished %v; want partial, %d succeeded, %d failed", op.Status, op.Summary, op.FinishedAt, n*3/4, n/4)
	}
	// The last items of a batch often all see every item ended: each late
	// caller learns that the operation ended from one read, without a
	// transaction of its own (counted where the store counts statements).
	before := s.DatabaseStatements()
	if again, err := s.EndOperation(ctx, "op-1", nil); err != nil || again {
		t.Fatalf("an ended operation was ended again (%v, %v)", again, err)
	}
	if n := s.DatabaseStatements() - before; before >= 0 && n != 1 {
		t.Errorf("a call for an ended operation ran %d statements, want 1", n)
	}
}

var errNotEnded = errors.New("not ended by this caller")

// testEndWhileAnotherEnds: a caller of EndOperation that finds another
// ending the operation (its transaction open, holding the row) returns at
// once without ending it, rather than wait for that transaction's commit;
// the other's end stands. SQLite has one writer: the case cannot arise.
func testEndWhileAnotherEnds(t *testing.T, s *store.Store) {
	if s.Dialect() != store.Postgres {
		t.Skip("one writer at a time on SQLite")
	}
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 2)
	createOp(t, s, "op-1", "acme", ids)
	for _, id := range ids {
		if err := s.InTx(ctx, func(tx *sql.Tx) error {
			w, err := s.GetItem(ctx, tx, "op-1", id)
			if err != nil {
				return err
			}
			w.State, w.Step = apiv1.ItemSucceeded, "done"
			return s.FinishItem(ctx, tx, &w, "", nil)
		}); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, ok, err := s.EndOperationIn(ctx, tx, "op-1"); err != nil || !ok {
		t.Fatalf("the first caller did not end the operation (%v, %v)", ok, err)
	}
	late, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if ended, err := s.EndOperation(late, "op-1", nil); err != nil || ended {
		t.Fatalf("a caller beside the one ending the operation: ended %v, %v; want not ended, at once", ended, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	op, err := s.GetOperation(ctx, s.DB, "op-1")
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 2 {
		t.Fatalf("operation %s, summary %+v; want succeeded, 2 succeeded", op.Status, op.Summary)
	}
}

func testConcurrentSignInFailures(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const n = 40
	now := time.Unix(1_800_000_000, 0).UTC()
	for _, err := range parallel(n, func(i int) error {
		return s.InTx(ctx, func(tx *sql.Tx) error {
			_, err := s.CountSignInFailure(ctx, tx, "addr:192.0.2.1", now, 15*time.Minute, 1000, time.Minute)
			return err
		})
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := s.GetSignInFailures(ctx, s.DB, "addr:192.0.2.1")
	if err != nil || f.Failures != n {
		t.Fatalf("%d failures counted (%v), want %d: concurrent failures were lost", f.Failures, err, n)
	}
}

// testConcurrentLocks: operations lock overlapping sets of instances in
// different orders at once. Each instance ends with at most one operation,
// an operation gets all its instances or none, and no deadlock reaches the
// caller (the store runs a deadlock victim's transaction again).
func testConcurrentLocks(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tenant(t, s, "acme")
	ids := instances(t, s, "acme", 12)
	const ops = 24
	sets := make([][]string, ops)
	for i := range sets {
		set := slices.Clone(ids)
		rand.Shuffle(len(set), func(a, b int) { set[a], set[b] = set[b], set[a] })
		sets[i] = set[:4]
	}
	won := make([]bool, ops)
	errs := parallel(ops, func(i int) error {
		busy, err := lock(ctx, s, fmt.Sprint("op-", i), sets[i])
		won[i] = err == nil && len(busy) == 0
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("operation %d: %v", i, err)
		}
	}
	holder := map[string]string{}
	for i := range ops {
		if !won[i] {
			continue
		}
		for _, id := range sets[i] {
			if h, ok := holder[id]; ok {
				t.Fatalf("%s locked by %s and op-%d", id, h, i)
			}
			holder[id] = fmt.Sprint("op-", i)
		}
	}
	for _, id := range ids {
		in, err := s.GetInstance(ctx, s.DB, id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Busy != (holder[id] != "") {
			t.Errorf("%s busy %v, but its holder is %q", id, in.Busy, holder[id])
		}
	}
}

// testConcurrentReconcile: reconciles of one host that each add what they
// find missing, as core.ReconcileHost does, add each domain once.
func testConcurrentReconcile(t *testing.T, s *store.Store) {
	ctx := context.Background()
	h := libvirtHost(t, s)
	domains := []string{"uuid-a", "uuid-b", "uuid-c"}
	errs := parallel(8, func(i int) error {
		return s.InTx(ctx, func(tx *sql.Tx) error {
			if err := s.LockHost(ctx, tx, h.ID); err != nil {
				return err
			}
			have, err := s.HostInstances(ctx, tx, h.Driver, h.ID)
			if err != nil {
				return err
			}
			for _, d := range domains {
				if slices.ContainsFunc(have, func(in apiv1.Instance) bool { return in.Power.Address == d }) {
					continue
				}
				link := apiv1.DriverLink{Driver: h.Driver, Host: h.ID, Address: d}
				in := apiv1.Instance{ID: fmt.Sprintf("ins-%d-%s", i, d), Tenant: "acme", Name: d, OSType: "linux",
					AdminUser: "root", State: apiv1.StateRunning, Power: link, Guest: link}
				if err := s.CreateInstance(ctx, tx, &in); err != nil {
					return err
				}
			}
			return nil
		})
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	have, err := s.HostInstances(ctx, s.DB, h.Driver, h.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != len(domains) {
		t.Fatalf("%d instances for %d domains: concurrent reconciles duplicated some", len(have), len(domains))
	}
}

// testEventsNeverSkipped: writers insert events in transactions that
// commit after random delays, while a follower reads by id as the event
// bus does (id > cursor, cursor = the highest id read). On PostgreSQL ids
// are handed out at insert, not at commit; the follower must still see
// every event.
func testEventsNeverSkipped(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const writers, each = 8, 25
	// written carries the number of committed events once every writer
	// is done; the follower then reads until it has them all, or gives up
	// after a generous while (events held back behind a missing id come
	// once the transactions that could hold it have ended).
	done, written := make(chan struct{}), make(chan int, 1)
	seen := map[string]bool{}
	var followErr error
	go func() {
		defer close(done)
		var cursor int64
		want, deadline := -1, time.Time{}
		for {
			select {
			case want = <-written:
				deadline = time.Now().Add(30 * time.Second)
			default:
			}
			if want >= 0 && (len(seen) >= want || time.Now().After(deadline)) {
				return
			}
			rows, err := s.EventsAfter(ctx, cursor, 1000)
			if err != nil {
				followErr = err
				return
			}
			for _, r := range rows {
				if seen[r.Ref] {
					followErr = fmt.Errorf("event %s read twice", r.Ref)
					return
				}
				seen[r.Ref] = true
				cursor = r.ID
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var committed sync.Map
	errs := parallel(writers, func(w int) error {
		for i := range each {
			ref := fmt.Sprintf("%d-%d", w, i)
			err := s.InTx(ctx, func(tx *sql.Tx) error {
				if err := s.InsertEvent(ctx, tx, "acme", "test", ref, []byte(`{}`)); err != nil {
					return err
				}
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				if i%5 == 4 {
					return errRolledBack // a gap for good: the follower must not wait on it forever
				}
				return nil
			})
			if err != nil && !errors.Is(err, errRolledBack) {
				return err
			}
			if err == nil {
				committed.Store(ref, true)
			}
		}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	committed.Range(func(_, _ any) bool { n++; return true })
	written <- n
	<-done
	if followErr != nil {
		t.Fatal(followErr)
	}
	want := 0
	committed.Range(func(ref, _ any) bool {
		want++
		if !seen[ref.(string)] {
			t.Errorf("event %s committed but the follower never saw it", ref)
		}
		return true
	})
	if len(seen) != want {
		t.Fatalf("the follower saw %d events, %d committed", len(seen), want)
	}
}
