//go:build unix

package sim_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store"
)

// TestCrash kills a process that uses a fleet with SIGKILL and checks that
// every change it reported done survived: in a fleet file, and in a
// database table.
func TestCrash(t *testing.T) {
	if kind := os.Getenv("SIM_CRASH_CHILD"); kind != "" {
		crashChild(kind, os.Getenv("SIM_CRASH_TARGET"))
		return
	}
	for _, tc := range []struct {
		name string
		// target is where the child keeps its fleet; open opens it again.
		target func(t *testing.T) (string, func(t *testing.T) *sim.Fleet)
	}{
		{"File", func(t *testing.T) (string, func(t *testing.T) *sim.Fleet) {
			path := filepath.Join(t.TempDir(), "fleet.db")
			return path, func(t *testing.T) *sim.Fleet { return openFile(t, path, sim.Options{}) }
		}},
		{"DB/SQLite", func(t *testing.T) (string, func(t *testing.T) *sim.Fleet) {
			path := filepath.Join(t.TempDir(), "main.db")
			return path, func(t *testing.T) *sim.Fleet {
				return openDB(t, openSQLiteDB(t, path), store.SQLite, sim.Options{})
			}
		}},
		{"DB/Postgres", func(t *testing.T) (string, func(t *testing.T) *sim.Fleet) {
			c := pgtest.Shared(t)
			url := c.Database(t)
			return url, func(t *testing.T) *sim.Fleet { return openDB(t, c.DBURL(t, url), store.Postgres, sim.Options{}) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, open := tc.target(t)
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrash$")
			cmd.Env = append(os.Environ(), "SIM_CRASH_CHILD="+tc.name, "SIM_CRASH_TARGET="+target)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die of SIGKILL: %v\n%s", err, out)
			}

			f := open(t)
			ctx := t.Context()
			list, err := f.List(ctx)
			must(t, err)
			if len(list) != 100 {
				t.Fatalf("%d machines after the crash, want 100", len(list))
			}
			for _, s := range list {
				wantPassword(t, f, s.ID, "root", "Crash-pass-"+s.ID, true)
				if s.Power != driver.PowerStopping || !s.Faults.HangShutdown || s.Applied != 1 {
					t.Errorf("%s: %s with faults %+v, %d applied; want stopping with a hung shutdown, 1 applied",
						s.ID, s.Power, s.Faults, s.Applied)
				}
			}
		})
	}
}

// crashChild makes changes to a fleet and kills itself before closing it.
func crashChild(kind, target string) {
	ctx := context.Background()
	var (
		f   *sim.Fleet
		err error
	)
	switch kind {
	case "File":
		f, err = sim.Open(ctx, target, sim.Options{})
	case "DB/SQLite", "DB/Postgres":
		driverName, dialect := "sqlite", store.SQLite
		if kind == "DB/Postgres" {
			driverName, dialect = "pgx", store.Postgres
		} else {
			target = "file:" + target + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)"
		}
		var db *sql.DB
		if db, err = sql.Open(driverName, target); err == nil {
			f, err = sim.OpenDB(ctx, db, dialect, sim.Options{})
		}
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		panic(err)
	}
	for i := range 100 {
		id := fmt.Sprintf("m%03d", i)
		ref := driver.Ref{Address: id}
		steps := []error{
			f.Add(ctx, sim.Machine{ID: id, Running: true, Faults: sim.Faults{HangShutdown: true}}),
			f.SetPassword(ctx, ref, "root", []byte("Crash-pass-"+id)),
			f.Shutdown(ctx, ref),
		}
		if err := errors.Join(steps...); err != nil {
			panic(err)
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // not reached
}
