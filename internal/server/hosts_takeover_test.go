package server_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// testDriverDomain is the domain libvirt's test:///default always has.
const testDriverDomain = "6695eb01-f6a4-8304-79aa-97f2502e193f"

// testDriver is a connection of the test's own to libvirt's mock driver
// (test:///default) through the real libvirtd: the daemon's connections
// share that driver's domains while one of them stays open, so this one
// keeps them across the replicas' reconnects and defines domains for them.
func testDriver(t *testing.T) *lv.Libvirt {
	t.Helper()
	vmtest.Libvirtd(t)
	l := lv.NewWithDialer(dialers.NewLocal(dialers.WithSocket("/var/run/libvirt/libvirt-sock"),
		dialers.WithLocalTimeout(10*time.Second)))
	if err := l.ConnectToURI("test:///default"); err != nil {
		t.Fatalf("connect to test:///default through libvirtd: %v", err)
	}
	t.Cleanup(func() { _ = l.Disconnect() })
	return l
}

// defineDomain defines a stopped domain on the mock driver and returns
// its UUID; it is undefined when the test ends.
func defineDomain(t *testing.T, l *lv.Libvirt) (lv.Domain, string) {
	t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	dom, err := l.DomainDefineXML(`<domain type='test'><name>takeover-` + uuid[:8] + `</name><uuid>` + uuid +
		`</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = l.DomainDestroy(dom)
		_ = l.DomainUndefine(dom)
	})
	return dom, uuid
}

// replicas is GET /v1/replicas as a server process answers it, by id.
func replicas(t *testing.T, p *proc) map[string]apiv1.Replica {
	t.Helper()
	var l apiv1.ReplicaList
	if code := p.API("GET", "/v1/replicas", nil, &l); code != 200 {
		t.Fatalf("GET /v1/replicas: %d", code)
	}
	out := map[string]apiv1.Replica{}
	for _, r := range l.Replicas {
		out[r.ID] = r
	}
	return out
}

// replicaID is a server process's replica id, as it names itself.
func replicaID(t *testing.T, p *proc) string {
	t.Helper()
	for id, r := range replicas(t, p) {
		if r.Self {
			return id
		}
	}
	t.Fatal("no replica says it is itself in /v1/replicas")
	return ""
}

// TestAKilledOwnersLibvirtHostIsTakenOver runs two real server processes
// on one PostgreSQL database with a real libvirtd: only the owner of a
// host follows it; SIGKILLed, the other takes it over within 20 s, and
// domains defined or started afterwards reach the inventory, with no
// instance duplicated.
func TestAKilledOwnersLibvirtHostIsTakenOver(t *testing.T) {
	l := testDriver(t)
	rs := newReplicaSet(t)
	bin := testutil.BuildBinary(t, "github.com/fleetpass/fleetpass/cmd/fleetpass")
	obs, err := store.OpenPostgres(context.Background(), rs.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	type replica struct {
		p  *proc
		id string
	}
	var reps []replica
	for i := range 2 {
		logPath := filepath.Join(t.TempDir(), fmt.Sprintf("server-%d.log", i))
		p := startProc(t, bin, t.TempDir(), testutil.FreePort(t), logPath, "--database-url", rs.dbURL,
			"--secret-key-file", rs.keyFile)
		reps = append(reps, replica{p: p, id: replicaID(t, p)})
	}
	// Both replicas alive before the host exists, so that the first owner
	// is the one hashing picks over both, not whichever started first
	// (which would hand the host over a moment later).
	if !testutil.Eventually(30*time.Second, func() bool {
		seen := replicas(t, reps[0].p)
		return seen[reps[0].id].Alive && seen[reps[1].id].Alive
	}) {
		t.Fatal("the two replicas never saw each other alive")
	}
	_, d1 := defineDomain(t, l)

	var h apiv1.Host
	if code := reps[0].p.API("POST", "/v1/hosts", apiv1.HostCreate{URI: "test:///default"}, &h); code != 201 {
		t.Fatalf("add host: %d", code)
	}
	ownedBy := func(id string) bool {
		st, err := obs.GetHostStatus(context.Background(), h.ID)
		return err == nil && st.Current && st.Connected && st.Owner == id
	}
	var x, y replica
	if !testutil.Eventually(30*time.Second, func() bool {
		for i, r := range reps {
			if ownedBy(r.id) {
				x, y = r, reps[1-i]
				return true
			}
		}
		return false
	}) {
		t.Fatal("no replica connected to the host as its owner")
	}
	instances := func(r replica) map[string][]apiv1.Instance {
		var list apiv1.InstanceList
		r.p.API("GET", "/v1/instances?limit=1000", nil, &list)
		out := map[string][]apiv1.Instance{}
		for _, in := range list.Instances {
			if in.Power.Host == h.ID {
				out[in.Power.Address] = append(out[in.Power.Address], in)
			}
		}
		return out
	}
	waitInstance := func(r replica, uuid, state string) {
		t.Helper()
		if !testutil.Eventually(30*time.Second, func() bool {
			got := instances(r)[uuid]
			return len(got) == 1 && got[0].State == state
		}) {
			t.Fatalf("domain %s never became one %s instance: %+v", uuid, state, instances(r))
		}
	}
	waitInstance(y, d1, apiv1.StateStopped)
	waitInstance(y, testDriverDomain, apiv1.StateRunning)
	// Only the owner holds the host's lease. The other may have held it
	// for a moment (its view of the live replicas a pass behind), and then
	// handed it over; what counts is which replica holds it now.
	holds := func(seen map[string]apiv1.Replica, r replica) bool {
		return slices.Contains(seen[r.id].Owns, store.HostLease(h.ID))
	}
	var seen map[string]apiv1.Replica
	if !testutil.Eventually(10*time.Second, func() bool {
		seen = replicas(t, y.p)
		return holds(seen, x) && !holds(seen, y)
	}) {
		t.Errorf("the host's lease: owner %s holds %v, other %s holds %v; want only the owner", x.id, seen[x.id].Owns,
			y.id, seen[y.id].Owns)
	}

	x.p.Kill()
	killed := time.Now()
	if !testutil.Eventually(40*time.Second, func() bool { return ownedBy(y.id) }) {
		t.Fatal("the survivor never took the host over")
	}
	took := time.Since(killed)
	t.Logf("takeover after SIGKILL: %v", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("takeover took %v, want within 20 s", took)
	}
	var got apiv1.Host
	y.p.API("GET", "/v1/hosts/"+h.ID, nil, &got)
	if !got.Connected || got.Owner != y.id {
		t.Fatalf("the host after the takeover: %+v", got)
	}
	// After the takeover: a new domain becomes an instance, a started one
	// changes state (lifecycle events reach the new owner).
	dom2, d2 := defineDomain(t, l)
	waitInstance(y, d2, apiv1.StateStopped)
	if err := l.DomainCreate(dom2); err != nil {
		t.Fatal(err)
	}
	waitInstance(y, d2, apiv1.StateRunning)
	for uuid, list := range instances(y) {
		if len(list) != 1 {
			t.Errorf("domain %s has %d instances", uuid, len(list))
		}
	}
}
