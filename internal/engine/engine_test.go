package engine_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/enginetest"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// fixture is a running engine and the core over a fresh database, with an
// in-memory simulated fleet as every machine's power and guest.
type fixture struct {
	t       *testing.T
	svc     *core.Service
	fleet   *sim.Fleet
	store   *store.Store
	engine  *engine.Engine
	metrics *metrics.Metrics
}

// newFixture starts the fixture; wrap, when given, wraps the simulated
// power driver (tests that watch or steer the engine's power calls). A
// wrapper that is a driver.Guest too stands in for the guest channel.
func newFixture(t *testing.T, cfg engine.Config, wrap ...func(driver.Power) driver.Power) *fixture {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureOn(t, st, cfg, wrap...)
}

// newFixtureOn is newFixture over the store st, which it closes.
func newFixtureOn(t *testing.T, st *store.Store, cfg engine.Config, wrap ...func(driver.Power) driver.Power) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	seal, err := sealer.New(bytes.Repeat([]byte{3}, sealer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fleet := sim.NewMemory(sim.Options{})
	var power driver.Power = fleet
	for _, w := range wrap {
		power = w(power)
	}
	var guest driver.Guest = fleet
	if g, ok := power.(driver.Guest); ok {
		guest = g
	}
	drivers := engine.Drivers{Power: map[string]driver.Power{"sim": power}, Guest: map[string]driver.Guest{"sim": guest}}
	t.Cleanup(func() { st.Close() }) // after the engine's stop
	m := metrics.New()
	bus := events.NewBus(st, log, 20*time.Millisecond)
	eng := enginetest.Start(t, ctx, cancel, st, drivers, seal, bus, m, log, cfg)
	svc := core.New(st, eng, seal, bus, drivers, log)
	if err := svc.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, svc: svc, fleet: fleet, store: st, engine: eng, metrics: m}
}

// bothStores runs fn on SQLite and on PostgreSQL.
func bothStores(t *testing.T, fn func(t *testing.T, st *store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "fleetpass.db"))
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := store.OpenPostgres(context.Background(), pgtest.Shared(t).Database(t))
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
}

var admin = core.Principal{Kind: "key", ID: "test", Tenant: "acme", Admin: true}

func (f *fixture) add(m sim.Machine) apiv1.Instance {
	f.t.Helper()
	ctx := context.Background()
	if err := f.fleet.Add(ctx, m); err != nil {
		f.t.Fatal(err)
	}
	in, err := f.svc.RegisterInstance(ctx, admin, apiv1.InstanceCreate{Name: m.ID, OSType: core.OSLinux,
		Power: apiv1.DriverLink{Driver: "sim", Address: m.ID}, Guest: apiv1.DriverLink{Driver: "sim", Address: m.ID}})
	if err != nil {
		f.t.Fatal(err)
	}
	state, alive := apiv1.StateStopped, false
	if m.Running {
		state, alive = apiv1.StateRunning, !m.Faults.AgentDead
	}
	if err := f.svc.SetInstanceObserved(ctx, in.ID, state, &alive); err != nil {
		f.t.Fatal(err)
	}
	return in
}

// reset resets root's password of in and returns the ended operation.
func (f *fixture) reset(in apiv1.Instance, mode, pw string) apiv1.Operation {
	f.t.Helper()
	ctx := context.Background()
	op, err := f.svc.ResetPassword(ctx, admin, core.ResetRequest{InstanceIDs: []string{in.ID}, Mode: mode,
		ForceStop: true, Password: []byte(pw)})
	if err != nil {
		f.t.Fatal(err)
	}
	testutil.WaitFor(f.t, time.Minute, "the operation's end", func() bool {
		op, err = f.svc.GetOperation(ctx, admin, op.ID)
		return err == nil && op.Status != apiv1.OperationRunning
	})
	return op
}

func (f *fixture) passwordIs(in apiv1.Instance, pw string) bool {
	f.t.Helper()
	ok, err := f.fleet.CheckPassword(context.Background(), in.Power.Address, "root", []byte(pw))
	if err != nil {
		f.t.Fatal(err)
	}
	return ok
}

func fast() engine.Config {
	c := enginetest.Fast()
	c.MaxAttempts = 4
	return c
}

func TestTransientDriverErrorsAreRetriedUntilTheItemSucceeds(t *testing.T) {
	f := newFixture(t, fast())
	// Three failed calls, within the four attempts.
	in := f.add(sim.Machine{ID: "flaky", Running: true, Faults: sim.Faults{Transient: 3}})
	op := f.reset(in, apiv1.ModeOnline, "Retry-Until-Ok-1")
	if op.Status != apiv1.OperationSucceeded || op.Items[0].Attempts != 4 {
		t.Fatalf("operation %s, item %+v; want success at the 4th attempt (3 transient failures, then the success)", op.Status, op.Items[0])
	}
	if !f.passwordIs(in, "Retry-Until-Ok-1") {
		t.Error("the password is not set")
	}
}

func TestTransientErrorsBeyondTheAttemptsFailTheItem(t *testing.T) {
	f := newFixture(t, fast())
	in := f.add(sim.Machine{ID: "broken", Running: true, Faults: sim.Faults{Transient: 1000}})
	op := f.reset(in, apiv1.ModeOnline, "Never-Applied-1")
	it := op.Items[0]
	if op.Status != apiv1.OperationFailed || it.ErrorCode != engine.CodeDriverError || it.Attempts != 4 {
		t.Fatalf("operation %s, item %+v; want failed with %s after 4 attempts", op.Status, it, engine.CodeDriverError)
	}
}

func TestAnOfflineResetStagesThePasswordAndBootsTheMachine(t *testing.T) {
	f := newFixture(t, fast())
	in := f.add(sim.Machine{ID: "off", BootTime: 50 * time.Millisecond})
	op := f.reset(in, apiv1.ModeOffline, "Staged-At-Boot-1")
	it := op.Items[0]
	if op.Status != apiv1.OperationSucceeded || it.Step != apiv1.StepDone || it.Mode != apiv1.ModeOffline {
		t.Fatalf("operation %s, item %+v", op.Status, it)
	}
	snap, err := f.fleet.Get(context.Background(), "off")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Power != driver.PowerRunning || !f.passwordIs(in, "Staged-At-Boot-1") {
		t.Errorf("the machine is %s, password set %v; want it running with the new password", snap.Power, f.passwordIs(in, "Staged-At-Boot-1"))
	}
}

func TestAUserThatDoesNotExistFailsTheItemAtOnce(t *testing.T) {
	f := newFixture(t, fast())
	in := f.add(sim.Machine{ID: "nouser", Running: true, Users: []string{"deploy"}})
	op := f.reset(in, apiv1.ModeOnline, "No-Such-User-1")
	if it := op.Items[0]; op.Status != apiv1.OperationFailed || it.ErrorCode != engine.CodeUserNotFound || it.Attempts != 1 {
		t.Fatalf("operation %s, item %+v; want failed with %s at the first attempt, no retry", op.Status, it, engine.CodeUserNotFound)
	}
}

// osRecorder records the OS type of the refs the engine hands the drivers.
type osRecorder struct {
	driver.Power
	guest driver.Guest

	mu                 sync.Mutex
	power, setPassword []string
}

func (r *osRecorder) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	r.mu.Lock()
	r.power = append(r.power, ref.OSType)
	r.mu.Unlock()
	return r.Power.State(ctx, ref)
}

func (r *osRecorder) Ping(ctx context.Context, ref driver.Ref) error { return r.guest.Ping(ctx, ref) }

func (r *osRecorder) SetPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	r.mu.Lock()
	r.setPassword = append(r.setPassword, ref.OSType)
	r.mu.Unlock()
	return r.guest.SetPassword(ctx, ref, user, password)
}

// Guest channels hash a Linux guest's password and send a Windows guest's
// as it is, by the ref's OS type: the engine must fill it in.
func TestTheDriversAreToldTheInstancesOSType(t *testing.T) {
	rec := &osRecorder{}
	f := newFixture(t, fast(), func(p driver.Power) driver.Power {
		rec.Power, rec.guest = p, p.(driver.Guest)
		return rec
	})
	in := f.add(sim.Machine{ID: "linux", Running: true})
	if op := f.reset(in, apiv1.ModeOnline, "Os-Type-Told-1"); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s, items %+v", op.Status, op.Items)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.setPassword) == 0 || len(rec.power) == 0 {
		t.Fatalf("the drivers were not called: power %v, set password %v", rec.power, rec.setPassword)
	}
	for _, got := range append(rec.power, rec.setPassword...) {
		if got != core.OSLinux {
			t.Fatalf("refs had OS types: power %q, set password %q; want %q", rec.power, rec.setPassword, core.OSLinux)
		}
	}
}

// slowGuest is the simulated guest channel, taking delay to confirm each
// password.
type slowGuest struct {
	driver.Power
	guest driver.Guest
	delay time.Duration
}

func (g slowGuest) Ping(ctx context.Context, ref driver.Ref) error { return g.guest.Ping(ctx, ref) }

func (g slowGuest) SetPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(g.delay):
	}
	return g.guest.SetPassword(ctx, ref, user, password)
}

// People watching an online reset see it applying only when the guest takes
// long enough to be seen: a guest that confirms at once goes straight from
// queued to done, one that takes seconds shows the applying step first.
func TestAnOnlineResetShowsApplyingOnlyWhileTheGuestIsSlowToConfirm(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		want  []string
	}{
		{"at once", 0, []string{apiv1.StepDone}},
		{"after a second", time.Second, []string{apiv1.StepApplying, apiv1.StepDone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fast(), func(p driver.Power) driver.Power {
				return slowGuest{Power: p, guest: p.(driver.Guest), delay: tc.delay}
			})
			in := f.add(sim.Machine{ID: "web", Running: true})
			op := f.reset(in, apiv1.ModeOnline, "Shown-When-Slow-1")
			if op.Status != apiv1.OperationSucceeded || !f.passwordIs(in, "Shown-When-Slow-1") {
				t.Fatalf("operation %s, items %+v", op.Status, op.Items)
			}
			rows, err := f.store.EventsAfter(context.Background(), 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var steps []string
			for _, row := range rows {
				if row.Type != events.TypeItem || row.Ref != op.ID {
					continue
				}
				ev, err := events.Decode(row)
				if err != nil {
					t.Fatal(err)
				}
				steps = append(steps, ev.Item.Step)
			}
			if !slices.Equal(steps, tc.want) {
				t.Errorf("the item's events had steps %q, want %q", steps, tc.want)
			}
		})
	}
}
