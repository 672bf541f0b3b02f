package ratelimit_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/ratelimit"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// maker makes a limiter under test; refused counts its refusals by door.
type maker func(t *testing.T, perSecond float64, burst int, refused func(door string)) ratelimit.Limiter

// limiters are every implementation, run through one contract: the
// memory of one process, and the database on each dialect.
func limiters() map[string]maker {
	out := map[string]maker{
		"memory": func(t *testing.T, perSecond float64, burst int, refused func(string)) ratelimit.Limiter {
			return ratelimit.NewMemory(perSecond, burst, refused)
		},
	}
	for name, open := range storetest.Dialects() {
		out["database/"+name] = func(t *testing.T, perSecond float64, burst int, refused func(string)) ratelimit.Limiter {
			return ratelimit.NewDatabase(open(t), perSecond, burst, refused, nil, nil)
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	for name, make := range limiters() {
		t.Run(name, func(t *testing.T) {
			t.Run("ABurstIsAllowedThenRefusedWithAWaitPerPrincipal", func(t *testing.T) { testBurst(t, make) })
			t.Run("NoRateMeansNoLimit", func(t *testing.T) { testNoLimit(t, make) })
			t.Run("TheBudgetRefillsAtTheRate", func(t *testing.T) { testRefill(t, make) })
		})
	}
}

func testBurst(t *testing.T, make maker) {
	ctx := context.Background()
	var mu sync.Mutex
	var refused []string
	l := make(t, 0.001, 2, func(door string) {
		mu.Lock()
		defer mu.Unlock()
		refused = append(refused, door)
	})
	for i, want := range []bool{true, true, false, false} {
		d, ok := l.Allow(ctx, "native", "key:a")
		if ok != want || (!ok && d <= 0) {
			t.Fatalf("request %d: ok %v wait %s, want ok %v", i+1, ok, d, want)
		}
		// At 0.001/s the next request is about 1000 s away.
		if !ok && (d < 900*time.Second || d > 1001*time.Second) {
			t.Fatalf("request %d: wait %s, want about 1000s", i+1, d)
		}
	}
	// Another principal has its own budget; the same one at another door
	// shares its budget.
	if _, ok := l.Allow(ctx, "action", "key:b"); !ok {
		t.Fatal("key b was refused")
	}
	if _, ok := l.Allow(ctx, "action", "key:a"); ok {
		t.Fatal("key a got a fresh budget at another door")
	}
	if len(refused) != 3 || refused[2] != "action" {
		t.Fatalf("refusals reported %v", refused)
	}
}

func testNoLimit(t *testing.T, make maker) {
	l := make(t, 0, 0, nil)
	for range 200 {
		if _, ok := l.Allow(context.Background(), "native", "key:a"); !ok {
			t.Fatal("refused without a limit")
		}
	}
}

func testRefill(t *testing.T, make maker) {
	ctx := context.Background()
	l := make(t, 20, 1, nil)
	if _, ok := l.Allow(ctx, "native", "key:a"); !ok {
		t.Fatal("the first request was refused")
	}
	d, ok := l.Allow(ctx, "native", "key:a")
	if ok {
		// A slow machine may have let 50 ms pass: then it must allow.
		return
	}
	if d > 50*time.Millisecond {
		t.Fatalf("wait %s at 20/s, want at most 50ms", d)
	}
	if !testutil.Eventually(10*time.Second, func() bool {
		_, ok := l.Allow(ctx, "native", "key:a")
		return ok
	}) {
		t.Fatal("the budget never refilled")
	}
}

// Replicas of one database draw on one budget: a burst spread over three
// limiters on three connections to one PostgreSQL database is cut at the
// burst, not three times it.
func TestReplicasShareOneBudget(t *testing.T) {
	url := storetest.PostgresURL(t)
	var replicas []ratelimit.Limiter
	for range 3 {
		s, err := store.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		replicas = append(replicas, ratelimit.NewDatabase(s, 0.001, 10, nil, nil, nil))
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok := replicas[i%3].Allow(context.Background(), "native", "key:shared"); ok {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 10 {
		t.Fatalf("%d of 60 requests over three replicas allowed, want the burst of 10", n)
	}
}

// The limiter is a fairness measure: when the database cannot answer, a
// request is let through, and the failure is counted.
func TestADatabaseFailureLetsTheRequestThroughAndIsCounted(t *testing.T) {
	s := storetest.OpenSQLite(t)
	var failures atomic.Int64
	logs := &testutil.LogBuffer{}
	l := ratelimit.NewDatabase(s, 0.001, 1, nil, func() { failures.Add(1) }, logs.Logger())
	s.Close()
	for range 3 {
		if _, ok := l.Allow(context.Background(), "native", "key:a"); !ok {
			t.Fatal("refused while the database is down")
		}
	}
	if failures.Load() != 3 {
		t.Fatalf("%d failures counted, want 3", failures.Load())
	}
	if n := strings.Count(logs.String(), "cannot reach the database"); n != 1 {
		t.Fatalf("%d warnings logged, want 1 (at most one a minute):\n%s", n, logs.String())
	}
}
