package agentserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// offlineReset runs an offline reset of user's password on ref's instance
// through the engine and returns the ended operation.
func (f *fixture) offlineReset(ref driver.Ref, user, pw string) apiv1.Operation {
	f.t.Helper()
	ctx := context.Background()
	p := core.Principal{Kind: "key", ID: "test", Tenant: "acme", Admin: true}
	op, err := f.svc.ResetPassword(ctx, p, core.ResetRequest{InstanceIDs: []string{ref.InstanceID}, User: user,
		Mode: apiv1.ModeOffline, ForceStop: true, Password: []byte(pw)})
	if err != nil {
		f.t.Fatal(err)
	}
	testutil.WaitFor(f.t, 30*time.Second, "the operation's end", func() bool {
		op, err = f.svc.GetOperation(ctx, p, op.ID)
		return err == nil && op.Status != apiv1.OperationRunning
	})
	return op
}

// commands counts the commands stored for the agent, and the staged ones.
func (f *fixture) commands(agentID string) (all, staged int) {
	f.t.Helper()
	err := f.store.DB.QueryRowContext(context.Background(),
		`SELECT count(*), coalesce(sum(staged), 0) FROM agent_commands WHERE agent_id = ?`, agentID).Scan(&all, &staged)
	if err != nil {
		f.t.Fatal(err)
	}
	return all, staged
}

func newEngineHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{m: map[string]*fakeMachine{}}
	h.f = newFixtureOf(t, fastConfig(), h)
	return h
}

// An offline reset through the engine, the channel and the agent's own
// code: the agent applies the staged password at boot and acknowledges it
// before it reports ready, and that acknowledgement is the confirmation.
// The password is set once; no second command reaches the agent.
func TestAnOfflineResetSetsThePasswordOnceAtBoot(t *testing.T) {
	h := newEngineHarness(t)
	ref := h.NewMachine(t, drivertest.MachineSpec{Running: true})
	m, err := h.machine(ref)
	if err != nil {
		t.Fatal(err)
	}
	op := h.f.offlineReset(ref, "root", "Staged-Once-At-Boot-1")
	if it := op.Items[0]; op.Status != apiv1.OperationSucceeded || it.State != apiv1.ItemSucceeded {
		t.Fatalf("operation %s, item %+v; want it succeeded", op.Status, it)
	}
	if !h.CheckPassword(t, ref, "root", []byte("Staged-Once-At-Boot-1")) {
		t.Error("the new password is not set")
	}
	m.mu.Lock()
	sets, running := m.sets, m.running
	m.mu.Unlock()
	if !running {
		t.Error("the machine was left off")
	}
	if sets != 1 {
		t.Errorf("the agent set a password %d times, want once (the staged command)", sets)
	}
	if all, staged := h.f.commands(ref.Address); all != 1 || staged != 1 {
		t.Errorf("%d commands stored for the agent (%d staged), want exactly one, the staged one", all, staged)
	}
}

// A staged command the agent could not apply at boot (its user does not
// exist) confirms nothing: the item fails with the reason, it does not
// succeed on the agent's readiness.
func TestAStagedCommandThatFailedAtBootFailsTheItem(t *testing.T) {
	h := newEngineHarness(t)
	ref := h.NewMachine(t, drivertest.MachineSpec{Running: true})
	op := h.f.offlineReset(ref, drivertest.UnknownUser, "Staged-For-Nobody-1")
	if it := op.Items[0]; op.Status != apiv1.OperationFailed || it.ErrorCode != engine.CodeUserNotFound {
		t.Fatalf("operation %s, item %+v; want it failed with %s", op.Status, it, engine.CodeUserNotFound)
	}
	if _, staged := h.f.commands(ref.Address); staged != 1 {
		t.Errorf("%d staged commands stored for the agent, want one", staged)
	}
}
