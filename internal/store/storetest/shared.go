package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// The cases of what replicas share through the database: rate budgets,
// host slots and wake-up notifications.

func testRateBudget(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	s.SetClock(func() time.Time { return now })
	// 10/s, bursts of 3: three at once, then a wait of one interval.
	for i, want := range []bool{true, true, true, false} {
		wait, ok, err := s.TakeRate(ctx, "key:a", 100*time.Millisecond, 3)
		if err != nil || ok != want {
			t.Fatalf("request %d: ok %v, %v; want %v", i+1, ok, err, want)
		}
		if !ok && wait != 100*time.Millisecond {
			t.Fatalf("request %d: wait %s, want 100ms", i+1, wait)
		}
	}
	if _, ok, _ := s.TakeRate(ctx, "key:b", 100*time.Millisecond, 3); !ok {
		t.Fatal("another key was refused")
	}
	now = now.Add(100 * time.Millisecond)
	if _, ok, err := s.TakeRate(ctx, "key:a", 100*time.Millisecond, 3); err != nil || !ok {
		t.Fatalf("after one interval: %v %v", ok, err)
	}
	if _, ok, _ := s.TakeRate(ctx, "key:a", 100*time.Millisecond, 3); ok {
		t.Fatal("a refill of one interval allowed two requests")
	}
	// Pruning drops budgets full since before the horizon, and only those.
	now = now.Add(time.Hour)
	if err := s.PruneRateLimits(ctx, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok, err := s.TakeRate(ctx, "key:a", time.Hour, 3); err != nil || !ok {
			t.Fatalf("a pruned (full) budget: %v %v", ok, err)
		}
	}
}

func slotHost(t *testing.T, s *store.Store, id string, limit int) {
	t.Helper()
	mustTx(t, s, func(tx *sql.Tx) error {
		return s.CreateHost(context.Background(), tx, &apiv1.Host{ID: id, Tenant: "acme", Name: id, Driver: "libvirt",
			URI: "qemu+ssh://" + id + "/system", MaxConcurrency: limit})
	})
}

func slot(host, holder, replica string) store.SlotRequest {
	return store.SlotRequest{HostKey: "libvirt/" + host, HostID: host, DefaultLimit: 100, Holder: holder, Replica: replica,
		TTL: 15 * time.Second}
}

func testHostSlots(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	s.SetClock(func() time.Time { return now })
	tenant(t, s, "acme")
	slotHost(t, s, "h1", 2)
	acquire := func(holder, replica string, want bool) {
		t.Helper()
		got, err := s.AcquireHostSlot(ctx, slot("h1", holder, replica))
		if err != nil || got != want {
			t.Fatalf("acquire %s on %s: %v, %v; want %v", holder, replica, got, err, want)
		}
	}
	acquire("op1/a", "r1", true)
	acquire("op1/b", "r2", true)
	acquire("op1/c", "r1", false) // the host's max_concurrency is 2
	// A new execution of an item takes over its own slot, even when the
	// host is full (its replica died holding it).
	acquire("op1/b", "r3", true)
	if held, err := s.RenewHostSlot(ctx, "libvirt/h1", "op1/b", "r2", 15*time.Second); err != nil || held {
		t.Fatalf("the replica whose slot was taken over renewed it: %v %v", held, err)
	}
	if err := s.ReleaseHostSlot(ctx, "libvirt/h1", "op1/b", "r2"); err != nil {
		t.Fatal(err)
	}
	acquire("op1/c", "r1", false) // r2's release did not free r3's slot
	if err := s.ReleaseHostSlot(ctx, "libvirt/h1", "op1/b", "r3"); err != nil {
		t.Fatal(err)
	}
	acquire("op1/c", "r1", true)
	if n, err := s.HostSlotsHeld(ctx, "libvirt/h1"); err != nil || n != 2 {
		t.Fatalf("held %d, %v; want 2", n, err)
	}
	// A renewed slot outlives one that was not; an expired one is free.
	now = now.Add(10 * time.Second)
	if held, err := s.RenewHostSlot(ctx, "libvirt/h1", "op1/a", "r1", 15*time.Second); err != nil || !held {
		t.Fatalf("renew: %v %v", held, err)
	}
	now = now.Add(10 * time.Second) // op1/c expired 5 s ago
	if n, _ := s.HostSlotsHeld(ctx, "libvirt/h1"); n != 1 {
		t.Fatalf("held %d after op1/c expired, want 1", n)
	}
	acquire("op2/d", "r2", true)
	acquire("op2/e", "r2", false)
	// Another host's slots are its own; a host without a row (removed)
	// falls back to the default bound.
	slotHost(t, s, "h2", 1)
	if got, err := s.AcquireHostSlot(ctx, slot("h2", "op2/e", "r2")); err != nil || !got {
		t.Fatalf("h2: %v %v", got, err)
	}
	r := slot("gone", "op3/x", "r1")
	r.DefaultLimit = 1
	if got, err := s.AcquireHostSlot(ctx, r); err != nil || !got {
		t.Fatalf("a host without a row: %v %v", got, err)
	}
	r.Holder = "op3/y"
	if got, err := s.AcquireHostSlot(ctx, r); err != nil || got {
		t.Fatalf("a host without a row, past its default bound: %v %v", got, err)
	}
}

func testConcurrentHostSlots(t *testing.T, s *store.Store) {
	tenant(t, s, "acme")
	slotHost(t, s, "h1", 3)
	var got atomic.Int64
	errs := parallel(20, func(i int) error {
		ok, err := s.AcquireHostSlot(context.Background(), slot("h1", fmt.Sprintf("op/%02d", i), fmt.Sprintf("r%d", i%3)))
		if ok {
			got.Add(1)
		}
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 3 {
		t.Fatalf("%d of 20 concurrent acquires got a slot of a host bounded at 3", got.Load())
	}
}

// testWakeups: on PostgreSQL, committed writers wake the listeners of
// every replica (this store's own listener stands for them), rolled back
// ones do not; on SQLite nothing is sent and Listen returns at once.
func testWakeups(t *testing.T, s *store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	got := map[string][]string{}
	for _, ch := range []string{store.NotifyEvents, store.NotifyAgentCommands, store.NotifyAgentAcks} {
		s.OnNotify(ch, func(payload string) {
			mu.Lock()
			defer mu.Unlock()
			got[ch] = append(got[ch], payload)
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Listen(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	if s.Dialect() != store.Postgres {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Listen did not return on SQLite")
		}
		return
	}
	seen := func(ch, payload string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range got[ch] {
				if p == payload {
					return true
				}
			}
			return false
		}
	}
	count := func(ch string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(got[ch])
	}
	waitFor(t, "the catch-up wake-up after connecting", seen(store.NotifyEvents, store.WakeAll))
	tenant(t, s, "acme")
	ins := instances(t, s, "acme", 1)

	// A rolled-back event wakes nobody; a committed one does.
	before := count(store.NotifyEvents)
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.InsertEvent(ctx, tx, "acme", "test", "x", []byte(`{}`)); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("the transaction did not fail")
	}
	mustTx(t, s, func(tx *sql.Tx) error { return s.InsertEvent(ctx, tx, "acme", "test", "y", []byte(`{}`)) })
	waitFor(t, "an event wake-up", func() bool { return count(store.NotifyEvents) > before })
	time.Sleep(200 * time.Millisecond)
	if n := count(store.NotifyEvents) - before; n != 1 {
		t.Fatalf("%d event wake-ups for one committed and one rolled-back event, want 1", n)
	}

	// A stored command wakes its agent's poll; an ack its waiter.
	mustTx(t, s, func(tx *sql.Tx) error {
		return s.CreateAgent(ctx, tx, store.Agent{ID: "agt-1", InstanceID: ins[0], Tenant: "acme", PublicKey: []byte{1},
			SecretHash: []byte{2}, Hostname: "h", OSType: "linux", Version: "1"})
	})
	if err := s.InsertAgentCommand(ctx, s.DB, store.AgentCommand{ID: "cmd-1", AgentID: "agt-1", Kind: "set_password",
		User: "root", Sealed: []byte{3}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's wake-up", seen(store.NotifyAgentCommands, "agt-1"))
	if _, err := s.TakeAgentCommands(ctx, s.DB, "agt-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.AckAgentCommand(ctx, s.DB, "agt-1", "cmd-1", "ok", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ack's wake-up", seen(store.NotifyAgentAcks, "cmd-1"))
	// Acknowledging again finds nothing, and wakes nobody.
	acks := count(store.NotifyAgentAcks)
	if err := s.AckAgentCommand(ctx, s.DB, "agt-1", "cmd-1", "ok", 0, ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second ack: %v, want ErrNotFound", err)
	}
	time.Sleep(200 * time.Millisecond)
	if count(store.NotifyAgentAcks) != acks {
		t.Fatal("a refused ack woke a waiter")
	}
	if st := s.NotifyStats(); !st.Listening || st.Received == 0 {
		t.Fatalf("stats %+v", st)
	}

	// A lost listener connection reconnects and wakes every waiter (what
	// was sent meanwhile is lost), then delivers again.
	catchUps := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, p := range got[store.NotifyAgentAcks] {
			if p == store.WakeAll {
				n++
			}
		}
		return n
	}
	before = catchUps()
	if _, err := s.DB.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the catch-up wake-up after reconnecting", func() bool { return catchUps() > before })
	if err := s.InsertAgentCommand(ctx, s.DB, store.AgentCommand{ID: "cmd-2", AgentID: "agt-1", Kind: "set_password",
		User: "root", Sealed: []byte{3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeAgentCommands(ctx, s.DB, "agt-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.AckAgentCommand(ctx, s.DB, "agt-1", "cmd-2", "ok", 0, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an ack's wake-up after reconnecting", seen(store.NotifyAgentAcks, "cmd-2"))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
