package realbmc

import (
	"slices"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// TestServerRestartMidOfflineReset: the server goes down while an offline
// reset waits for a hung OS to shut down. After the restart the item
// resumes from its durable step: the forced stop after the shutdown
// timeout, the staging, the power on through the BMC and the agent's
// confirmation; the server ends running with the new password, and no
// power command was sent twice in a way that matters.
func TestServerRestartMidOfflineReset(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newServer("bm-crash", old)
	s.chassis.setHang(true)
	pw := newPassword()
	op, err := e.client.ResetPassword(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{s.instance}, User: user,
		Mode: apiv1.ModeOffline, ForceStop: true, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(s.bmc.Commands(), "set shutdown 1") {
		if time.Now().After(deadline) {
			t.Fatalf("no soft off reached the chassis: %q", s.bmc.HookCalls())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.stop()
	// Down for a moment; the OS goes on ignoring the button meanwhile, so
	// only the forced stop the restarted server sends can end it.
	time.Sleep(time.Second)
	e.start()

	wantItem(t, e.wait(op.ID), apiv1.ItemSucceeded, "")
	wantPower(t, s, true)
	e.waitAlive(s)
	wantLogins(t, s, pw, old)
	var offs, ons int
	for _, c := range s.bmc.Commands() {
		switch c {
		case "set power 0":
			offs++
		case "set power 1":
			ons++
		}
	}
	if offs != 1 || ons != 1 {
		t.Errorf("chassis commands %q: want one forced power off and one power on", s.bmc.Commands())
	}
}
