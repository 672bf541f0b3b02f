package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/demo"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// TestDemoOnPostgresIsSeededOnceByServersStartingTogether starts three
// `serve --demo` servers at once on one empty PostgreSQL database: one
// seeds the demo fleet, the others find it, and the simulated machines
// live in the database, where a reset through one server is seen by
// every other Fleet on it.
func TestDemoOnPostgresIsSeededOnceByServersStartingTogether(t *testing.T) {
	c := pgtest.Shared(t)
	url := c.Database(t)
	keyFile := servertest.WriteSealingKey(t, 12)
	cfg := func(dataDir string) server.Config {
		return server.Config{Listen: "127.0.0.1:0", DataDir: dataDir, DatabaseURL: url, SecretKeyFile: keyFile,
			Demo: true, SimBoot: 200 * time.Millisecond, SimShutdown: 200 * time.Millisecond,
			Engine: servertest.FastEngine(), SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	const n = 3
	dirs := make([]string, n)
	srvs := make([]*server.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dirs[i] = t.TempDir()
		wg.Go(func() { srvs[i], errs[i] = server.Open(context.Background(), cfg(dirs[i])) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		defer srvs[i].Close()
	}

	want := len(demoNames(t, srvs[0]))
	if want == 0 {
		t.Fatal("no demo instance")
	}
	for i, srv := range srvs {
		if got := len(demoNames(t, srv)); got != want {
			t.Errorf("server %d sees %d demo instances, want %d", i, got, want)
		}
		machines, err := srv.Sim().List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(machines) != want {
			t.Errorf("server %d's simulated fleet has %d machines, want %d", i, len(machines), want)
		}
	}
	var rows int
	if err := c.DBURL(t, url).QueryRowContext(t.Context(), `SELECT count(*) FROM sim_machines`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != want {
		t.Errorf("%d rows in sim_machines, want %d (seeded once)", rows, want)
	}

	// A reset through one server, checked on a fleet of its own, as
	// another replica would see it.
	for _, srv := range srvs {
		srv.Close()
	}
	var credsDir string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "admin-credentials")); err == nil {
			credsDir = d
		}
	}
	if credsDir == "" {
		t.Fatal("no server wrote the admin credentials")
	}
	s := servertest.Start(t, servertest.WithDataDir(credsDir), servertest.WithConfig(func(c *server.Config) {
		*c = cfg(credsDir)
	}))
	var web apiv1.Instance
	for _, in := range demoNames(t, s.Server) {
		if in.Name == "web-01" {
			web = in
		}
	}
	pw := testutil.NewPassword()
	op := s.Reset(s.Admin, apiv1.PasswordReset{InstanceIDs: []string{web.ID}, Mode: apiv1.ModeOnline, Password: pw})
	if op = s.Wait(s.Admin, op.ID); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("reset of the demo instance: %s %+v", op.Status, op.Summary)
	}
	other, err := sim.OpenDB(t.Context(), c.DBURL(t, url), store.Postgres, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ok, err := other.CheckPassword(t.Context(), web.Power.Address, "root", []byte(pw))
	if err != nil || !ok {
		t.Errorf("another fleet on the database: password set %v (%v), want true", ok, err)
	}
	if n, err := other.Applied(t.Context(), web.Power.Address); err != nil || n != 1 {
		t.Errorf("Applied = %d (%v), want 1", n, err)
	}
	s.AssertNoSecret(pw)
}

// TestServerOnPostgresMovesTheFleetFileIntoTheDatabase starts a server on
// PostgreSQL with a fleet file left in its data directory (by `fleetpass
// db copy` from a server on SQLite): its machines move into the database
// as they were, passwords included. Once the database has machines, the
// file is never read again.
func TestServerOnPostgresMovesTheFleetFileIntoTheDatabase(t *testing.T) {
	ctx := t.Context()
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, "sim-fleet.db")
	pw := testutil.NewPassword()
	editFile := func(edit func(f *sim.Fleet) error) {
		t.Helper()
		f, err := sim.Open(ctx, path, sim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(edit(f), f.Close()); err != nil {
			t.Fatal(err)
		}
	}
	editFile(func(f *sim.Fleet) error {
		return errors.Join(
			f.Add(ctx, sim.Machine{ID: "web", Running: true}),
			f.SetPassword(ctx, driver.Ref{Address: "web"}, "root", []byte(pw)),
			f.Add(ctx, sim.Machine{ID: "db", OS: sim.Windows}))
	})
	url := storetest.PostgresURL(t)
	start := func() *servertest.Server {
		return servertest.Start(t, servertest.WithDataDir(dataDir),
			servertest.WithConfig(func(c *server.Config) { c.DatabaseURL = url }))
	}
	wantMachines := func(s *servertest.Server, want ...string) {
		t.Helper()
		list, err := s.Server.Sim().List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range list {
			got = append(got, m.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("machines in the database: %q, want %q", got, want)
		}
	}

	s := start()
	wantMachines(s, "db", "web")
	if ok, err := s.Server.Sim().CheckPassword(ctx, "web", "root", []byte(pw)); err != nil || !ok {
		t.Errorf("the moved machine's password: %v (%v), want set", ok, err)
	}
	if !s.Logs.Contains("moved the simulated machines") {
		t.Errorf("no log line tells the machines moved:\n%s", s.Logs)
	}
	s.AssertNoSecret(pw)
	s.Stop()

	// A machine added to the file afterwards stays there.
	editFile(func(f *sim.Fleet) error { return f.Add(ctx, sim.Machine{ID: "late"}) })
	wantMachines(start(), "db", "web")
}

// TestDemoMachinesMissingFromTheDatabaseAreAddedBack restarts a `serve
// --demo` server on PostgreSQL whose demo instances are seeded but whose
// simulated machines are gone (they lived in a fleet file that did not
// come along): the machines are added back, and the instances are not
// registered twice.
func TestDemoMachinesMissingFromTheDatabaseAreAddedBack(t *testing.T) {
	url := storetest.PostgresURL(t)
	dataDir := t.TempDir()
	start := func() *servertest.Server {
		return servertest.Start(t, servertest.WithDataDir(dataDir),
			servertest.WithConfig(func(c *server.Config) { c.DatabaseURL = url; c.Demo = true }))
	}
	s := start()
	want := len(demoNames(t, s.Server))
	if want == 0 {
		t.Fatal("no demo instance")
	}
	s.Stop()
	if _, err := pgtest.Shared(t).DBURL(t, url).ExecContext(t.Context(), `DELETE FROM sim_machines`); err != nil {
		t.Fatal(err)
	}

	s = start()
	if got := len(demoNames(t, s.Server)); got != want {
		t.Errorf("%d demo instances after the restart, want %d", got, want)
	}
	machines, err := s.Server.Sim().List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(machines) != want {
		t.Errorf("%d simulated machines after the restart, want %d", len(machines), want)
	}
}

// openServerFleet opens, beside a stopped or killed server, the simulated
// fleet it kept in dataDir or in the PostgreSQL database at url. Close it
// before the server starts again: a fleet file is open to one process.
func openServerFleet(t testing.TB, dataDir, url string, opts sim.Options) *sim.Fleet {
	t.Helper()
	var f *sim.Fleet
	var err error
	if url == "" {
		f, err = sim.Open(context.Background(), filepath.Join(dataDir, "sim-fleet.db"), opts)
	} else {
		f, err = sim.OpenDB(context.Background(), pgtest.Shared(t).DBURL(t, url), store.Postgres, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// someMachine reports, while a server runs on the PostgreSQL database at
// url, whether some simulated machine is in power state want; nil on
// SQLite, whose fleet file the running server alone may open. An item's
// step is recorded before its driver call lands: a kill timed by both
// lands after the call.
func someMachine(t testing.TB, url string, want driver.PowerState) func() bool {
	if url == "" {
		return nil
	}
	f := openServerFleet(t, "", url, sim.Options{})
	t.Cleanup(func() { f.Close() })
	return func() bool {
		snaps, _ := f.List(context.Background())
		for _, s := range snaps {
			if s.Power == want {
				return true
			}
		}
		return false
	}
}

func demoNames(t *testing.T, srv *server.Server) []apiv1.Instance {
	t.Helper()
	admin := core.Principal{Kind: "system", ID: "test", Tenant: demo.Tenant, Admin: true, Address: "local"}
	list, err := srv.Service().ListInstances(t.Context(), admin, core.InstanceQuery{Tenant: demo.Tenant, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return list.Instances
}

// BenchmarkResetThroughputSimFleet is BenchmarkResetThroughput with the
// simulated fleet in each of its homes, in one run: in the fleet file (the
// SQLite default, and what a server on PostgreSQL used before the fleet
// moved into the database) and in the server's database (sim.OpenDB; the
// PostgreSQL default).
func BenchmarkResetThroughputSimFleet(b *testing.B) {
	for _, tc := range []struct{ db, fleet string }{
		{"sqlite", "file"}, {"sqlite", "db"}, {"postgres", "file"}, {"postgres", "db"},
	} {
		b.Run(tc.db+"/"+tc.fleet, func(b *testing.B) {
			e, insts := benchEnvFleet(b, 10000, tc.db, tc.fleet)
			measureResetThroughput(b, e, insts)
		})
	}
}

// lateFleet is a sim driver whose fleet is set once the server is open
// (a fleet in the server's own database).
type lateFleet struct{ *sim.Fleet }

// benchEnvFleet is benchEnv with the simulated machines in a fleet file
// or in the server's database, whichever its default.
func benchEnvFleet(b *testing.B, n int, db, fleet string) (*env, []apiv1.Instance) {
	b.Helper()
	f := &lateFleet{}
	if fleet == "file" {
		var err error
		if f.Fleet, err = sim.Open(b.Context(), filepath.Join(b.TempDir(), "sim-fleet.db"), sim.Options{}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
	}
	opts := []servertest.Option{servertest.WithEngine(engine.DefaultConfig()),
		servertest.WithDrivers(map[string]driver.Power{"sim": f}, map[string]driver.Guest{"sim": f})}
	if db == "sqlite" {
		opts = append(opts, servertest.WithSQLite())
	} else {
		opts = append(opts, servertest.WithConfig(func(c *server.Config) { c.DatabaseURL = storetest.PostgresURL(b) }))
	}
	s := servertest.Start(b, opts...)
	if f.Fleet == nil {
		st := s.Server.Store()
		var err error
		if f.Fleet, err = sim.OpenDB(b.Context(), st.DB, st.Dialect(), sim.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	e := &env{t: b, s: s, srv: s.Server, url: s.URL, dataDir: s.DataDir, databaseURL: s.DatabaseURL, logs: s.Logs,
		out: s.Out, admin: key{s.Admin.ID, s.Admin.Secret}}
	e.http.URL = s.URL
	if _, err := demo.SeedLoad(b.Context(), e.srv.Service(), f.Fleet, n, 0, 0); err != nil {
		b.Fatal(err)
	}
	return e, listLoad(e)
}
