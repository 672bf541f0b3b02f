package realbmc

import (
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// TestPowerThroughTheAPICrossCheckedWithIPMITool: stop (soft, hard),
// start and reboot of a bare-metal server through the native API, each
// seen by ipmitool on the same BMC, and a change made behind fleetpass's
// back (ipmitool) recorded within 15 seconds.
func TestPowerThroughTheAPICrossCheckedWithIPMITool(t *testing.T) {
	e := newEnv(t)
	pw := newPassword()
	s := e.newServer("bm-power", pw)
	wantPower(t, s, true)

	wantItem(t, e.power(apiv1.ActionStop, apiv1.StopSoft, s), apiv1.ItemSucceeded, "")
	wantPower(t, s, false)
	if in := e.instance(s); in.State != apiv1.StateStopped {
		t.Errorf("state after stop: %s, want STOPPED", in.State)
	}

	wantItem(t, e.power(apiv1.ActionStart, "", s), apiv1.ItemSucceeded, "")
	wantPower(t, s, true)
	e.waitAlive(s)

	wantItem(t, e.power(apiv1.ActionReboot, apiv1.StopSoftThenHard, s), apiv1.ItemSucceeded, "")
	wantPower(t, s, true)
	e.waitAlive(s)

	wantItem(t, e.power(apiv1.ActionStop, apiv1.StopHard, s), apiv1.ItemSucceeded, "")
	wantPower(t, s, false)
	if got := s.bmc.Commands(); len(got) == 0 || got[len(got)-1] != "set power 0" {
		t.Errorf("chassis commands %q: want a hard power off last", got)
	}

	// Behind fleetpass's back: the BMC watcher notices.
	if _, err := s.bmc.IPMITool("chassis", "power", "on"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.waitInstance(s, 15*time.Second, "RUNNING after ipmitool's power on", func(in *apiv1.Instance) bool {
		return in.State == apiv1.StateRunning
	})
	t.Logf("state followed ipmitool's power on in %v", time.Since(start).Round(time.Millisecond))
	e.waitAlive(s)
	if err := s.g.CheckLogin(user, pw); err != nil {
		t.Errorf("login after the power cycles: %v", err)
	}
}
