package inventory_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/inventory"
	"github.com/fleetpass/fleetpass/internal/rendezvous"
	"github.com/fleetpass/fleetpass/internal/store"
)

// members is a membership the test sets.
type members struct {
	id string
	mu sync.Mutex
	l  []string
}

func (m *members) ID() string { return m.id }
func (m *members) Alive(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.l), nil
}
func (m *members) set(ids ...string) {
	m.mu.Lock()
	m.l = ids
	m.mu.Unlock()
}

// conns records what host ownership asks of the driver.
type conns struct {
	mu     sync.Mutex
	follow map[string]bool
}

func (c *conns) SetHost(h apiv1.Host, follow bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.follow[h.ID] = follow
	return nil
}
func (c *conns) RemoveHost(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.follow, id)
}
func (c *conns) HostIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.follow {
		out = append(out, id)
	}
	return out
}
func (c *conns) ConnState(id string) store.HostStatus {
	return store.HostStatus{HostID: id, Connected: true, LibvirtVersion: "9.0.0", Since: time.UnixMilli(1000)}
}
func (c *conns) following(id string) (follow, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	follow, known = c.follow[id]
	return
}

type replica struct {
	m *members
	c *conns
	o *inventory.HostOwners
}

// twoReplicas are two replicas' host ownerships on one database.
func twoReplicas(t *testing.T) (*store.Store, apiv1.Host, [2]replica) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := apiv1.Host{ID: "hst-1", Tenant: "acme", Name: "kvm", Driver: "libvirt", URI: "qemu:///system", MaxConcurrency: 4,
		DefaultOSType: "linux"}
	if err := st.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := st.CreateTenant(ctx, tx, "acme", "acme"); err != nil {
			return err
		}
		return st.CreateHost(ctx, tx, &h)
	}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rs [2]replica
	for i, id := range []string{"rep-a", "rep-b"} {
		m := &members{id: id, l: []string{"rep-a", "rep-b"}}
		c := &conns{follow: map[string]bool{}}
		rs[i] = replica{m, c, inventory.NewHostOwners(st, m, c, log, inventory.OwnerConfig{TTL: time.Minute})}
	}
	return st, h, rs
}

// passBoth runs a pass on each replica and returns the one that owns
// hostID then.
func passBoth(ctx context.Context, rs [2]replica, hostID string) replica {
	for _, r := range rs {
		r.o.Pass(ctx)
	}
	if rs[0].o.Owns(hostID) {
		return rs[0]
	}
	return rs[1]
}

func TestTheReplicaHashingPicksFollowsAHostAloneAndRecordsItsState(t *testing.T) {
	st, h, rs := twoReplicas(t)
	ctx := context.Background()
	passBoth(ctx, rs, h.ID)
	want := rendezvous.Pick(store.HostLease(h.ID), []string{"rep-a", "rep-b"})
	for _, r := range rs {
		follow, known := r.c.following(h.ID)
		if !known || follow != (r.m.id == want) || r.o.Owns(h.ID) != (r.m.id == want) {
			t.Errorf("%s: follows %v (known %v), owns %v; the owner is %s", r.m.id, follow, known, r.o.Owns(h.ID), want)
		}
	}
	s, err := st.GetHostStatus(ctx, h.ID)
	if err != nil || s.Owner != want || !s.Connected || s.LibvirtVersion != "9.0.0" || !s.Current {
		t.Fatalf("host status %+v %v, want the owner's", s, err)
	}
}

func TestAnOwnerHandsAHostOverToAJoiningReplicaHashingPicks(t *testing.T) {
	st, h, rs := twoReplicas(t)
	ctx := context.Background()
	x := passBoth(ctx, rs, h.ID)
	// A third replica joins, one that hashing gives the host to.
	var zid string
	for i := 0; ; i++ {
		zid = fmt.Sprintf("rep-z%d", i)
		if rendezvous.Pick(store.HostLease(h.ID), []string{"rep-a", "rep-b", zid}) == zid {
			break
		}
	}
	all := []string{"rep-a", "rep-b", zid}
	z := replica{&members{id: zid, l: all}, &conns{follow: map[string]bool{}}, nil}
	z.o = inventory.NewHostOwners(st, z.m, z.c, slog.New(slog.NewTextHandler(io.Discard, nil)), inventory.OwnerConfig{TTL: time.Minute})
	rs[0].m.set(all...)
	rs[1].m.set(all...)
	z.o.Pass(ctx)
	if z.o.Owns(h.ID) {
		t.Fatal("the joining replica took the host before its owner let go")
	}
	x.o.Pass(ctx)
	if follow, _ := x.c.following(h.ID); follow || x.o.Owns(h.ID) {
		t.Fatal("the old owner still follows the host")
	}
	z.o.Pass(ctx)
	if follow, _ := z.c.following(h.ID); !follow || !z.o.Owns(h.ID) {
		t.Fatal("the new owner does not follow the host")
	}
}

func TestAnOwnerWhoseLeaseWasTakenStopsFollowingAtItsNextRenewal(t *testing.T) {
	st, h, rs := twoReplicas(t)
	ctx := context.Background()
	x := passBoth(ctx, rs, h.ID)
	old, _ := x.o.Lease(h.ID)
	if _, err := st.TakeLease(ctx, store.HostLease(h.ID), "rep-elsewhere", time.Minute); err != nil {
		t.Fatal(err)
	}
	x.o.Pass(ctx)
	if follow, _ := x.c.following(h.ID); follow || x.o.Owns(h.ID) {
		t.Fatal("a replica whose lease was taken still follows the host")
	}
	if err := st.InTx(ctx, func(tx *sql.Tx) error { return st.CheckLease(ctx, tx, old) }); err == nil {
		t.Fatal("the old term still passes the fence")
	}
}

func TestARemovedHostIsDisconnected(t *testing.T) {
	st, h, rs := twoReplicas(t)
	ctx := context.Background()
	passBoth(ctx, rs, h.ID)
	if err := st.InTx(ctx, func(tx *sql.Tx) error { return st.DeleteHost(ctx, tx, h) }); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		r.o.Pass(ctx)
		if _, known := r.c.following(h.ID); known || r.o.Owns(h.ID) {
			t.Errorf("%s keeps a removed host", r.m.id)
		}
	}
}
