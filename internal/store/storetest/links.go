package storetest

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// testBMCLinkIsTheInstancesOwn: an ipmi power link is acted on only when
// the BMC it names is registered for that very instance (its credentials
// are sealed to it), as a libvirt link must name a host of the instance's
// tenant and an agent link the instance's own agent. The attacks are
// records the API would refuse, written straight to the store: a server
// whose BMC belongs to no registration, a second server on the first one's
// BMC, a BMC named as a guest channel, and a BMC whose registration went.
func testBMCLinkIsTheInstancesOwn(t *testing.T, s *store.Store) {
	ctx := context.Background()
	drivers := store.LinkDrivers{Host: "libvirt", Agent: "agent", BMC: "ipmi"}
	tenant(t, s, "acme")
	server := func(id, bmc string) apiv1.Instance {
		return apiv1.Instance{ID: id, Tenant: "acme", Name: id, OSType: "linux", AdminUser: "root", State: apiv1.StateRunning,
			Power: apiv1.DriverLink{Driver: "ipmi", Address: bmc}, Guest: apiv1.DriverLink{Driver: "agent"}}
	}
	create := func(in apiv1.Instance, withBMC bool) {
		t.Helper()
		mustTx(t, s, func(tx *sql.Tx) error {
			if err := s.CreateInstance(ctx, tx, &in); err != nil {
				return err
			}
			if !withBMC {
				return nil
			}
			return s.PutBMC(ctx, tx, store.BMC{InstanceID: in.ID, User: "fleetpass", PasswordSealed: []byte("sealed"), CipherSuite: 3})
		})
	}
	problem := func(in apiv1.Instance) string {
		t.Helper()
		p, err := s.LinkOwnerProblem(ctx, s.DB, in, drivers)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	own := server("ins-own", "10.0.0.1:623")
	create(own, true)
	if p := problem(own); p != "" {
		t.Fatalf("a server on its own registered BMC: %q", p)
	}

	stray := server("ins-stray", "10.0.0.2:623")
	create(stray, false)
	if p := problem(stray); p != "the power link names a BMC not registered for the instance" {
		t.Errorf("a server on a BMC registered for no one: %q", p)
	}

	// The unique power link keeps a second server off the first one's BMC,
	// and the check holds if that record is made anyway.
	twin := server("ins-twin", own.Power.Address)
	if err := s.CreateInstance(ctx, s.DB, &twin); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a second server on the first one's BMC: %v, want ErrConflict", err)
	}
	if p := problem(twin); p == "" {
		t.Error("a server named on another server's BMC passes")
	}

	asGuest := own
	asGuest.Guest = apiv1.DriverLink{Driver: "ipmi", Address: own.Power.Address}
	if p := problem(asGuest); p == "" {
		t.Error("a BMC as a guest channel passes")
	}

	// The registration removed (the record copied elsewhere, or the
	// instance's BMC deleted): the link is no longer the instance's.
	mustTx(t, s, func(tx *sql.Tx) error { return s.DeleteInstance(ctx, tx, own.ID) })
	create(own, false)
	if p := problem(own); p == "" {
		t.Error("a server whose BMC registration is gone passes")
	}
}

// testInstanceForWork: the engine's one read before it acts counts who
// holds the instance's links, and LinkProblem finds on it what
// LinkOwnerProblem finds on its own reads; a link still unset (an agent
// not enrolled yet) is held by nobody and is no problem.
func testInstanceForWork(t *testing.T, s *store.Store) {
	ctx := context.Background()
	drivers := store.LinkDrivers{Host: "libvirt", Agent: "agent", BMC: "ipmi"}
	tenant(t, s, "acme")
	vm := apiv1.Instance{ID: "ins-work1", Tenant: "acme", Name: "vm-1", OSType: "linux", AdminUser: "root", State: apiv1.StateRunning,
		Power: apiv1.DriverLink{Driver: "sim", Address: "m-1"}, Guest: apiv1.DriverLink{Driver: "sim", Address: "m-1"}}
	bare := apiv1.Instance{ID: "ins-work2", Tenant: "acme", Name: "bm-1", OSType: "linux", AdminUser: "root", State: apiv1.StateRunning,
		Power: apiv1.DriverLink{Driver: "sim", Address: "m-2"}, Guest: apiv1.DriverLink{Driver: "agent"}}
	for _, in := range []apiv1.Instance{vm, bare} {
		if err := s.CreateInstance(ctx, s.DB, &in); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		in   apiv1.Instance
		want store.LinkHolding
	}{
		{vm, store.LinkHolding{Power: 1, Guest: 1, OwnPower: true, OwnGuest: true}},
		{bare, store.LinkHolding{Power: 1, OwnPower: true}},
	} {
		got, held, err := s.GetInstanceForWork(ctx, s.DB, tc.in.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != tc.in.ID || got.Power != tc.in.Power || got.Guest != tc.in.Guest {
			t.Errorf("read %+v, want %+v", got, tc.in)
		}
		if held != tc.want {
			t.Errorf("%s: holding %+v, want %+v", tc.in.Name, held, tc.want)
		}
		p, err := s.LinkProblem(ctx, s.DB, got, held, drivers)
		if err != nil || p != "" {
			t.Errorf("%s: problem %q, %v", tc.in.Name, p, err)
		}
		if p, err := s.LinkOwnerProblem(ctx, s.DB, got, drivers); err != nil || p != "" {
			t.Errorf("%s: LinkOwnerProblem %q, %v", tc.in.Name, p, err)
		}
	}
	// A record naming vm's machine that the unique links kept out of the
	// store: the machine is vm's, not its.
	twin := vm
	twin.ID = "ins-work3"
	if p, err := s.LinkOwnerProblem(ctx, s.DB, twin, drivers); err != nil || p == "" {
		t.Errorf("a record on another instance's links: problem %q, %v", p, err)
	}
	if _, _, err := s.GetInstanceForWork(ctx, s.DB, "ins-nowhere"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown instance: %v, want ErrNotFound", err)
	}
}
