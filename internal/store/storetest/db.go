// Package storetest is the store's conformance suite, run on every SQL
// dialect fleetpass supports (as drivertest is for drivers and River's
// riverdrivertest for its drivers): each store method's contract, plus the
// cases only real concurrent transactions show.
//
// It also gives other packages' tests the database they run on:
// FLEETPASS_TEST_DATABASE=postgres makes DatabaseURL hand each test a
// fresh PostgreSQL database (a clone of a migrated template in the test
// binary's throwaway cluster, see pgtest); otherwise tests use SQLite in
// their data directory. Packages that call DatabaseURL or OpenPostgres
// call pgtest.Run from their TestMain.
package storetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store"
)

// EnvDatabase selects the database of the server and CLI suites:
// "postgres", or empty (or "sqlite") for SQLite.
const EnvDatabase = "FLEETPASS_TEST_DATABASE"

// OnPostgres reports whether this run's server tests use PostgreSQL.
func OnPostgres() bool { return os.Getenv(EnvDatabase) == "postgres" }

// DatabaseURL is the --database-url a test's server should use: a fresh
// PostgreSQL database when the run is on PostgreSQL, else "" (SQLite).
func DatabaseURL(t testing.TB) string {
	t.Helper()
	if !OnPostgres() {
		return ""
	}
	return PostgresURL(t)
}

// PostgresURL is a fresh database, with fleetpass's and River's schema,
// in the test binary's PostgreSQL cluster.
func PostgresURL(t testing.TB) string {
	t.Helper()
	c := pgtest.Shared(t)
	return c.FromTemplate(t, "fleetpass_template", func(ctx context.Context, url string) error {
		s, err := store.OpenPostgres(ctx, url)
		if err != nil {
			return err
		}
		defer s.Close()
		return engine.Migrate(ctx, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
}

// OpenPostgres opens a store on a fresh PostgreSQL database.
func OpenPostgres(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.OpenPostgres(context.Background(), PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// OpenSQLite opens a store on a fresh SQLite database.
func OpenSQLite(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Opener opens a fresh store for one test.
type Opener func(t testing.TB) *store.Store

// Dialects are the openers of every supported database, by name.
func Dialects() map[string]Opener {
	return map[string]Opener{"sqlite": OpenSQLite, "postgres": OpenPostgres}
}
