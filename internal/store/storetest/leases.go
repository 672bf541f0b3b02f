package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// leaseCases are the conformance cases of leases and host status.
var leaseCases = []struct {
	name string
	fn   func(t *testing.T, s *store.Store)
}{
	{"ALeaseHasOneHolderAndANewEpochPerTerm", testLeaseTerms},
	{"ALeaseLapsesAfterItsTTL", testLeaseExpiry},
	{"RenewLeasesRenewsOnlyTheHoldersRunningTerms", testRenewLeases},
	{"ConcurrentAcquiresGiveOneHolder", testConcurrentAcquire},
	{"HostStatusIsWrittenOnlyByTheHostsLeaseHolder", testHostStatus},
}

func acquire(t *testing.T, s *store.Store, name, holder string, ttl time.Duration) (store.Lease, bool) {
	t.Helper()
	l, ok, err := s.AcquireLease(context.Background(), name, holder, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return l, ok
}

func checkLease(s *store.Store, l store.Lease) error {
	return s.InTx(context.Background(), func(tx *sql.Tx) error { return s.CheckLease(context.Background(), tx, l) })
}

func testLeaseTerms(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a1, ok := acquire(t, s, "duty", "replica-a", time.Minute)
	if !ok || a1.Epoch != 1 || a1.Holder != "replica-a" {
		t.Fatalf("first acquire: %+v %v, want replica-a's, epoch 1", a1, ok)
	}
	if _, ok := acquire(t, s, "duty", "replica-b", time.Minute); ok {
		t.Fatal("replica-b acquired a lease replica-a holds")
	}
	if again, ok := acquire(t, s, "duty", "replica-a", time.Minute); !ok || again.Epoch != 1 {
		t.Fatalf("the holder acquiring again: %+v %v, want a renewal in epoch 1", again, ok)
	}
	if err := checkLease(s, a1); err != nil {
		t.Fatalf("the holder's own term: %v", err)
	}
	if err := s.ReleaseLease(ctx, "duty", "replica-b"); err != nil {
		t.Fatal(err)
	}
	if err := checkLease(s, a1); err != nil {
		t.Fatalf("another replica's release ended the holder's term: %v", err)
	}
	if err := s.ReleaseLease(ctx, "duty", "replica-a"); err != nil {
		t.Fatal(err)
	}
	if err := checkLease(s, a1); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("a released term: %v, want ErrLeaseLost", err)
	}
	b, ok := acquire(t, s, "duty", "replica-b", time.Minute)
	if !ok || b.Epoch != 2 {
		t.Fatalf("after the release: %+v %v, want replica-b's in epoch 2", b, ok)
	}
	if err := checkLease(s, a1); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the old holder's term after another took over: %v, want ErrLeaseLost", err)
	}
	stale := b
	stale.Epoch = 1
	if err := checkLease(s, stale); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the right holder with an old epoch: %v, want ErrLeaseLost", err)
	}
	taken, err := s.TakeLease(ctx, "duty", "replica-a", time.Minute)
	if err != nil || taken.Epoch != 3 {
		t.Fatalf("TakeLease: %+v %v, want replica-a's in epoch 3", taken, err)
	}
	if err := checkLease(s, b); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the term TakeLease ended: %v, want ErrLeaseLost", err)
	}
	got, err := s.GetLease(ctx, "duty")
	if err != nil || got.Holder != "replica-a" || got.Epoch != 3 {
		t.Fatalf("GetLease: %+v %v", got, err)
	}
	if _, err := s.GetLease(ctx, "never"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetLease of a lease never taken: %v, want ErrNotFound", err)
	}
}

func testLeaseExpiry(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	a, ok := acquire(t, s, "duty", "replica-a", ttl)
	if !ok {
		t.Fatal("not acquired")
	}
	// The database's clock decides; poll rather than trust ours.
	deadline := time.Now().Add(30 * time.Second)
	var b store.Lease
	for {
		if b, ok = acquire(t, s, "duty", "replica-b", time.Minute); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease never lapsed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.Epoch != a.Epoch+1 {
		t.Fatalf("taken after it lapsed: epoch %d, want %d", b.Epoch, a.Epoch+1)
	}
	if got, err := s.RenewLeases(ctx, "replica-a", []string{"duty"}, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("the lapsed holder renewed: %+v %v", got, err)
	}
	// The same holder coming back after its own lease lapsed starts a new
	// term too: work it stamped in the old one is refused.
	c, ok := acquire(t, s, "mine", "replica-c", ttl)
	if !ok {
		t.Fatal("not acquired")
	}
	deadline = time.Now().Add(30 * time.Second)
	for checkLease(s, c) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the lease never lapsed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	again, ok := acquire(t, s, "mine", "replica-c", time.Minute)
	if !ok || again.Epoch != c.Epoch+1 {
		t.Fatalf("the holder again after its term lapsed: %+v %v, want epoch %d", again, ok, c.Epoch+1)
	}
}

func testRenewLeases(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for _, l := range []struct{ name, holder string }{
		{"host:h1", "replica-a"}, {"host:h2", "replica-a"}, {"host:h3", "replica-b"}, {"events", "replica-a"},
	} {
		if _, ok := acquire(t, s, l.name, l.holder, time.Minute); !ok {
			t.Fatalf("%s not acquired", l.name)
		}
	}
	before := s.Statements()
	got, err := s.RenewLeases(ctx, "replica-a", []string{"host:h1", "host:h2", "host:h3", "host:h9"}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Statements() - before; n > 1 {
		t.Errorf("renewing took %d statements, want one", n)
	}
	var names []string
	for _, l := range got {
		names = append(names, l.Name)
		if l.Holder != "replica-a" || l.Epoch != 1 || time.Until(l.ExpiresAt) < time.Minute+30*time.Second {
			t.Errorf("renewed %+v, want replica-a's in epoch 1 for two more minutes", l)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"host:h1", "host:h2"}) {
		t.Fatalf("renewed %v, want host:h1 and host:h2 (host:h3 is replica-b's, host:h9 nobody's)", names)
	}
	held, err := s.LeasesHeldBy(ctx, "replica-a")
	if err != nil {
		t.Fatal(err)
	}
	names = nil
	for _, l := range held {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"events", "host:h1", "host:h2"}) {
		t.Fatalf("LeasesHeldBy(replica-a) = %v", names)
	}
	if err := s.ReleaseLease(ctx, "host:h1", "replica-a"); err != nil {
		t.Fatal(err)
	}
	if held, _ := s.LeasesHeldBy(ctx, "replica-a"); len(held) != 2 {
		t.Fatalf("LeasesHeldBy after a release: %+v, want the two others", held)
	}
}

func testConcurrentAcquire(t *testing.T, s *store.Store) {
	ctx := context.Background()
	won := make([]bool, 8)
	errs := parallel(len(won), func(i int) error {
		_, ok, err := s.AcquireLease(ctx, "duty", fmt.Sprintf("replica-%d", i), time.Minute)
		won[i] = ok
		return err
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, ok := range won {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d replicas acquired one lease at once, want 1", n)
	}
}

// libvirtHost adds libvirt host host-1 of tenant acme (created too).
func libvirtHost(t *testing.T, s *store.Store) apiv1.Host {
	t.Helper()
	tenant(t, s, "acme")
	h := apiv1.Host{ID: "host-1", Tenant: "acme", Name: "kvm", Driver: "libvirt", URI: "qemu:///system", MaxConcurrency: 4,
		DefaultOSType: "linux"}
	if err := s.CreateHost(context.Background(), s.DB, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func testHostStatus(t *testing.T, s *store.Store) {
	ctx := context.Background()
	h := libvirtHost(t, s)
	if _, err := s.GetHostStatus(ctx, h.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("status before any owner wrote one: %v, want ErrNotFound", err)
	}
	a, ok := acquire(t, s, store.HostLease(h.ID), "replica-a", time.Minute)
	if !ok {
		t.Fatal("not acquired")
	}
	since := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	if err := s.PutHostStatus(ctx, a, store.HostStatus{HostID: h.ID, Connected: true, LibvirtVersion: "9.0.0", Since: since}); err != nil {
		t.Fatal(err)
	}
	st, err := s.GetHostStatus(ctx, h.ID)
	if err != nil || st.Owner != "replica-a" || st.Epoch != a.Epoch || !st.Connected || st.LibvirtVersion != "9.0.0" ||
		!st.Since.Equal(since) || !st.Current {
		t.Fatalf("status: %+v %v", st, err)
	}
	forged := store.Lease{Name: store.HostLease(h.ID), Holder: "replica-b", Epoch: a.Epoch}
	if err := s.PutHostStatus(ctx, forged, store.HostStatus{HostID: h.ID, Error: "down"}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("a replica without the lease wrote the status: %v, want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx, a.Name, a.Holder); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHostStatus(ctx, a, store.HostStatus{HostID: h.ID, Error: "late"}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the owner wrote after its term ended: %v, want ErrLeaseLost", err)
	}
	all, err := s.ListHostStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := all[h.ID]; len(all) != 1 || st.Owner != "replica-a" || !st.Connected || st.Current {
		t.Fatalf("statuses after the owner's term ended: %+v, want replica-a's last view, no longer current", all)
	}
	if err := s.InTx(ctx, func(tx *sql.Tx) error { return s.DeleteHost(ctx, tx, h) }); err != nil {
		t.Fatal(err)
	}
	if all, err := s.ListHostStatuses(ctx); err != nil || len(all) != 0 {
		t.Fatalf("statuses after the host was removed: %+v %v", all, err)
	}
	if _, err := s.GetLease(ctx, store.HostLease(h.ID)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a removed host's lease: %v, want ErrNotFound", err)
	}
}
