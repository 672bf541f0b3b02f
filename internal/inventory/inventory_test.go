package inventory_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/inventory"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// fixture is the core over a fresh database with the simulated fleet as
// every instance's power and guest, and a Syncer over them.
type fixture struct {
	t     *testing.T
	svc   *core.Service
	fleet *sim.Fleet
	sync  *inventory.Syncer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seal, err := sealer.New(bytes.Repeat([]byte{7}, sealer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fleet := sim.NewMemory(sim.Options{})
	drivers := engine.Drivers{Power: map[string]driver.Power{"sim": fleet}, Guest: map[string]driver.Guest{"sim": fleet}}
	svc := core.New(st, nil, seal, events.NewBus(st, log, time.Hour), drivers, log)
	if err := svc.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, svc: svc, fleet: fleet, sync: inventory.New(svc, st, drivers, log, time.Hour)}
}

// add registers machine m as an instance, as the API would: PENDING until
// the inventory has looked.
func (f *fixture) add(m sim.Machine) apiv1.Instance {
	f.t.Helper()
	ctx := context.Background()
	if err := f.fleet.Add(ctx, m); err != nil {
		f.t.Fatal(err)
	}
	in, err := f.svc.RegisterInstance(ctx, core.Principal{Kind: "key", ID: "test", Tenant: "acme", Admin: true}, apiv1.InstanceCreate{
		Name: m.ID, OSType: core.OSLinux, Power: apiv1.DriverLink{Driver: "sim", Address: m.ID},
		Guest: apiv1.DriverLink{Driver: "sim", Address: m.ID}})
	if err != nil {
		f.t.Fatal(err)
	}
	return in
}

func (f *fixture) get(id string) apiv1.Instance {
	f.t.Helper()
	in, err := f.svc.GetInstance(context.Background(), core.Principal{Tenant: "acme"}, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return in
}

func TestSyncOneRecordsWhatTheDriversSay(t *testing.T) {
	tests := []struct {
		name      string
		machine   sim.Machine
		remove    bool
		wantState string
		wantAlive bool
	}{
		{"running with a live guest", sim.Machine{ID: "up", Running: true}, false, apiv1.StateRunning, true},
		{"running with a dead guest", sim.Machine{ID: "dead", Running: true, Faults: sim.Faults{AgentDead: true}}, false, apiv1.StateRunning, false},
		{"stopped: no guest to ask", sim.Machine{ID: "down"}, false, apiv1.StateStopped, false},
		{"gone from its host: marked, not deleted", sim.Machine{ID: "gone", Running: true}, true, apiv1.StateMissing, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			in := f.add(tc.machine)
			if in.State != apiv1.StatePending {
				t.Fatalf("a new instance is %s, want %s", in.State, apiv1.StatePending)
			}
			if tc.remove {
				if err := f.fleet.Remove(context.Background(), tc.machine.ID); err != nil {
					t.Fatal(err)
				}
			}
			f.sync.SyncOne(context.Background(), in)
			got := f.get(in.ID)
			if got.State != tc.wantState || got.GuestAlive != tc.wantAlive {
				t.Errorf("state %s alive %v, want %s alive %v", got.State, got.GuestAlive, tc.wantState, tc.wantAlive)
			}
		})
	}
}

func TestATransientFailureKeepsTheLastKnownState(t *testing.T) {
	f := newFixture(t)
	in := f.add(sim.Machine{ID: "flaky", Running: true})
	f.sync.SyncOne(context.Background(), in)
	if got := f.get(in.ID); got.State != apiv1.StateRunning || !got.GuestAlive {
		t.Fatalf("first pass: %s alive %v", got.State, got.GuestAlive)
	}
	// The machine stops, but the driver cannot say so this pass: both the
	// state read and the guest ping fail transiently.
	ctx := context.Background()
	if err := f.fleet.Stop(ctx, driver.Ref{Address: "flaky"}); err != nil {
		t.Fatal(err)
	}
	if err := f.fleet.SetFaults(ctx, "flaky", sim.Faults{Transient: 2}); err != nil {
		t.Fatal(err)
	}
	f.sync.SyncOne(ctx, f.get(in.ID))
	if got := f.get(in.ID); got.State != apiv1.StateRunning || !got.GuestAlive {
		t.Errorf("after a transient failure: %s alive %v, want the last known running and alive", got.State, got.GuestAlive)
	}
	// The next pass sees the truth.
	f.sync.SyncOne(ctx, f.get(in.ID))
	if got := f.get(in.ID); got.State != apiv1.StateStopped || got.GuestAlive {
		t.Errorf("next pass: %s alive %v, want stopped and not alive", got.State, got.GuestAlive)
	}
}

func TestSyncAllVisitsEveryIdleInstance(t *testing.T) {
	f := newFixture(t)
	var ins []apiv1.Instance
	for _, id := range []string{"a", "b", "c"} {
		ins = append(ins, f.add(sim.Machine{ID: id, Running: id != "b"}))
	}
	f.sync.SyncAll(context.Background())
	for _, in := range ins {
		want := apiv1.StateRunning
		if in.Name == "b" {
			want = apiv1.StateStopped
		}
		if got := f.get(in.ID); got.State != want {
			t.Errorf("%s: %s, want %s", in.Name, got.State, want)
		}
	}
}

func TestAPartitionedSyncRefreshesOnlyItsShare(t *testing.T) {
	f := newFixture(t)
	var ins []apiv1.Instance
	for _, id := range []string{"a", "b", "c", "d"} {
		ins = append(ins, f.add(sim.Machine{ID: id, Running: true}))
	}
	// Another replica's share: a and c.
	f.sync.Partition(func(in apiv1.Instance) bool { return in.Name == "b" || in.Name == "d" })
	f.sync.SyncAll(context.Background())
	for _, in := range ins {
		want := apiv1.StatePending
		if in.Name == "b" || in.Name == "d" {
			want = apiv1.StateRunning
		}
		if got := f.get(in.ID); got.State != want {
			t.Errorf("%s: %s, want %s", in.Name, got.State, want)
		}
	}
}
