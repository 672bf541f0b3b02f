package cluster_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/cluster"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

func TestReplicaIDsAreCheckedAndRandomByDefault(t *testing.T) {
	s := storetest.OpenSQLite(t)
	for _, c := range []struct {
		id string
		ok bool
	}{
		{"", true}, {"alpha", true}, {"r-01.eu_west", true},
		{"-lead", false}, {"has space", false}, {"a/b", false}, {string(make([]byte, 64)), false},
	} {
		m, err := cluster.New(s, cluster.Config{ID: c.id})
		if (err == nil) != c.ok {
			t.Errorf("id %q: %v", c.id, err)
		}
		if err == nil && c.id == "" && !cluster.ValidID(m.ID()) {
			t.Errorf("random id %q is not valid", m.ID())
		}
	}
	if a, b := cluster.NewID(), cluster.NewID(); a == b {
		t.Errorf("two random ids are equal: %s", a)
	}
	if _, err := cluster.New(s, cluster.Config{Heartbeat: 5 * time.Second, TTL: 6 * time.Second}); err == nil {
		t.Error("a time-to-live shorter than two heartbeats was accepted")
	}
}

// TestAnExclusiveReplicaCountsEveryOtherAsDead: on SQLite (one process
// per data directory) a previous run's id is dead at once, whatever its
// last heartbeat, and can be forgotten; this replica cannot.
func TestAnExclusiveReplicaCountsEveryOtherAsDead(t *testing.T) {
	s := storetest.OpenSQLite(t)
	ctx := context.Background()
	prev, err := cluster.New(s, cluster.Config{ID: "previous-run"})
	if err != nil {
		t.Fatal(err)
	}
	if err := prev.Join(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := cluster.New(s, cluster.Config{ID: "this-run", Exclusive: true, Address: "http://127.0.0.1:8080", Version: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.Trusted() {
		t.Fatal("a replica that just joined does not trust its membership")
	}
	all, err := m.Members(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("members %+v (%v)", all, err)
	}
	live, err := m.Liveness(ctx)
	if err != nil || len(live) != 2 || !live["this-run"] || live["previous-run"] {
		t.Fatalf("liveness %v (%v), want this-run alive and previous-run dead", live, err)
	}
	if err := m.Forget(ctx, "this-run"); !errors.Is(err, cluster.ErrAlive) {
		t.Errorf("forget self: %v", err)
	}
	if err := m.Forget(ctx, "previous-run"); err != nil {
		t.Errorf("forget the previous run: %v", err)
	}
	if err := m.Forget(ctx, "previous-run"); !errors.Is(err, cluster.ErrUnknown) {
		t.Errorf("forget it again: %v", err)
	}
	if err := m.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	all, _ = m.Members(ctx)
	if len(all) != 1 || all[0].Alive || all[0].StoppedAt == nil {
		t.Fatalf("after leaving: %+v", all)
	}
}

// TestAReplicaWhoseHeartbeatFailsFencesItselfWithinItsTrustWindow: once
// the database is gone, the replica stops trusting itself before its
// time-to-live runs out (when the others would take over).
func TestAReplicaWhoseHeartbeatFailsFencesItselfWithinItsTrustWindow(t *testing.T) {
	s := storetest.OpenSQLite(t)
	var fenced atomic.Int64
	m, err := cluster.New(s, cluster.Config{ID: "solo", Heartbeat: 50 * time.Millisecond, TTL: 1200 * time.Millisecond,
		OnFence: func(error) { fenced.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Join(ctx); err != nil {
		t.Fatal(err)
	}
	go m.Run(ctx)
	s.DB.Close() // every heartbeat fails from now on
	cut := time.Now()
	testutil.WaitFor(t, time.Minute, "the replica to fence itself", func() bool { return fenced.Load() == 1 })
	if m.Trusted() {
		t.Fatal("fenced but still trusted")
	}
	// The fence falls within the trust window of the last heartbeat, so
	// before the time-to-live from the cut (loose bound: a loaded machine
	// only delays the observation, never the fence decision itself).
	if d := time.Since(cut); d < 100*time.Millisecond {
		t.Errorf("fenced %v after the cut, before its trust window could lapse", d)
	}
}

// TestOneReplicaAtATimeDeletesExpiredReplayKeys: expired replay keys are
// deleted by the holder of the janitor's lease, not by every signed
// request on every replica; keys still in their window stay.
func TestOneReplicaAtATimeDeletesExpiredReplayKeys(t *testing.T) {
	s := storetest.OpenSQLite(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	if _, err := s.UseReplayKey(ctx, "zc2:old", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseReplayKey(ctx, "zc2:live", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var logs testutil.LogBuffer
	for _, id := range []string{"a", "b"} {
		m, err := cluster.New(s, cluster.Config{ID: id, JanitorEvery: 50 * time.Millisecond, Log: logs.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		go m.Run(ctx)
	}
	testutil.WaitFor(t, time.Minute, "a janitor to delete the expired key", func() bool {
		return logs.Contains("janitor: deleted expired replay keys")
	})
	if _, ok, err := s.AcquireLease(ctx, cluster.JanitorLease, "probe", time.Minute); err != nil || ok {
		t.Errorf("the janitor's lease was free (%v) while a replica tidied", err)
	}
	if fresh, err := s.UseReplayKey(ctx, "zc2:live", now.Add(time.Hour)); err != nil || fresh {
		t.Errorf("a key within its window was deleted: fresh %v, %v", fresh, err)
	}
	cancel()
	var deleted []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "janitor: deleted") {
			deleted = append(deleted, line)
		}
	}
	if len(deleted) != 1 {
		t.Errorf("the one expired key was deleted %d times:\n%s", len(deleted), strings.Join(deleted, "\n"))
	}
}
