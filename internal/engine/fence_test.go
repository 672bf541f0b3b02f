package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// stubbornPower is a machine whose graceful shutdown requests go unheard
// while ignore is set (the machine runs on, so the engine asks again at
// every poll), and which reports each request to seen.
type stubbornPower struct {
	driver.Power
	ignore atomic.Bool
	calls  atomic.Int64
	mu     sync.Mutex
	seen   func(ctx context.Context)
}

func (p *stubbornPower) Shutdown(ctx context.Context, ref driver.Ref) error {
	p.calls.Add(1)
	p.mu.Lock()
	seen := p.seen
	p.mu.Unlock()
	if seen != nil {
		seen(ctx)
	}
	if p.ignore.Load() {
		return nil
	}
	return p.Power.Shutdown(ctx, ref)
}

func (p *stubbornPower) watch(f func(ctx context.Context)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = f
}

// trustedMembers is the membership of a replica whose heartbeat is
// renewed: it may act.
type trustedMembers struct{}

func (trustedMembers) ID() string { return "trusted" }

func (trustedMembers) Liveness(context.Context) (map[string]bool, error) {
	return map[string]bool{"trusted": true}, nil
}

func (trustedMembers) Trusted() bool { return true }

// startStubbornReset starts an engine (in members, nil for none) whose
// machines ignore shutdown requests (for a minute at most) and an offline
// reset of a running one, and waits until the engine has asked it twice.
func startStubbornReset(t *testing.T, members engine.Members) (*fixture, *stubbornPower, apiv1.Operation, apiv1.Instance) {
	t.Helper()
	cfg := fast()
	cfg.ShutdownTimeout = time.Minute
	cfg.Members = members
	p := &stubbornPower{}
	p.ignore.Store(true)
	f := newFixture(t, cfg, func(d driver.Power) driver.Power { p.Power = d; return p })
	in := f.add(sim.Machine{ID: "vm-1", Running: true})
	op, err := f.svc.ResetPassword(context.Background(), admin, core.ResetRequest{InstanceIDs: []string{in.ID},
		Mode: apiv1.ModeOffline, ForceStop: true, Password: []byte("Fenced-pw-0451")})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "repeated shutdown requests", func() bool { return p.calls.Load() >= 2 })
	return f, p, op, in
}

func (f *fixture) waitEnd(opID string) apiv1.Operation {
	f.t.Helper()
	var op apiv1.Operation
	testutil.WaitFor(f.t, time.Minute, "the operation's end", func() bool {
		var err error
		op, err = f.svc.GetOperation(context.Background(), admin, opID)
		return err == nil && op.Status != apiv1.OperationRunning
	})
	return op
}

// TestASupersededExecutionStopsActingAndWriting takes an item away from a
// running execution, as a replica taking over a dead one's work does: the
// older execution makes no further request to the machine and no write to
// the item, it is counted, and the item still ends once, by the newer
// executions. A trusted replica acts without reading its token back for
// engine.TokenFresh after taking it (nothing can take a trusted replica's
// item in that time), so there the requests stop at most that long after
// the takeover; without a membership, at the first one.
func TestASupersededExecutionStopsActingAndWriting(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members engine.Members
		grace   time.Duration
	}{
		{"without a membership", nil, 0},
		{"of a trusted replica", trustedMembers{}, engine.TokenFresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, p, op, in := startStubbornReset(t, tc.members)
			ctx := context.Background()

			// Another execution takes the item (the test plays it): from
			// now on until River runs the item again, every request to the
			// machine would be the superseded execution's.
			var takeover atomic.Int64
			var stale atomic.Int64
			var takenAt atomic.Int64
			p.watch(func(ctx context.Context) {
				seq := takeover.Load()
				if seq == 0 || time.Since(time.Unix(0, takenAt.Load())) < tc.grace {
					return
				}
				w := store.ItemWork{OperationID: op.ID, ExecSeq: seq}
				w.InstanceID = in.ID
				if f.store.CheckExecution(ctx, f.store.DB, &w) == nil {
					stale.Add(1)
				}
			})
			takenAt.Store(time.Now().UnixNano())
			w, err := f.store.BeginExecution(ctx, op.ID, in.ID)
			if err != nil {
				t.Fatal(err)
			}
			takeover.Store(w.ExecSeq)
			testutil.WaitFor(t, time.Minute, "the superseded execution to stop", func() bool {
				return f.engine.Superseded() >= 1
			})
			p.ignore.Store(false) // the machine now obeys: the next execution finishes
			op = f.waitEnd(op.ID)
			if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 1 {
				t.Fatalf("operation %s %+v", op.Status, op.Summary)
			}
			if n := stale.Load(); n != 0 {
				t.Errorf("the superseded execution asked the machine to shut down %d times, later than %s after losing the item", n, tc.grace)
			}
			if n := f.engine.Superseded(); n != 1 {
				t.Errorf("%d superseded executions counted, want 1", n)
			}
			if !f.passwordIs(in, "Fenced-pw-0451") {
				t.Error("the password was not set")
			}
		})
	}
}

// TestAFencedEngineCancelsItsExecutionsAndResumesWhenUnfenced fences the
// engine, as a replica that cannot renew its heartbeat does: the running
// execution is cancelled at once, no request reaches the machine while
// fenced, and the work resumes once the fence is lifted.
func TestAFencedEngineCancelsItsExecutionsAndResumesWhenUnfenced(t *testing.T) {
	f, p, op, in := startStubbornReset(t, nil)

	var fenced atomic.Bool
	var during atomic.Int64
	p.watch(func(ctx context.Context) {
		if fenced.Load() && ctx.Err() == nil {
			during.Add(1)
		}
	})
	f.engine.Fence(errors.New("test: the heartbeat lapsed"))
	fenced.Store(true)
	// A while fenced: River hands the job back again and again, and
	// nothing may act.
	testutil.WaitFor(t, time.Minute, "the fenced engine to refuse an execution", func() bool {
		return f.engine.Refused() >= 1
	})
	if n := during.Load(); n != 0 {
		t.Fatalf("%d shutdown requests while fenced", n)
	}
	fenced.Store(false)
	p.ignore.Store(false)
	f.engine.Unfence()
	op = f.waitEnd(op.ID)
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s %+v", op.Status, op.Summary)
	}
	if !f.passwordIs(in, "Fenced-pw-0451") {
		t.Error("the password was not set")
	}
}
