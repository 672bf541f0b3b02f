package realvm

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// One VM goes through every kind of reset in turn: each boot costs about
// ten seconds under software emulation, so the subtests share it and each
// starts from the password the one before left.
func TestResetsOfARealVMThroughEveryFrontDoor(t *testing.T) {
	s := startServer(t)
	web := s.vm(vmtest.VMOptions{Name: "web"})
	web.Start(t)
	web.WaitAgent(t, 3*time.Minute)
	pws := make([]string, 8)
	for i := range pws {
		pws[i] = newPassword()
	}
	stopWatch := watchArgv(t, pws...)
	web.SetPassword(t, "root", pws[0])
	in := s.instanceOf(web, "running with a live guest agent", running)
	if in.Guest.Driver != "libvirt" || in.OSType != "linux" || in.AdminUser != "root" {
		t.Fatalf("instance made by the inventory: %+v", in)
	}
	cur := 0 // index of root's current password

	t.Run("an offline reset with consent through the native API shuts the VM down, restarts it, and changes the password", func(t *testing.T) {
		boot := web.BootID(t, "root", pws[cur])
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline, ForceStop: true}, pws[1])
		mustSucceed(t, op)
		checkLogins(t, web, "root", pws[1], pws[cur])
		cur = 1
		if got := web.BootID(t, "root", pws[cur]); got == boot {
			t.Errorf("boot id unchanged (%s): the VM was not restarted", got)
		}
		s.instanceOf(web, "running again", running)
	})

	t.Run("an offline reset through the console's API path does the same", func(t *testing.T) {
		boot := web.BootID(t, "root", pws[cur])
		cs := s.console()
		var op apiv1.Operation
		body := map[string]any{"instanceIds": []string{in.ID}, "mode": apiv1.ModeOffline, "forceStop": true, "password": pws[2]}
		if status := cs.post("/console/api/v1/password-resets", body, &op); status != http.StatusAccepted {
			t.Fatalf("console reset: %d", status)
		}
		mustSucceed(t, s.wait(op.ID))
		checkLogins(t, web, "root", pws[2], pws[cur])
		cur = 2
		if got := web.BootID(t, "root", pws[cur]); got == boot {
			t.Errorf("boot id unchanged: the VM was not restarted")
		}
	})

	keyID, secret := s.tenantKey()

	t.Run("an online reset through the action API's ZEC path changes the password without a restart", func(t *testing.T) {
		s.instanceOf(web, "running with a live guest agent", running)
		boot := web.BootID(t, "root", pws[cur])
		status, ans := s.action("/api/v2/zec", "ResetInstancesPassword", keyID, secret,
			map[string]any{"instanceIds": []string{in.ID}, "password": pws[3]})
		if status != http.StatusOK {
			t.Fatalf("ZEC ResetInstancesPassword: %d %v", status, ans)
		}
		mustSucceed(t, s.waitLatest(in.ID))
		checkLogins(t, web, "root", pws[3], pws[cur])
		cur = 3
		if got := web.BootID(t, "root", pws[cur]); got != boot {
			t.Errorf("boot id changed from %s to %s: an online reset restarted the VM", boot, got)
		}
	})

	t.Run("a user that does not exist fails the item clearly and changes nothing", func(t *testing.T) {
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOnline, User: "nosuchuser"}, pws[4])
		if op.Status != apiv1.OperationFailed || op.Items[0].ErrorCode != "USER_NOT_FOUND" {
			t.Fatalf("operation %s, item %+v; want failed with USER_NOT_FOUND", op.Status, op.Items[0])
		}
		checkLogins(t, web, "root", pws[cur], "")
	})

	t.Run("without consent an offline reset of a running VM is refused and the VM is untouched", func(t *testing.T) {
		_, err := s.client.ResetPasswordSecret(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline}, []byte(pws[4]))
		if err == nil || !strings.Contains(err.Error(), "FORCED_SHUTDOWN_CONSENT_REQUIRED") {
			t.Fatalf("reset without consent: %v, want FORCED_SHUTDOWN_CONSENT_REQUIRED", err)
		}
		if st := web.State(t); st != "running" {
			t.Fatalf("VM is %s", st)
		}
	})

	t.Run("a guest that ignores shutdown keeps running without consent, and is destroyed after the timeout with it", func(t *testing.T) {
		web.IgnoreShutdown(t, "root", pws[cur])
		boot := web.BootID(t, "root", pws[cur])
		// No consent to cut the power: a soft stop.
		op, err := s.client.PowerAction(t.Context(), apiv1.PowerAction{Action: apiv1.ActionStop, InstanceIDs: []string{in.ID}, StopMode: apiv1.StopSoft})
		if err != nil {
			t.Fatal(err)
		}
		op = s.wait(op.ID)
		it := op.Items[0]
		if op.Status != apiv1.OperationFailed || it.ErrorCode != "SHUTDOWN_TIMEOUT" || !strings.Contains(it.Message, "no forced stop was allowed") {
			t.Fatalf("soft stop of a guest ignoring it: %s, item %+v; want SHUTDOWN_TIMEOUT", op.Status, it)
		}
		if st := web.State(t); st != "running" {
			t.Fatalf("after a failed soft stop the VM is %s, want running", st)
		}
		if got := web.BootID(t, "root", pws[cur]); got != boot {
			t.Fatalf("the VM restarted")
		}
		// With consent: destroyed after the timeout, reset, started.
		start := time.Now()
		op = s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline, ForceStop: true}, pws[4])
		mustSucceed(t, op)
		if took := time.Since(start); took < shutdownTimeout {
			t.Errorf("the reset took %s, less than the shutdown timeout: the VM was not given its graceful chance", took)
		}
		checkLogins(t, web, "root", pws[4], pws[cur])
		cur = 4
		if got := web.BootID(t, "root", pws[cur]); got == boot {
			t.Errorf("boot id unchanged: the VM was not restarted")
		}
	})

	t.Run("a stopped VM reset through the action API's VM path ends running with the new password", func(t *testing.T) {
		op, err := s.client.PowerAction(t.Context(), apiv1.PowerAction{Action: apiv1.ActionStop, InstanceIDs: []string{in.ID}, StopMode: apiv1.StopSoft})
		if err != nil {
			t.Fatal(err)
		}
		mustSucceed(t, s.wait(op.ID))
		s.instanceOf(web, "stopped", stopped)
		status, ans := s.action("/api/v2/vm", "ResetInstancesPassword", keyID, secret,
			map[string]any{"instanceIds": []string{in.ID}, "password": pws[5]})
		if status != http.StatusOK {
			t.Fatalf("VM ResetInstancesPassword: %d %v", status, ans)
		}
		mustSucceed(t, s.waitLatest(in.ID))
		if st := web.State(t); st != "running" {
			t.Fatalf("VM is %s after the reset, want running", st)
		}
		checkLogins(t, web, "root", pws[5], pws[cur])
		cur = 5
		s.instanceOf(web, "RUNNING", running)
	})

	t.Run("an offline reset survives a libvirtd restart in the middle", func(t *testing.T) {
		op, err := s.client.ResetPasswordSecret(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline, ForceStop: true}, []byte(pws[6]))
		if err != nil {
			t.Fatal(err)
		}
		// Restart libvirtd while the VM shuts down or boots.
		deadline := time.Now().Add(time.Minute)
		for {
			now, err := s.client.GetOperation(t.Context(), op.ID)
			if err != nil {
				t.Fatal(err)
			}
			step := now.Items[0].Step
			if step == apiv1.StepShuttingDown || step == apiv1.StepStarting || step == apiv1.StepWaitingGuest {
				t.Logf("restarting libvirtd in step %s", step)
				break
			}
			if now.Status != apiv1.OperationRunning || time.Now().After(deadline) {
				t.Fatalf("operation reached %s (step %s) before libvirtd could be restarted", now.Status, step)
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.lv.Restart(t)
		mustSucceed(t, s.wait(op.ID))
		checkLogins(t, web, "root", pws[6], pws[cur])
		cur = 6
	})

	stopWatch()
	s.assertNoSecret(pws...)
}

func TestADomainWithoutAGuestAgentChannelFailsAGuestResetBeforeAnyPowerAction(t *testing.T) {
	s := startServer(t)
	v := s.vm(vmtest.VMOptions{Name: "nochan", NoAgentChannel: true})
	in := s.instanceOf(v, "stopped", stopped)
	if !in.NoGuestChannel {
		t.Errorf("the inventory did not see that the domain has no agent channel: %+v", in)
	}
	pw := newPassword()
	// Method guest: auto would edit the disk (see diskreset_test.go).
	op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline, Method: apiv1.MethodGuest}, pw)
	it := op.Items[0]
	if op.Status != apiv1.OperationFailed || it.ErrorCode != "NO_GUEST_CHANNEL" || !strings.Contains(it.Message, "guest agent channel") {
		t.Fatalf("reset: %s, item %+v; want failed with NO_GUEST_CHANNEL", op.Status, it)
	}
	if st := v.State(t); st != "shutoff" {
		t.Errorf("the VM is %s: the failed reset must not have started it", st)
	}
	s.assertNoSecret(pw)
}

func TestTheFleetpassAgentInsideAVMTakesOverItsGuestChannel(t *testing.T) {
	s := startServer(t)
	// The token names the instance the VM's domain becomes: only such a
	// token may attach an agent to a known VM.
	tokenFor := func(name string) string {
		tok, err := s.client.CreateAgentToken(t.Context(), apiv1.AgentTokenCreate{Tenant: tenant, InstanceName: name})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	v := s.vm(vmtest.VMOptions{Name: "agent", Agent: &vmtest.AgentSeed{Binary: vmtest.BuildAgent(t),
		ServerURL: vmtest.GuestURL(s.port), Fingerprint: s.fingerprint, TokenFor: tokenFor}})
	v.Start(t)
	v.WaitAgent(t, 3*time.Minute)
	pws := []string{newPassword(), newPassword(), newPassword()}
	stopWatch := watchArgv(t, pws...)
	v.SetPassword(t, "root", pws[0])
	in := s.instanceOf(v, "running with its fleetpass agent alive", func(in apiv1.Instance) bool {
		return running(in) && in.Guest.Driver == "agent"
	})
	if in.Power.Driver != "libvirt" {
		t.Fatalf("the agent's enrolment took the VM's power link: %+v", in.Power)
	}

	boot := v.BootID(t, "root", pws[0])
	op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOnline}, pws[1])
	mustSucceed(t, op)
	checkLogins(t, v, "root", pws[1], pws[0])
	if got := v.BootID(t, "root", pws[1]); got != boot {
		t.Errorf("an online reset restarted the VM")
	}

	// Offline: libvirt powers the VM, the agent applies the staged
	// password at start-up.
	op = s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline, ForceStop: true}, pws[2])
	mustSucceed(t, op)
	checkLogins(t, v, "root", pws[2], pws[1])
	stopWatch()
	s.assertNoSecret(pws...)
}

// libvirtd at debug level logs every command it sends to a guest agent. An
// online reset of a Linux VM through libvirt hands the agent a hash, so
// neither the password nor its base64 form may show in that log, which
// must show the command (else the level was too low for the scan to mean
// anything).
func TestAnOnlineResetThroughLibvirtShowsNoPasswordInLibvirtdsDebugLog(t *testing.T) {
	s := startServer(t)
	v := s.vm(vmtest.VMOptions{Name: "dbglog"})
	v.Start(t)
	v.WaitAgent(t, 3*time.Minute)
	old, pw := newPassword(), newPassword()
	stopWatch := watchArgv(t, pw)
	v.SetPassword(t, "root", old)
	in := s.instanceOf(v, "running with a live guest agent", running)
	if in.Guest.Driver != "libvirt" || in.OSType != "linux" {
		t.Fatalf("instance made by the inventory: %+v", in)
	}

	logPath := filepath.Join(s.dir, "libvirtd-debug.log")
	stopDebug := s.lv.DebugQEMULog(t, logPath)
	op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOnline}, pw)
	stopDebug()
	mustSucceed(t, op)
	checkLogins(t, v, "root", pw, old)
	stopWatch()

	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte("guest-set-user-password")) {
		t.Fatalf("libvirtd's debug log (%d bytes) does not show guest-set-user-password: the scan would prove nothing", len(log))
	}
	if testutil.ContainsSecret(log, pw) {
		t.Error("libvirtd's debug log holds the password")
	}
	s.assertNoSecret(pw)
}
