package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// gatedPower holds every power-on request until release is closed, so
// that the items of an operation end together.
type gatedPower struct {
	driver.Power
	arrived chan struct{}
	mu      sync.Mutex
	release chan struct{}
}

func (p *gatedPower) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release = make(chan struct{})
	return p.release
}

func (p *gatedPower) Start(ctx context.Context, ref driver.Ref) error {
	p.mu.Lock()
	release := p.release
	p.mu.Unlock()
	p.arrived <- struct{}{}
	select {
	case <-release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.Power.Start(ctx, ref)
}

// The last items of an operation that end at the same moment end it once:
// neither both (one end event) nor neither (the operation does not stay
// running), whichever item's job sees the others'
// ends first. On PostgreSQL too, where the items' transactions commit
// concurrently rather than one after the other.
func TestLastItemsEndingTogetherEndTheOperationOnce(t *testing.T) {
	bothStores(t, lastItemsEndTogether)
}

func lastItemsEndTogether(t *testing.T, st *store.Store) {
	const n, rounds = 10, 5
	gate := &gatedPower{arrived: make(chan struct{}, n)}
	f := newFixtureOn(t, st, fast(), func(p driver.Power) driver.Power { gate.Power = p; return gate })
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.add(sim.Machine{ID: fmt.Sprintf("vm-%d", i)}).ID
	}
	ctx := context.Background()
	for round := range rounds {
		release := gate.gate()
		action := apiv1.ActionStart
		if round%2 == 1 {
			action = apiv1.ActionStop
		}
		op, err := f.svc.PowerAction(ctx, admin, core.PowerRequest{Action: action, InstanceIDs: ids, StopMode: apiv1.StopHard})
		if err != nil {
			t.Fatal(err)
		}
		if action == apiv1.ActionStart {
			for range n {
				select {
				case <-gate.arrived:
				case <-time.After(time.Minute):
					t.Fatal("the items never all reached the machines")
				}
			}
			close(release)
		}
		if end := f.waitEnd(op.ID); end.Status != apiv1.OperationSucceeded || end.Summary.Succeeded != n {
			t.Fatalf("round %d: operation %s, summary %+v; want succeeded, %d of %d", round, end.Status, end.Summary, n, n)
		}
	}
	// Every end event is written in the transaction that ends the
	// operation, before waitEnd can read it ended.
	ends := map[string]int{}
	evs, err := f.store.EventsAfter(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		var op apiv1.Operation
		if e.Type != events.TypeOperation || json.Unmarshal(e.Data, &op) != nil || op.Status == apiv1.OperationRunning {
			continue
		}
		ends[e.Ref]++
	}
	if len(ends) != rounds {
		t.Errorf("%d operations have an end event, want %d", len(ends), rounds)
	}
	for id, k := range ends {
		if k != 1 {
			t.Errorf("operation %s ended %d times, want once", id, k)
		}
	}
	testutil.WaitFor(t, time.Minute, "the instances unlocked", func() bool {
		for _, id := range ids {
			if in, err := f.store.GetInstance(ctx, f.store.DB, id); err != nil || in.Busy {
				return false
			}
		}
		return true
	})
}
