package sim_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// second is a second Fleet value on b's fleet, as another replica would
// have it: on a database, a Fleet of its own; otherwise the same one.
func second(t testing.TB, b backing, first *sim.Fleet, opts sim.Options) *sim.Fleet {
	if b.shared {
		return b.open(t, opts)
	}
	return first
}

func wantOverlaps(t testing.TB, f *sim.Fleet, want int) {
	t.Helper()
	n, err := f.Overlaps(t.Context())
	must(t, err)
	if n != want {
		t.Fatalf("Overlaps = %d, want %d", n, want)
	}
}

func TestAMutatingCallDuringAnotherIsAnOverlap(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		// Calls that last a minute, cut short by their contexts: the
		// second call surely begins inside the first, however slow the
		// machine.
		opts := sim.Options{ActionTime: time.Minute}
		fa := b.open(t, opts)
		fb := second(t, b, fa, opts)
		ref := mustAdd(t, fa, sim.Machine{ID: "m", Running: true})
		mustAdd(t, fa, sim.Machine{ID: "other", Running: true})
		pw := testutil.NewPassword()

		ctxA, stopA := context.WithCancel(ctx)
		ctxB, stopB := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() { errA = fa.SetPassword(ctxA, ref, "root", []byte(pw)) })
		// The effect is applied as the call begins, with its mark.
		testutil.WaitFor(t, 30*time.Second, "the first call's password", func() bool {
			ok, err := fb.CheckPassword(ctx, "m", "root", []byte(pw))
			return err == nil && ok
		})
		wantOverlaps(t, fb, 0) // reading is not acting
		wg.Go(func() { errB = fb.Shutdown(ctxB, ref) })
		testutil.WaitFor(t, 30*time.Second, "the overlap", func() bool {
			n, err := fa.Overlaps(ctx)
			return err == nil && n > 0
		})
		stopA()
		stopB()
		wg.Wait()
		if !errors.Is(errA, context.Canceled) || !errors.Is(errB, context.Canceled) {
			t.Errorf("calls cut short returned %v and %v, want context.Canceled", errA, errB)
		}
		wantOverlaps(t, fa, 1)
		snap, err := fa.Get(ctx, "m")
		must(t, err)
		if snap.Overlaps != 1 || snap.Applied != 1 || snap.Power != driver.PowerStopped {
			t.Errorf("machine after the overlap: %d overlaps, %d applied, %s; want 1, 1, stopped",
				snap.Overlaps, snap.Applied, snap.Power)
		}
		other, err := fa.Get(ctx, "other")
		must(t, err)
		if other.Overlaps != 0 {
			t.Errorf("the other machine has %d overlaps, want 0", other.Overlaps)
		}
	})
}

func TestSequentialActionsFromTwoFleetsAreConsistent(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		opts := sim.Options{ActionTime: 2 * time.Millisecond}
		fa := b.open(t, opts)
		fb := second(t, b, fa, opts)
		ref := mustAdd(t, fa, sim.Machine{ID: "m", Running: true, Users: []string{"root", "ops"}})
		var last string
		for i := range 10 {
			f, g := fa, fb
			if i%2 == 1 {
				f, g = fb, fa
			}
			last = testutil.NewPassword()
			must(t, f.SetPassword(ctx, ref, "root", []byte(last)))
			wantPassword(t, g, "m", "root", last, true)
			must(t, g.Shutdown(ctx, ref))
			wantState(t, f, ref, driver.PowerStopped)
			must(t, f.Stage(ctx, ref, "ops", []byte(last)))
			must(t, g.Start(ctx, ref))
			wantState(t, f, ref, driver.PowerRunning)
			wantPassword(t, f, "m", "ops", last, true)
		}
		wantOverlaps(t, fa, 0)
		for _, f := range []*sim.Fleet{fa, fb} {
			n, err := f.Applied(ctx, "m")
			must(t, err)
			if n != 20 {
				t.Errorf("Applied = %d after 10 set and 10 staged passwords, want 20", n)
			}
		}
	})
}

func TestAppliedCountsPasswordChangesThatTookEffect(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		f := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, f, sim.Machine{ID: "m", Running: true, BootTime: time.Second, Users: []string{"root", "ops"}})
		wantApplied := func(want int) {
			t.Helper()
			n, err := f.Applied(ctx, "m")
			must(t, err)
			if n != want {
				t.Fatalf("Applied = %d, want %d", n, want)
			}
		}
		wantApplied(0)
		must(t, f.SetPassword(ctx, ref, "root", []byte("Pass-1")))
		wantApplied(1)
		if err := f.SetPassword(ctx, ref, "nobody", []byte("Pass-1")); err == nil {
			t.Fatal("SetPassword for an unknown user succeeded")
		}
		wantApplied(1)

		// Staged twice for one user, then booted: one change.
		must(t, f.Stop(ctx, ref))
		must(t, f.Stage(ctx, ref, "root", []byte("Pass-2")))
		must(t, f.Stage(ctx, ref, "root", []byte("Pass-3")))
		wantApplied(1)
		must(t, f.Start(ctx, ref))
		wantApplied(1) // still booting
		c.Advance(time.Second)
		wantApplied(2)
		wantPassword(t, f, "m", "root", "Pass-3", true)
		// Booting again applies nothing more.
		must(t, f.Stop(ctx, ref))
		must(t, f.Start(ctx, ref))
		c.Advance(time.Second)
		wantApplied(2)

		// A dead agent applies nothing.
		must(t, f.SetFaults(ctx, "m", sim.Faults{AgentDead: true}))
		if err := f.SetPassword(ctx, ref, "root", []byte("Pass-4")); !errors.Is(err, driver.ErrGuestNotAlive) {
			t.Fatalf("SetPassword with a dead agent: %v", err)
		}
		wantApplied(2)
	})
}

func TestAMarkLeftBehindExpires(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		if !b.shared {
			t.Skip("needs two Fleet values on one fleet")
		}
		ctx := t.Context()
		c := newClock()
		// fa's call is in progress for a minute, as if its process had
		// died in it; its mark says ten seconds.
		fa := b.open(t, sim.Options{Now: c.Now, ActionTime: time.Minute})
		fb := b.open(t, sim.Options{Now: c.Now})
		ref := mustAdd(t, fa, sim.Machine{ID: "m", Running: true})
		ctxA, stopA := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fa.Stop(ctxA, ref) }()
		defer func() { stopA(); <-done }()
		testutil.WaitFor(t, 30*time.Second, "the first call", func() bool {
			s, err := fb.Get(ctx, "m")
			return err == nil && s.Power == driver.PowerStopped
		})
		c.Advance(time.Minute)
		must(t, fb.Start(ctx, ref))
		wantOverlaps(t, fb, 0)
	})
}

func TestManyConcurrentCallsApplyEachChangeOnce(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		opts := sim.Options{ActionTime: 5 * time.Millisecond}
		fleets := []*sim.Fleet{b.open(t, opts)}
		fleets = append(fleets, second(t, b, fleets[0], opts))
		ref := mustAdd(t, fleets[0], sim.Machine{ID: "m", Running: true})
		const workers, calls = 8, 10
		together(t, workers, func(w int) error {
			for i := range calls {
				if err := fleets[w%2].SetPassword(ctx, ref, "root", []byte(fmt.Sprint("Pass-", w, "-", i))); err != nil {
					return err
				}
			}
			return nil
		})
		snap, err := fleets[1].Get(ctx, "m")
		must(t, err)
		if snap.Applied != workers*calls {
			t.Errorf("Applied = %d, want one per call: %d", snap.Applied, workers*calls)
		}
		if snap.Overlaps == 0 {
			t.Errorf("no overlap seen among %d workers acting on one machine at once", workers)
		}
	})
}

func TestOpenDBRefusesATableOfAnotherShape(t *testing.T) {
	db := openSQLiteDB(t, filepath.Join(t.TempDir(), "main.db"))
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE sim_machines (id TEXT PRIMARY KEY, power TEXT)`); err != nil {
		t.Fatal(err)
	}
	if f, err := sim.OpenDB(t.Context(), db, store.SQLite, sim.Options{}); err == nil {
		f.Close()
		t.Fatal("OpenDB on a table of another shape succeeded")
	}
	if _, err := sim.OpenDB(t.Context(), db, "oracle", sim.Options{}); err == nil {
		t.Fatal("OpenDB with an unknown dialect succeeded")
	}
}

func TestReplicasOpeningTogetherCreateTheTableOnce(t *testing.T) {
	c := pgtest.Shared(t)
	url := c.Database(t)
	dbs := make([]*sql.DB, 8)
	for i := range dbs {
		dbs[i] = c.DBURL(t, url)
	}
	together(t, len(dbs), func(i int) error {
		f, err := sim.OpenDB(t.Context(), dbs[i], store.Postgres, sim.Options{})
		if err != nil {
			return err
		}
		return errors.Join(f.Add(t.Context(), sim.Machine{ID: fmt.Sprint("m-", i)}), f.Close())
	})
	db := c.DBURL(t, url)
	var n int
	must(t, db.QueryRowContext(t.Context(), `SELECT count(*) FROM sim_machines`).Scan(&n))
	if n != 8 {
		t.Errorf("%d machines, want 8", n)
	}
}

// TestFleetFileOfVersion1IsUpgraded opens a fleet file written before the
// detector's columns existed.
func TestFleetFileOfVersion1IsUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := sql.Open("sqlite", "file:"+path)
	must(t, err)
	_, err = db.ExecContext(t.Context(), `
		CREATE TABLE machines (
			id TEXT PRIMARY KEY, os TEXT NOT NULL, power TEXT NOT NULL, since_ns INTEGER NOT NULL,
			boot_ns INTEGER NOT NULL, shutdown_ns INTEGER NOT NULL, hang_shutdown INTEGER NOT NULL,
			agent_dead INTEGER NOT NULL, transient INTEGER NOT NULL, users BLOB NOT NULL) STRICT;
		INSERT INTO machines VALUES ('m', 'linux', 'running', 0, 0, 0, 0, 0, 0, CAST('{"root":{}}' AS BLOB));
		PRAGMA user_version = 1`)
	must(t, err)
	must(t, db.Close())

	f := openFile(t, path, sim.Options{})
	snap, err := f.Get(t.Context(), "m")
	must(t, err)
	if snap.Power != driver.PowerRunning || snap.Applied != 0 || snap.Overlaps != 0 {
		t.Errorf("upgraded machine: %+v", snap)
	}
	must(t, f.SetPassword(t.Context(), driver.Ref{Address: "m"}, "root", []byte("Pass-1")))
	wantPassword(t, f, "m", "root", "Pass-1", true)
}

func TestImportMovesAFleetAsItIs(t *testing.T) {
	eachBacking(t, func(t *testing.T, b backing) {
		ctx := t.Context()
		c := newClock()
		src := openFile(t, filepath.Join(t.TempDir(), "fleet.db"), sim.Options{Now: c.Now})
		a := mustAdd(t, src, sim.Machine{ID: "a", Running: true, Users: []string{"root", "ops"}})
		must(t, src.SetPassword(ctx, a, "ops", []byte("Ops-pass-1")))
		bm := mustAdd(t, src, sim.Machine{ID: "b", OS: sim.Windows, BootTime: time.Minute, Faults: sim.Faults{Transient: 1}})
		must(t, src.SetFaults(ctx, "b", sim.Faults{}))
		must(t, src.Stage(ctx, bm, "Administrator", []byte("Win-pass-1")))
		must(t, src.Start(ctx, bm))

		dst := b.open(t, sim.Options{Now: c.Now})
		mustAdd(t, dst, sim.Machine{ID: "z"})
		n, err := dst.Import(ctx, src)
		must(t, err)
		if n != 2 {
			t.Fatalf("Import copied %d machines, want 2", n)
		}
		want, err := src.List(ctx)
		must(t, err)
		got, err := dst.List(ctx)
		must(t, err)
		if len(got) != 3 || fmt.Sprint(got[:2]) != fmt.Sprint(want) {
			t.Fatalf("imported fleet:\n%+v\nwant\n%+v and z", got, want)
		}
		wantPassword(t, dst, "a", "ops", "Ops-pass-1", true)
		c.Advance(time.Minute)
		wantState(t, dst, bm, driver.PowerRunning)
		wantPassword(t, dst, "b", "Administrator", "Win-pass-1", true)
		if n, err := dst.Import(ctx, src); err != nil || n != 0 {
			t.Errorf("a second Import copied %d (%v), want 0", n, err)
		}
	})
}
