package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/servertest"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// proc is a fleetpass server running as a real process.
type proc = servertest.Proc

const crashKeyID, crashSecret = "fpk-crashtest", "crash-test-admin-secret-0123456789"

// startProc starts a server process with the crash tests' admin key.
func startProc(t testing.TB, bin, dataDir, addr string, logPath string, args ...string) *proc {
	t.Helper()
	return servertest.StartProc(t, bin, servertest.Key{ID: crashKeyID, Secret: crashSecret}, dataDir, addr, logPath, args...)
}

// TestKillingTheServerMidBatchFinishesEveryItemOnRestart kills a real
// server process with SIGKILL twice while a batch of 100 offline resets is
// shutting machines down and booting them, restarts it each time, and
// checks that the batch ends with every item applied once, every machine
// running again with the new password, and the password nowhere on disk or
// in the logs.
func TestKillingTheServerMidBatchFinishesEveryItemOnRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := testutil.BuildBinary(t, "github.com/fleetpass/fleetpass/cmd/fleetpass")
	dataDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "server.log")
	addr := testutil.FreePort(t)
	args := []string{"--sim-instances", "100", "--sim-boot-time", "1500ms", "--sim-shutdown-time", "1500ms"}
	url := storetest.DatabaseURL(t)
	if url != "" {
		args = append(args, "--database-url", url)
	}
	p := startProc(t, bin, dataDir, addr, logPath, args...)

	const password = "Crash-Resume-pw-77"
	list, op := resetLoadFleet(t, p, password)

	// First kill: while machines are shutting down.
	killAtStep(t, p, op.ID, apiv1.StepShuttingDown, someMachine(t, url, driver.PowerStopping))
	assertSomeMachines(t, dataDir, url, p.KilledAt, func(s sim.Snapshot) bool { return s.Power == driver.PowerStopping },
		"the first kill should catch machines on their way down")

	// Second kill: while machines are booting again.
	p = startProc(t, bin, dataDir, addr, logPath, args...)
	killAtStep(t, p, op.ID, apiv1.StepStarting, someMachine(t, url, driver.PowerStarting))
	assertSomeMachines(t, dataDir, url, p.KilledAt, func(s sim.Snapshot) bool { return s.Power == driver.PowerStarting },
		"the second kill should catch machines booting")

	p = startProc(t, bin, dataDir, addr, logPath, args...)
	deadline := time.Now().Add(90 * time.Second)
	for op.Status == apiv1.OperationRunning || op.Status == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the batch did not finish after the restarts: %+v", op.Summary)
		}
		p.API("GET", "/v1/operations/"+op.ID+"/wait?timeout=20s", nil, &op)
	}
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 100 || op.Summary.Failed != 0 || op.Summary.Total != 100 {
		t.Fatalf("operation %s %+v", op.Status, op.Summary)
	}
	for _, it := range op.Items {
		if it.State != apiv1.ItemSucceeded || it.Step != apiv1.StepDone {
			t.Errorf("item %+v", it)
		}
	}
	p.API("GET", "/v1/instances?tenant=load&limit=1000", nil, &list)
	for _, in := range list.Instances {
		if in.State != apiv1.StateRunning || in.Busy || in.LatestOperation == nil || in.LatestOperation.State != apiv1.OpStateSuccess {
			t.Errorf("instance %s: state %s busy %v latest %+v", in.Name, in.State, in.Busy, in.LatestOperation)
		}
	}

	// A graceful stop ends the process cleanly.
	if err := p.Terminate(20 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}

	f := openServerFleet(t, dataDir, url, sim.Options{})
	defer f.Close()
	snaps, err := f.List(context.Background())
	if err != nil || len(snaps) != 100 {
		t.Fatalf("the simulated fleet holds %d machines (%v), want 100", len(snaps), err)
	}
	for _, s := range snaps {
		ok, _ := f.CheckPassword(context.Background(), s.ID, "root", []byte(password))
		if s.Power != driver.PowerRunning || !ok {
			t.Errorf("machine %s: power %s, password set %v", s.ID, s.Power, ok)
		}
	}
	logs, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logs), "resumed work left by a dead replica") {
		t.Errorf("the restarts did not resume orphaned work:\n%s", logs)
	}
	if strings.Contains(string(logs), password) {
		t.Error("the password is in the server's log")
	}
	testutil.AssertNotInDir(t, dataDir, password)
	if storetest.OnPostgres() {
		servertest.AssertNotInPostgres(t, password)
	}
}

// resetLoadFleet lists the 100 machines of p's simulated load tenant
// (--sim-instances 100) and starts an offline reset of them all to
// password.
func resetLoadFleet(t testing.TB, p *proc, password string) (apiv1.InstanceList, apiv1.Operation) {
	t.Helper()
	var list apiv1.InstanceList
	p.API("GET", "/v1/instances?tenant=load&limit=1000", nil, &list)
	if len(list.Instances) != 100 {
		t.Fatalf("%d load instances", len(list.Instances))
	}
	var op apiv1.Operation
	if code := p.API("POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(list.Instances...),
		Mode: apiv1.ModeOffline, ForceStop: true, Password: password}, &op); code != 202 {
		t.Fatalf("reset: %d", code)
	}
	return list, op
}

// killAtStep kills the server as soon as some item of the operation is at
// step (and, if given, machine says a machine is in the step's phase): a
// kill timed by the batch's progress, not by the clock, lands in the phase
// it is meant for however loaded the machine.
func killAtStep(t testing.TB, p *proc, opID, step string, machine func() bool) {
	t.Helper()
	testutil.WaitFor(t, time.Minute, "an item at step "+step, func() bool {
		if machine != nil && !machine() {
			return false
		}
		var op apiv1.Operation
		p.API("GET", "/v1/operations/"+opID, nil, &op)
		for _, it := range op.Items {
			if it.Step == step {
				return true
			}
		}
		return false
	})
	p.Kill()
}

// assertSomeMachines fails t unless some simulated machine, as it was at
// time at, satisfies pred.
func assertSomeMachines(t testing.TB, dataDir, url string, at time.Time, pred func(sim.Snapshot) bool, msg string) {
	t.Helper()
	f := openServerFleet(t, dataDir, url, sim.Options{Now: func() time.Time { return at }})
	defer f.Close()
	snaps, err := f.List(context.Background())
	if err != nil || len(snaps) == 0 {
		t.Fatalf("the simulated fleet holds %d machines (%v)", len(snaps), err)
	}
	n := 0
	for _, s := range snaps {
		if pred(s) {
			n++
		}
	}
	if n == 0 {
		hist := map[driver.PowerState]int{}
		for _, s := range snaps {
			hist[s.Power]++
		}
		t.Logf("machines by power state at the kill: %v", hist)
		t.Fatal(msg)
	}
	t.Logf("%d of %d machines matched at the kill", n, len(snaps))
}
