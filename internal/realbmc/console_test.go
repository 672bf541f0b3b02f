package realbmc

import (
	"slices"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/consoletest"
)

// TestConsoleDrivesABareMetalServersPowerAndOfflineReset: a tenant's
// console user stops, starts and reboots a bare-metal server through its
// real BMC (each change seen by ipmitool on the same BMC), forces the
// reboot of an OS that ignores the power button only after agreeing to a
// forced shutdown, and resets its password offline: power off, the agent
// applies the staged password at boot, the new password logs in.
func TestConsoleDrivesABareMetalServersPowerAndOfflineReset(t *testing.T) {
	e := newEnv(t)
	oldPW := newPassword()
	e.srv.ConsoleUser("nina", "acme", false, consoletest.Password) // and the tenant
	s := e.newServerOf("acme", "bm-console", oldPW)
	if in := e.instance(s); in.Tenant != "acme" {
		t.Fatalf("registered in tenant %q, want acme", in.Tenant)
	}
	b := consoletest.New(t, e.url, 1280, 900)
	b.SignIn("nina", consoletest.Password)
	b.WaitList()
	row := consoletest.Row(s.instance)
	ended := func(what string) {
		t.Helper()
		b.WaitFor(what+": progress view", `document.querySelector("#progress tr[data-instance='`+s.instance+`']") !== null`)
		b.WaitOperationEnd()
		if st := b.ItemState(s.instance); st != apiv1.ItemSucceeded {
			b.Screenshot("failed-" + what)
			t.Fatalf("%s: item %s, want succeeded; chassis commands %q", what, st, s.bmc.Commands())
		}
	}
	page := func() {
		t.Helper()
		b.Do("the server's page", chromedp.Navigate(b.Base+"/console/#/instances/"+s.instance), consoletest.Visible("#detail-reboot"))
	}

	// A graceful stop from the row's menu: the OS shuts down.
	b.OpenRowMenu(s.instance, ".menu-power", ".menu-stop")
	b.Do("Stop", consoletest.Click(row+" .menu-stop"), consoletest.Visible("#power-dialog #power-mode-soft"))
	b.Do("submit", consoletest.Click("#power-submit"))
	ended("stop")
	wantPower(t, s, false)
	if got := s.bmc.Commands(); !slices.Equal(got, []string{"set shutdown 1"}) {
		t.Errorf("chassis commands after a graceful stop: %q, want one soft off", got)
	}

	page()
	b.Do("Start", consoletest.Click("#detail-start"), consoletest.Visible("#power-dialog #power-submit"))
	b.Do("submit", consoletest.Click("#power-submit"))
	ended("start")
	wantPower(t, s, true)
	e.waitAlive(s)

	// The OS hangs: a reboot that may force is refused until agreed to,
	// then forces the power off.
	s.chassis.setHang(true)
	before := len(s.bmc.Commands())
	page()
	b.Do("Reboot", consoletest.Click("#detail-reboot"), consoletest.Visible("#power-dialog #power-mode-soft"))
	b.Do("soft, then hard", consoletest.Click("#power-mode-soft-then-hard"), consoletest.Visible("#power-consent"))
	if b.Eval(`String(document.querySelector("#power-submit").disabled)`) != "true" {
		t.Errorf("a reboot that may force can be submitted without consent")
	}
	b.Do("agree", consoletest.Click("#power-consent"), consoletest.Click("#power-submit"))
	ended("reboot")
	s.chassis.setHang(false)
	wantPower(t, s, true)
	if got := s.bmc.Commands()[before:]; !slices.Contains(got, "set shutdown 1") || !slices.Contains(got, "set power 0") {
		t.Errorf("chassis commands of the reboot: %q, want a soft off, then a forced one", got)
	}
	e.waitAlive(s)

	// The offline reset, from the instance's page.
	newPW := newPassword()
	page()
	b.Do("Reset Password", consoletest.Click("#detail-reset"), consoletest.Visible("#reset-dialog #reset-password"))
	b.Do("custom user", consoletest.Click("#reset-user-custom"), consoletest.TypeIn("#reset-user", user))
	b.Do("password", consoletest.TypeIn("#reset-password", newPW), consoletest.TypeIn("#reset-confirm", newPW))
	b.Do("next", consoletest.Click("#reset-next"), consoletest.Visible("#reset-consent"))
	b.Do("agree", consoletest.Click("#reset-consent"), consoletest.Click("#reset-submit"))
	ended("offline reset")
	b.Screenshot("bare-metal-reset-done")
	b.AssertNoTrace(newPW)
	e.waitAlive(s)
	wantLogins(t, s, newPW, oldPW)
}
