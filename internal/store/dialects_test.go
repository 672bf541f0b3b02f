package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestReplayKeyIsRefusedUntilItExpires(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	s.SetClock(func() time.Time { return now })
	expires := now.Add(5 * time.Minute)
	for i, want := range []bool{true, false, false} {
		fresh, err := s.UseReplayKey(ctx, "zc2:abc", expires)
		if err != nil || fresh != want {
			t.Fatalf("use %d: fresh %v, %v; want %v", i+1, fresh, err, want)
		}
	}
	if fresh, _ := s.UseReplayKey(ctx, "zc2:other", expires); !fresh {
		t.Fatal("another key was refused")
	}
	// Once expired the row is pruned: the timestamp check refuses such a
	// request by then, so the key need not be kept.
	now = expires.Add(time.Second)
	if fresh, err := s.UseReplayKey(ctx, "capi2:1:2:k", now.Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("%v %v", fresh, err)
	}
	var n int
	if err := s.DB.QueryRow(`SELECT count(*) FROM replay_keys`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows after pruning, want 1 (%v)", n, err)
	}
}

func TestTaskNumbersCountPerTenantFromOne(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	number := func(tenant, op string) int64 {
		t.Helper()
		var n int64
		if err := s.InTx(ctx, func(tx *sql.Tx) (err error) {
			n, err = s.NumberTask(ctx, tx, tenant, op)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a1, b1, a2 := number("acme", "op-a1"), number("beta", "op-b1"), number("acme", "op-a2")
	if a1 != 1 || b1 != 1 || a2 != 2 {
		t.Fatalf("acme %d then %d, beta %d; want 1, 2 and 1", a1, a2, b1)
	}
	if n, err := s.TaskNumber(ctx, "op-a2"); err != nil || n != 2 {
		t.Fatalf("task of op-a2: %d %v", n, err)
	}
	if _, err := s.TaskNumber(ctx, "op-never-numbered"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an operation never numbered has a task: %v", err)
	}
	if op, err := s.OperationOfTask(ctx, "beta", 1); err != nil || op != "op-b1" {
		t.Fatalf("%q %v", op, err)
	}
	if _, err := s.OperationOfTask(ctx, "beta", 2); !errors.Is(err, ErrNotFound) {
		t.Fatal("beta's task 2 was found: another tenant's number leaked across")
	}
}

func TestSearchInstancesFiltersPagesAndCounts(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		for _, tenant := range []string{"acme", "other"} {
			if _, err := s.CreateTenant(ctx, tx, tenant, tenant); err != nil {
				return err
			}
		}
		for i, name := range []string{"web-1", "web-2", "db-1", "web-3"} {
			tenant, state := "acme", apiv1.StateRunning
			if i == 3 {
				tenant = "other"
			}
			if i == 1 {
				state = apiv1.StateStopped
			}
			in := apiv1.Instance{ID: fmt.Sprintf("ins-0000000%d", i), Tenant: tenant, Name: name, OSType: "linux", AdminUser: "root",
				State: state, Power: apiv1.DriverLink{Driver: "sim", Address: name}, Guest: apiv1.DriverLink{Driver: "sim", Address: name}}
			if err := s.CreateInstance(ctx, tx, &in); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		f     InstanceSearch
		total int
		want  []string
	}{
		{"tenant", InstanceSearch{Tenant: "acme", Limit: 10}, 3, []string{"db-1", "web-1", "web-2"}},
		{"all tenants", InstanceSearch{Limit: 10}, 4, []string{"db-1", "web-1", "web-2", "web-3"}},
		{"page", InstanceSearch{Tenant: "acme", Offset: 1, Limit: 1}, 3, []string{"web-1"}},
		{"state", InstanceSearch{Tenant: "acme", States: []string{apiv1.StateStopped}, Limit: 10}, 1, []string{"web-2"}},
		{"name part", InstanceSearch{NameContains: "eb-", Limit: 10}, 3, []string{"web-1", "web-2", "web-3"}},
		{"ids", InstanceSearch{Tenant: "acme", IDs: []string{"ins-00000000", "ins-00000003"}, Limit: 10}, 1, []string{"web-1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			list, total, err := s.SearchInstances(ctx, c.f)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, in := range list {
				names = append(names, in.Name)
			}
			if total != c.total || fmt.Sprint(names) != fmt.Sprint(c.want) {
				t.Errorf("got %d %v, want %d %v", total, names, c.total, c.want)
			}
		})
	}
}
