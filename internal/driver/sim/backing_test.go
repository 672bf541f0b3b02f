package sim_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// backing is where a test's fleet lives. open opens a Fleet on it, closed
// when the test ends; opening again gives the same fleet when durable.
type backing struct {
	open func(t testing.TB, opts sim.Options) *sim.Fleet
	// durable: a fleet opened again after Close finds the machines.
	durable bool
	// shared: Fleet values opened on it at once share one fleet (a
	// database); otherwise only one may be open at a time.
	shared bool
	// dirs hold the backing's bytes at rest (files or directories).
	dirs []string
	// table opens the database table holding the machines, to be read
	// once every Fleet on it is closed; nil for a memory fleet.
	table func(t testing.TB) (db *sql.DB, name string)
}

// backings are every way to keep a fleet: memory, the fleet file, and
// a table of a SQLite or PostgreSQL database (skipped under -short).
var backings = []struct {
	name string
	make func(t testing.TB) backing
}{
	{"Memory", func(testing.TB) backing {
		return backing{open: func(_ testing.TB, opts sim.Options) *sim.Fleet { return sim.NewMemory(opts) }}
	}},
	{"File", func(t testing.TB) backing {
		dir := t.TempDir()
		path := filepath.Join(dir, "fleet.db")
		return backing{durable: true, dirs: []string{dir},
			open:  func(t testing.TB, opts sim.Options) *sim.Fleet { return openFile(t, path, opts) },
			table: func(t testing.TB) (*sql.DB, string) { return openSQLiteDB(t, path), "machines" }}
	}},
	{"DB/SQLite", func(t testing.TB) backing {
		dir := t.TempDir()
		db := openSQLiteDB(t, filepath.Join(dir, "main.db"))
		return backing{durable: true, shared: true, dirs: []string{dir},
			open:  func(t testing.TB, opts sim.Options) *sim.Fleet { return openDB(t, db, store.SQLite, opts) },
			table: func(testing.TB) (*sql.DB, string) { return db, "sim_machines" }}
	}},
	{"DB/Postgres", func(t testing.TB) backing {
		c := pgtest.Shared(t)
		db := c.DBURL(t, c.Database(t))
		return backing{durable: true, shared: true, dirs: []string{c.Data, c.Log},
			open:  func(t testing.TB, opts sim.Options) *sim.Fleet { return openDB(t, db, store.Postgres, opts) },
			table: func(testing.TB) (*sql.DB, string) { return db, "sim_machines" }}
	}},
}

// eachBacking runs test once per backing, as a subtest named after it.
func eachBacking(t *testing.T, test func(t *testing.T, b backing)) {
	for _, b := range backings {
		t.Run(b.name, func(t *testing.T) { test(t, b.make(t)) })
	}
}

// openSQLiteDB opens a SQLite database as a server would share it: a pool
// of connections that wait for each other's locks.
func openSQLiteDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openDB(t testing.TB, db *sql.DB, dialect store.Dialect, opts sim.Options) *sim.Fleet {
	t.Helper()
	f, err := sim.OpenDB(t.Context(), db, dialect, opts)
	if err != nil {
		t.Fatalf("OpenDB: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}
