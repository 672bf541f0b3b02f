package server_test

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/rendezvous"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// replicaSet is in-process replicas sharing one PostgreSQL database and
// one sealing key.
type replicaSet struct {
	t       *testing.T
	dbURL   string
	keyFile string
	admin   servertest.Key
}

func newReplicaSet(t *testing.T) *replicaSet {
	t.Helper()
	if testing.Short() {
		t.Skip("several replicas need PostgreSQL")
	}
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	if _, err := sealer.LoadOrCreate(keyFile); err != nil {
		t.Fatal(err)
	}
	return &replicaSet{t: t, dbURL: storetest.PostgresURL(t), keyFile: keyFile,
		admin: servertest.Key{ID: crashKeyID, Secret: crashSecret}}
}

func (rs *replicaSet) start(opts ...servertest.Option) *servertest.Server {
	rs.t.Helper()
	return servertest.Start(rs.t, append([]servertest.Option{servertest.WithoutSim(), servertest.WithAdminKey(rs.admin),
		servertest.WithTenants("acme"), servertest.WithConfig(func(c *server.Config) {
			c.DatabaseURL, c.SecretKeyFile = rs.dbURL, rs.keyFile
		})}, opts...)...)
}

// waitReplicas waits until each replica has seen them all alive, so that
// they agree on who owns what.
func waitReplicas(t *testing.T, rs ...*servertest.Server) []string {
	t.Helper()
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.HostOwners().ID())
	}
	slices.Sort(ids)
	if !testutil.Eventually(30*time.Second, func() bool {
		for _, r := range rs {
			if !slices.Equal(r.HostOwners().Alive(), ids) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the replicas %v never saw each other", ids)
	}
	return ids
}

// owner waits until some replica holds the host's lease and has recorded
// the host's status, and returns that replica.
func owner(t *testing.T, hostID string, rs ...*servertest.Server) *servertest.Server {
	t.Helper()
	var got *servertest.Server
	if !testutil.Eventually(30*time.Second, func() bool {
		for _, r := range rs {
			if r.HostOwners().Owns(hostID) {
				st, err := r.Store().GetHostStatus(context.Background(), hostID)
				if err == nil && st.Current && st.Owner == r.HostOwners().ID() {
					got = r
					return true
				}
			}
		}
		return false
	}) {
		t.Fatalf("no replica owns host %s", hostID)
	}
	return got
}

func TestAHostAddedOnOneReplicaIsOwnedByTheOneHashingPicksAndRemovedEverywhere(t *testing.T) {
	rs := newReplicaSet(t)
	a, b := rs.start(), rs.start()
	ids := waitReplicas(t, a, b)

	var h apiv1.Host
	a.MustDo(rs.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable, Tenant: "acme"}, http.StatusCreated, &h)
	x := owner(t, h.ID, a, b)
	if want := rendezvous.Pick(store.HostLease(h.ID), ids); x.HostOwners().ID() != want {
		t.Fatalf("host owned by %s, rendezvous hashing picks %s", x.HostOwners().ID(), want)
	}
	y := a
	if x == a {
		y = b
	}
	if y.HostOwners().Owns(h.ID) {
		t.Fatal("two replicas own the host")
	}
	// Every replica knows the host (the engine may act on it anywhere),
	// and answers the same: the owner's view.
	for _, r := range []*servertest.Server{a, b} {
		if !testutil.Eventually(10*time.Second, func() bool { return slices.Contains(r.LibvirtHostIDs(), h.ID) }) {
			t.Fatalf("replica %s has no connection for the host", r.HostOwners().ID())
		}
		var got apiv1.Host
		r.MustDo(rs.admin, "GET", "/v1/hosts/"+h.ID, nil, http.StatusOK, &got)
		if got.Owner != x.HostOwners().ID() || got.Connected || got.Error == "" {
			t.Errorf("replica %s says %+v, want owner %s, not connected, with its error", r.HostOwners().ID(), got,
				x.HostOwners().ID())
		}
	}

	// The owner stops: the other takes the host over (a stopping replica
	// hands its hosts over; a killed one's lease runs out, see
	// TestAKilledOwnersLibvirtHostIsTakenOver).
	began := time.Now()
	x.Stop()
	if o := owner(t, h.ID, y); o != y {
		t.Fatalf("owned by %v", o)
	}
	t.Logf("hand-over on a stop took %v", time.Since(began).Round(time.Millisecond))
	var got apiv1.Host
	y.MustDo(rs.admin, "GET", "/v1/hosts/"+h.ID, nil, http.StatusOK, &got)
	if got.Owner != y.HostOwners().ID() {
		t.Fatalf("after the hand-over: %+v", got)
	}

	// A replica joining takes back the hosts hashing gives it.
	z := rs.start()
	ids = waitReplicas(t, y, z)
	want := rendezvous.Pick(store.HostLease(h.ID), ids)
	if !testutil.Eventually(30*time.Second, func() bool {
		o := owner(t, h.ID, y, z)
		return o.HostOwners().ID() == want
	}) {
		t.Fatalf("the host did not move to %s, which hashing now picks", want)
	}

	// Removed through one replica, it is gone from every one.
	z.MustDo(rs.admin, "DELETE", "/v1/hosts/"+h.ID, nil, http.StatusNoContent, nil)
	for _, r := range []*servertest.Server{y, z} {
		if !testutil.Eventually(10*time.Second, func() bool {
			return !slices.Contains(r.LibvirtHostIDs(), h.ID) && !r.HostOwners().Owns(h.ID)
		}) {
			t.Fatalf("replica %s still has the removed host", r.HostOwners().ID())
		}
	}
}

func TestServeLibvirtOnReplicasStartingTogetherAddsTheHostOnce(t *testing.T) {
	rs := newReplicaSet(t)
	// Started first, alone: bootstrap is not what this test is about.
	rs.start()
	var wg sync.WaitGroup
	servers := make([]*servertest.Server, 3)
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i] = rs.start(servertest.WithConfig(func(c *server.Config) {
				c.LibvirtHosts, c.LibvirtTenant = []string{unreachable}, "lab"
			}))
		}()
	}
	wg.Wait()
	for _, s := range servers {
		if s == nil {
			t.FailNow() // its Start failed the test already
		}
	}
	var list apiv1.HostList
	servers[2].MustDo(rs.admin, "GET", "/v1/hosts", nil, http.StatusOK, &list)
	if len(list.Hosts) != 1 || list.Hosts[0].URI != unreachable || list.Hosts[0].Tenant != "lab" {
		t.Fatalf("hosts: %+v, want the one --libvirt named, once", list.Hosts)
	}
}
