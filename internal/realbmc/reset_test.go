package realbmc

import (
	"slices"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// reset asks the native API for a reset and waits for its end.
func (e *env) reset(s *machine, mode string, force bool, pw string) *apiv1.Operation {
	e.t.Helper()
	op, err := e.client.ResetPassword(e.t.Context(), apiv1.PasswordReset{InstanceIDs: []string{s.instance}, User: user,
		Mode: mode, ForceStop: force, Password: pw})
	if err != nil {
		e.t.Fatalf("reset: %v", err)
	}
	return e.wait(op.ID)
}

// TestOfflineResetThroughTheNativeAPI: the server is shut down through its
// BMC (soft), the password staged for the agent, the server powered on,
// and the agent applies it at boot: the new password logs in, the old one
// does not. The agent's acknowledgement of the staged command confirms
// it: the agent sets the password once.
func TestOfflineResetThroughTheNativeAPI(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newServer("bm-offline", old)
	pw := newPassword()
	wantItem(t, e.reset(s, apiv1.ModeOffline, true, pw), apiv1.ItemSucceeded, "")
	wantPower(t, s, true)
	wantLogins(t, s, pw, old)
	if logs := s.chassis.agentLogs(); strings.Count(logs, "command applied") != 1 {
		t.Errorf("the agent applied %d commands, want one (the staged one):\n%s", strings.Count(logs, "command applied"), logs)
	}
	// Down by the power button, up again: one soft off, one on.
	if got := s.bmc.Commands(); !slices.Equal(got, []string{"set shutdown 1", "set power 1"}) {
		t.Errorf("chassis commands %q, want a soft off and a power on", got)
	}
}

// TestOfflineResetThroughTheCLI: the same through `fleetpass
// reset-password --mode offline`, the password on standard input.
func TestOfflineResetThroughTheCLI(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newServer("bm-cli", old)
	pw := newPassword()
	res := e.cli(pw+"\n", "reset-password", "--mode", "offline", "--force-stop", "--user", user, "--password-stdin", "--wait", s.instance)
	if res.err != nil {
		t.Fatalf("reset-password: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, pw) {
		t.Error("the CLI printed the password")
	}
	wantPower(t, s, true)
	wantLogins(t, s, pw, old)
}

// TestOnlineResetIsUnchanged: a running bare-metal server's password
// changes through its agent with no power action (the bare-metal API's
// semantics).
func TestOnlineResetIsUnchanged(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newServer("bm-online", old)
	pw := newPassword()
	wantItem(t, e.reset(s, apiv1.ModeOnline, false, pw), apiv1.ItemSucceeded, "")
	wantLogins(t, s, pw, old)
	if got := s.bmc.Commands(); len(got) != 0 {
		t.Errorf("chassis commands %q, want none", got)
	}
}

// TestHungOS: a server whose OS ignores the power button. Without consent
// to a forced stop the item fails with a clear reason and the server stays
// on; with consent it is powered off hard and the reset completes.
func TestHungOS(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newServer("bm-hung", old)
	s.chassis.setHang(true)

	it := wantItem(t, e.power(apiv1.ActionStop, apiv1.StopSoft, s), apiv1.ItemFailed, "SHUTDOWN_TIMEOUT")
	if !strings.Contains(it.Message, "no forced stop was allowed") {
		t.Errorf("message %q does not say why", it.Message)
	}
	wantPower(t, s, true)
	if in := e.instance(s); in.State != apiv1.StateRunning {
		t.Errorf("state after the failed stop: %s, want RUNNING", in.State)
	}

	// An offline reset of a running server needs the consent up front.
	_, err := e.client.ResetPassword(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{s.instance}, User: user,
		Mode: apiv1.ModeOffline, Password: newPassword()})
	if err == nil || !strings.Contains(err.Error(), "FORCED_SHUTDOWN_CONSENT_REQUIRED") {
		t.Fatalf("offline reset without consent: %v, want FORCED_SHUTDOWN_CONSENT_REQUIRED", err)
	}
	wantPower(t, s, true)

	pw := newPassword()
	wantItem(t, e.reset(s, apiv1.ModeOffline, true, pw), apiv1.ItemSucceeded, "")
	wantLogins(t, s, pw, old)
	cmds := s.bmc.Commands()
	if !slices.Contains(cmds, "set power 0") {
		t.Errorf("chassis commands %q, want a hard power off", cmds)
	}
}
