package store

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"
)

// A database of an older version holding two records of one machine cannot
// be made unique: the server refuses to start and names the records,
// rather than deleting one that may be the rightful owner's.
func TestMigrationRefusesDuplicateLinksByName(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fleetpass.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations/sqlite")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'acme', 0), ('mallory', 'mallory', 0)`,
		`INSERT INTO instances (id, tenant_id, name, os_type, admin_user, state, power_driver, power_address, guest_driver, guest_address, created_at, updated_at)
		 VALUES ('ins-victim0001', 'acme', 'db', 'linux', 'root', 'RUNNING', 'sim', 'm-db', 'sim', 'm-db', 0, 0),
		        ('ins-copy000001', 'mallory', 'mine', 'linux', 'root', 'RUNNING', 'sim', 'm-db', 'sim', 'm-other', 0, 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	_, err = OpenSQLite(ctx, path)
	if err == nil {
		t.Fatal("a database with two records of one machine was migrated")
	}
	for _, want := range []string{"power link sim//m-db", "ins-victim0001 (tenant acme)", "ins-copy000001 (tenant mallory)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %q: %v", want, err)
		}
	}
}

// Past slowAfter failures, each counted attempt closes the subject for a
// delay that doubles from 2 s to the cap; attempts while it is closed are
// not counted.
func TestSignInDelaysGrowToTheCap(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.UnixMilli(1_800_000_000_000)
	var delays []time.Duration
	for range 12 {
		a, err := s.CountSignInDelayed(ctx, s.DB, "user:x", now, 15*time.Minute, 5, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Counted {
			t.Fatalf("an attempt after the delay was not counted: %+v", a)
		}
		if a.LockedUntil.After(now) {
			d := a.LockedUntil.Sub(now)
			delays = append(delays, d)
			// An attempt inside the delay is refused, not counted.
			b, err := s.CountSignInDelayed(ctx, s.DB, "user:x", now.Add(d/2), 15*time.Minute, 5, time.Minute)
			if err != nil || b.Counted || b.Failures != a.Failures {
				t.Fatalf("an attempt inside the delay: %+v %v", b, err)
			}
			now = now.Add(d)
		}
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
}
