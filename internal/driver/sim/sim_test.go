package sim_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// harness runs the conformance suite against a sim fleet.
type harness struct {
	fleet    *sim.Fleet
	boot     time.Duration
	shutdown time.Duration
	cfg      drivertest.Config
	n        atomic.Int64
}

func (h *harness) Power() driver.Power       { return h.fleet }
func (h *harness) Guest() driver.Guest       { return h.fleet }
func (h *harness) Config() drivertest.Config { return h.cfg }

func (h *harness) NewMachine(t testing.TB, spec drivertest.MachineSpec) driver.Ref {
	t.Helper()
	id := fmt.Sprintf("m%d", h.n.Add(1))
	err := h.fleet.Add(t.Context(), sim.Machine{
		ID:           id,
		OS:           sim.Linux,
		Users:        spec.Users,
		Running:      spec.Running,
		BootTime:     h.boot,
		ShutdownTime: h.shutdown,
		Faults:       sim.Faults{HangShutdown: spec.HangShutdown, AgentDead: spec.DeadAgent},
	})
	if err != nil {
		t.Fatalf("add machine: %v", err)
	}
	return driver.Ref{InstanceID: "ins-" + id, Address: id}
}

func (h *harness) CheckPassword(t testing.TB, ref driver.Ref, user string, password []byte) bool {
	t.Helper()
	ok, err := h.fleet.CheckPassword(t.Context(), ref.Address, user, password)
	if err != nil {
		t.Fatalf("check password: %v", err)
	}
	return ok
}

func (h *harness) InjectTransient(t testing.TB, ref driver.Ref, n int) {
	t.Helper()
	snap, err := h.fleet.Get(t.Context(), ref.Address)
	if err != nil {
		t.Fatal(err)
	}
	faults := snap.Faults
	faults.Transient = n
	if err := h.fleet.SetFaults(t.Context(), ref.Address, faults); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	// Transitions that take a few milliseconds exercise the transitional
	// states without slowing the suite down.
	const d = 3 * time.Millisecond
	delayed := drivertest.Config{
		TransitionTimeout: 5 * time.Second,
		PollInterval:      time.Millisecond,
		CallTimeout:       5 * time.Second,
		HangObservation:   5 * d,
		CanHangShutdown:   true,
		CanKillAgent:      true,
	}
	instant := delayed
	instant.HangObservation = 2 * time.Millisecond

	t.Run("Memory/Instant", func(t *testing.T) {
		drivertest.Run(t, &harness{fleet: sim.NewMemory(sim.Options{}), cfg: instant})
	})
	eachBacking(t, func(t *testing.T, b backing) {
		t.Run("Delayed", func(t *testing.T) {
			drivertest.Run(t, &harness{fleet: b.open(t, sim.Options{}), boot: d, shutdown: d, cfg: delayed})
		})
	})
	// A fleet whose calls take time, as the replica tests run it.
	t.Run("Memory/ActionTime", func(t *testing.T) {
		f := sim.NewMemory(sim.Options{ActionTime: time.Millisecond})
		drivertest.Run(t, &harness{fleet: f, boot: d, shutdown: d, cfg: delayed})
		if n, err := f.Overlaps(t.Context()); err != nil || n != 0 {
			t.Errorf("Overlaps = %d, %v after the suite's one-at-a-time calls, want 0", n, err)
		}
	})
}

// clock is a fake clock that moves only when told to.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openFile(t testing.TB, path string, opts sim.Options) *sim.Fleet {
	t.Helper()
	f, err := sim.Open(t.Context(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

func mustAdd(t testing.TB, f *sim.Fleet, m sim.Machine) driver.Ref {
	t.Helper()
	if err := f.Add(t.Context(), m); err != nil {
		t.Fatalf("Add(%s): %v", m.ID, err)
	}
	return driver.Ref{Address: m.ID}
}

func wantState(t testing.TB, f *sim.Fleet, ref driver.Ref, want driver.PowerState) {
	t.Helper()
	got, err := f.State(t.Context(), ref)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if got != want {
		t.Fatalf("State = %s, want %s", got, want)
	}
}

func wantPassword(t testing.TB, f *sim.Fleet, id, user, password string, want bool) {
	t.Helper()
	got, err := f.CheckPassword(t.Context(), id, user, []byte(password))
	if err != nil {
		t.Fatalf("CheckPassword: %v", err)
	}
	if got != want {
		t.Fatalf("CheckPassword(%s, %s, password %d) = %v, want %v", id, user, len(password), got, want)
	}
}

// together runs fn(0), ..., fn(n-1) at once and fails t with the errors
// they return.
func together(t testing.TB, n int, fn func(i int) error) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTransitionsFollowTheClock(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		f := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m", Running: true, BootTime: 10 * time.Second, ShutdownTime: 5 * time.Second})

		must(t, f.Shutdown(ctx, ref))
		t0 := c.Now()
		wantState(t, f, ref, driver.PowerStopping)
		c.Advance(5*time.Second - 1)
		wantState(t, f, ref, driver.PowerStopping)
		c.Advance(1)
		wantState(t, f, ref, driver.PowerStopped)
		snap, err := f.Get(ctx, "m")
		must(t, err)
		if want := t0.Add(5 * time.Second); !snap.Since.Equal(want) {
			t.Errorf("stopped since %v, want the end of the shutdown %v", snap.Since, want)
		}

		c.Advance(time.Hour)
		must(t, f.Start(ctx, ref))
		wantState(t, f, ref, driver.PowerStarting)
		c.Advance(10*time.Second - 1)
		wantState(t, f, ref, driver.PowerStarting)
		c.Advance(1)
		wantState(t, f, ref, driver.PowerRunning)

		// Stop cuts the power at once, also during a boot.
		must(t, f.Stop(ctx, ref))
		wantState(t, f, ref, driver.PowerStopped)
		must(t, f.Start(ctx, ref))
		must(t, f.Stop(ctx, ref))
		wantState(t, f, ref, driver.PowerStopped)
	})
}

func TestZeroDurationsAreInstant(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		f := b.open(t, sim.Options{Now: newClock().Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m"})
		must(t, f.Start(ctx, ref))
		wantState(t, f, ref, driver.PowerRunning)
		must(t, f.Shutdown(ctx, ref))
		wantState(t, f, ref, driver.PowerStopped)
	})
}

func TestHangShutdown(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		f := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m", Running: true, ShutdownTime: time.Second, Faults: sim.Faults{HangShutdown: true}})

		must(t, f.Shutdown(ctx, ref))
		c.Advance(time.Hour)
		wantState(t, f, ref, driver.PowerStopping)
		if err := f.Start(ctx, ref); !driver.IsTransient(err) {
			t.Errorf("Start on a stopping machine: %v, want a transient error", err)
		}

		// Clearing the fault lets the hung shutdown finish.
		must(t, f.SetFaults(ctx, "m", sim.Faults{}))
		wantState(t, f, ref, driver.PowerStopped)
	})
}

func TestStagedPasswords(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		f := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m", Users: []string{"root", "alice"}, BootTime: time.Second})

		err := f.Stage(ctx, ref, "bob", []byte("Secret-123"))
		if !errors.Is(err, driver.ErrUserNotFound) {
			t.Errorf("Stage for an unknown user: %v, want ErrUserNotFound", err)
		}
		must(t, f.Stage(ctx, ref, "root", []byte("Secret-123")))
		snap, err := f.Get(ctx, "m")
		must(t, err)
		if !slices.Equal(snap.Staged, []string{"root"}) {
			t.Errorf("Staged = %q, want [root]", snap.Staged)
		}
		wantPassword(t, f, "m", "root", "Secret-123", false)

		// A boot cut short does not apply it.
		must(t, f.Start(ctx, ref))
		c.Advance(time.Second / 2)
		wantPassword(t, f, "m", "root", "Secret-123", false)
		must(t, f.Stop(ctx, ref))

		// A boot with a dead agent does not apply it either; it stays staged.
		must(t, f.SetFaults(ctx, "m", sim.Faults{AgentDead: true}))
		must(t, f.Start(ctx, ref))
		c.Advance(time.Second)
		wantState(t, f, ref, driver.PowerRunning)
		wantPassword(t, f, "m", "root", "Secret-123", false)
		must(t, f.Stop(ctx, ref))
		must(t, f.SetFaults(ctx, "m", sim.Faults{}))

		// A full boot with a live agent applies it.
		must(t, f.Start(ctx, ref))
		c.Advance(time.Second)
		wantPassword(t, f, "m", "root", "Secret-123", true)
		wantPassword(t, f, "m", "alice", "Secret-123", false)
		snap, err = f.Get(ctx, "m")
		must(t, err)
		if len(snap.Staged) != 0 {
			t.Errorf("Staged after boot = %q, want none", snap.Staged)
		}

		err = f.Stage(ctx, ref, "root", []byte("Other-456"))
		if err == nil {
			t.Error("Stage on a running machine succeeded, want an error")
		}
	})
}

func TestGuestErrorsOnMachineNotRunning(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		f := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m", BootTime: time.Second})
		for _, phase := range []string{"stopped", "starting"} {
			if phase == "starting" {
				must(t, f.Start(ctx, ref))
			}
			for name, err := range map[string]error{
				"Ping":        f.Ping(ctx, ref),
				"SetPassword": f.SetPassword(ctx, ref, "root", []byte("Secret-123")),
			} {
				if !errors.Is(err, driver.ErrGuestNotAlive) || !errors.Is(err, driver.ErrNotRunning) {
					t.Errorf("%s on a %s machine: %v, want ErrGuestNotAlive and ErrNotRunning", name, phase, err)
				}
			}
		}
	})
}

func TestTransientFaultsCountDown(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		f := b.open(t, sim.Options{})
		ref := mustAdd(t, f, sim.Machine{ID: "m", Running: true, Faults: sim.Faults{Transient: 3}})
		for i := range 3 {
			if _, err := f.State(ctx, ref); !driver.IsTransient(err) {
				t.Fatalf("call %d: %v, want transient", i, err)
			}
			snap, err := f.Get(ctx, "m") // admin calls do not use faults up
			must(t, err)
			if want := 2 - i; snap.Faults.Transient != want {
				t.Fatalf("after call %d: Transient = %d, want %d", i, snap.Faults.Transient, want)
			}
		}
		wantState(t, f, ref, driver.PowerRunning)
	})
}

func TestRegistry(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		f := b.open(t, sim.Options{})
		mustAdd(t, f, sim.Machine{ID: "b", OS: sim.Windows})
		mustAdd(t, f, sim.Machine{ID: "a", Running: true, Users: []string{"root", "ops"}})

		if err := f.Add(ctx, sim.Machine{ID: "a"}); !errors.Is(err, sim.ErrMachineExists) {
			t.Errorf("Add of an existing id: %v, want ErrMachineExists", err)
		}
		for _, m := range []sim.Machine{{}, {ID: "x", OS: "plan9"}, {ID: "x", BootTime: -1}, {ID: "x", Users: []string{""}}} {
			if err := f.Add(ctx, m); err == nil {
				t.Errorf("Add(%+v) succeeded, want an error", m)
			}
		}

		list, err := f.List(ctx)
		must(t, err)
		if len(list) != 2 || list[0].ID != "a" || list[1].ID != "b" {
			t.Fatalf("List = %+v, want a and b", list)
		}
		if !list[0].Running || list[0].Power != driver.PowerRunning || !slices.Equal(list[0].Users, []string{"ops", "root"}) {
			t.Errorf("a = %+v", list[0])
		}
		if list[1].OS != sim.Windows || !slices.Equal(list[1].Users, []string{"Administrator"}) || list[1].Power != driver.PowerStopped {
			t.Errorf("b = %+v, want a stopped windows machine with Administrator", list[1])
		}

		must(t, f.Remove(ctx, "a"))
		if err := f.Remove(ctx, "a"); !errors.Is(err, driver.ErrMachineNotFound) {
			t.Errorf("second Remove: %v, want ErrMachineNotFound", err)
		}
		if _, err := f.Get(ctx, "a"); !errors.Is(err, driver.ErrMachineNotFound) {
			t.Errorf("Get of a removed machine: %v, want ErrMachineNotFound", err)
		}
		if _, err := f.CheckPassword(ctx, "a", "root", []byte("x")); !errors.Is(err, driver.ErrMachineNotFound) {
			t.Errorf("CheckPassword on a removed machine: %v, want ErrMachineNotFound", err)
		}
		if err := f.SetFaults(ctx, "a", sim.Faults{}); !errors.Is(err, driver.ErrMachineNotFound) {
			t.Errorf("SetFaults on a removed machine: %v, want ErrMachineNotFound", err)
		}
		if _, err := f.CheckPassword(ctx, "b", "root", []byte("x")); !errors.Is(err, driver.ErrUserNotFound) {
			t.Errorf("CheckPassword for an unknown user: %v, want ErrUserNotFound", err)
		}
		// The id can be used again.
		mustAdd(t, f, sim.Machine{ID: "a"})
	})
}

func TestDurableAcrossReopen(t *testing.T) {
	eachBacking(t, func(t *testing.T, bk backing) {
		if !bk.durable {
			t.Skip("a memory fleet is not durable")
		}
		ctx := t.Context()
		c := newClock()
		f := bk.open(t, sim.Options{Now: c.Now})

		// a: running, password set, faults set.
		a := mustAdd(t, f, sim.Machine{ID: "a", Running: true, Users: []string{"root", "ops"}})
		must(t, f.SetPassword(ctx, a, "ops", []byte("Ops-pass-1")))
		must(t, f.SetFaults(ctx, "a", sim.Faults{HangShutdown: true, Transient: 2}))
		// b: stopped with a staged password, booting when the fleet closes.
		b := mustAdd(t, f, sim.Machine{ID: "b", OS: sim.Windows, BootTime: time.Minute})
		must(t, f.Stage(ctx, b, "Administrator", []byte("Win-pass-1")))
		must(t, f.Start(ctx, b))
		// c: stopping when the fleet closes.
		cm := mustAdd(t, f, sim.Machine{ID: "c", Running: true, ShutdownTime: time.Minute, Faults: sim.Faults{AgentDead: true}})
		must(t, f.Shutdown(ctx, cm))
		// d: removed.
		mustAdd(t, f, sim.Machine{ID: "d"})
		must(t, f.Remove(ctx, "d"))

		before, err := f.List(ctx)
		must(t, err)
		must(t, f.Close())
		if _, err := f.Get(ctx, "a"); !errors.Is(err, sim.ErrClosed) {
			t.Errorf("Get after Close: %v, want ErrClosed", err)
		}

		f = bk.open(t, sim.Options{Now: c.Now})
		after, err := f.List(ctx)
		must(t, err)
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Fatalf("fleet changed across Close and Open:\nbefore %+v\nafter  %+v", before, after)
		}
		wantPassword(t, f, "a", "ops", "Ops-pass-1", true)
		wantState(t, f, b, driver.PowerStarting)
		wantState(t, f, cm, driver.PowerStopping)

		// The transitions in flight end on time, and the staged password is
		// applied by the boot that began before the restart.
		c.Advance(time.Minute)
		wantState(t, f, b, driver.PowerRunning)
		wantState(t, f, cm, driver.PowerStopped)
		wantPassword(t, f, "b", "Administrator", "Win-pass-1", true)
	})
}

func TestSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	openFile(t, path, sim.Options{})
	if f, err := sim.Open(t.Context(), path, sim.Options{}); err == nil {
		f.Close()
		t.Fatal("second Open of the same file succeeded; two fleets would diverge")
	}
}

func TestNoPasswordAtRest(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		if len(b.dirs) == 0 {
			t.Skip("a memory fleet has nothing at rest")
		}
		ctx := t.Context()
		f := b.open(t, sim.Options{})
		secret := testutil.NewPassword()
		ref := mustAdd(t, f, sim.Machine{ID: "m", Running: true, Users: []string{"root", "ops"}})
		must(t, f.SetPassword(ctx, ref, "root", []byte(secret)))
		must(t, f.Stop(ctx, ref))
		must(t, f.Stage(ctx, ref, "ops", []byte(secret+"-staged")))
		must(t, f.Close())
		for _, dir := range b.dirs {
			testutil.AssertNotInDir(t, dir, secret)
		}
		db, table := b.table(t)
		wantOnlyVerifiers(t, db, table, secret, 2)
	})
}

// wantOnlyVerifiers reads every row of the machine table and fails t if
// any column holds secret, or if the users column holds anything but
// verifiers (salt and HMAC-SHA256, 48 bytes), want of them in all.
func wantOnlyVerifiers(t *testing.T, db *sql.DB, table, secret string, want int) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT * FROM `+table)
	must(t, err)
	defer rows.Close()
	names, err := rows.Columns()
	must(t, err)
	verifiers := 0
	for rows.Next() {
		cols := make([]sql.RawBytes, len(names))
		dest := make([]any, len(cols))
		for i := range cols {
			dest[i] = &cols[i]
		}
		must(t, rows.Scan(dest...))
		for i, col := range cols {
			if testutil.ContainsSecret(col, secret) {
				t.Errorf("column %s of %s holds the password", names[i], table)
			}
			if names[i] != "users" {
				continue
			}
			var users map[string]struct{ V, S []byte }
			must(t, json.Unmarshal(col, &users))
			for name, u := range users {
				for _, v := range [][]byte{u.V, u.S} {
					if v == nil {
						continue
					}
					verifiers++
					if len(v) != 48 || bytes.Contains(v, []byte(secret)) {
						t.Errorf("user %s holds %d bytes that are not a verifier", name, len(v))
					}
				}
			}
		}
	}
	must(t, rows.Err())
	if verifiers != want {
		t.Errorf("%d verifiers in %s, want %d", verifiers, table, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) { concurrentUse(t, b.open(t, sim.Options{})) })
}

func concurrentUse(t *testing.T, f *sim.Fleet) {
	ctx := t.Context()
	const machines, workers = 20, 8
	for i := range machines {
		mustAdd(t, f, sim.Machine{ID: fmt.Sprint(i), Running: true})
	}
	together(t, workers+1, func(w int) error {
		if w == workers {
			// Machines come and go meanwhile.
			for i := range 50 {
				id := fmt.Sprint("extra", i)
				if err := errors.Join(f.Add(ctx, sim.Machine{ID: id}), f.Remove(ctx, id)); err != nil {
					return err
				}
			}
			return nil
		}
		for i := range 50 {
			ref := driver.Ref{Address: fmt.Sprint((w + i) % machines)}
			var err error
			switch i % 5 {
			case 0:
				err = f.SetPassword(ctx, ref, "root", []byte("Pass-"+ref.Address))
			case 1:
				_, err = f.State(ctx, ref)
			case 2:
				_, err = f.List(ctx)
			case 3:
				err = f.SetFaults(ctx, ref.Address, sim.Faults{})
			case 4:
				err = f.Ping(ctx, ref)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	for i := range machines {
		id := fmt.Sprint(i)
		wantPassword(t, f, id, "root", "Pass-"+id, true)
	}
}

func TestErrorsDoNotShowPasswords(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		f := b.open(t, sim.Options{})
		ref := mustAdd(t, f, sim.Machine{ID: "m"})
		pw := []byte("Never-Shown-1")
		for _, err := range []error{
			f.SetPassword(ctx, ref, "root", pw),
			f.SetPassword(ctx, ref, "nobody", pw),
			f.SetPassword(ctx, driver.Ref{Address: "nope"}, "root", pw),
			f.Stage(ctx, ref, "nobody", pw),
		} {
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(fmt.Sprintf("%+v", err), string(pw)) {
				t.Errorf("error shows the password: %T", err)
			}
		}
	})
}

// BenchmarkSetPassword measures password changes on a fleet of 10,000
// machines, one after another and from many goroutines at once.
func BenchmarkSetPassword(b *testing.B) {
	const machines = 10_000
	fleets := []struct {
		name string
		open func(b *testing.B) *sim.Fleet
	}{
		{"Memory", func(*testing.B) *sim.Fleet { return sim.NewMemory(sim.Options{}) }},
		{"File", func(b *testing.B) *sim.Fleet {
			return openFile(b, filepath.Join(b.TempDir(), "fleet.db"), sim.Options{})
		}},
	}
	for _, fl := range fleets {
		b.Run(fl.name, func(b *testing.B) {
			f := fl.open(b)
			for i := range machines {
				mustAdd(b, f, sim.Machine{ID: fmt.Sprintf("m%05d", i), Running: true})
			}
			pw := []byte("Bench-pass-1")
			b.Run("Serial", func(b *testing.B) {
				ctx := b.Context()
				i := 0
				for b.Loop() {
					ref := driver.Ref{Address: fmt.Sprintf("m%05d", i%machines)}
					if err := f.SetPassword(ctx, ref, "root", pw); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("Parallel", func(b *testing.B) {
				ctx := b.Context()
				var next atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						ref := driver.Ref{Address: fmt.Sprintf("m%05d", next.Add(1)%machines)}
						if err := f.SetPassword(ctx, ref, "root", pw); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
