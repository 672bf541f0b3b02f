package realvm

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// Disk resets: a VM with no guest agent channel and no fleetpass agent has
// its password reset offline by editing /etc/shadow on its disk. One VM
// goes through the cases in turn (each boot and each appliance costs ten
// to twenty seconds under software emulation).

func agentless(in apiv1.Instance) bool { return in.NoGuestChannel }

// shadowLines returns /etc/shadow of the running guest, read over SSH.
func shadowLines(t *testing.T, v *vmtest.VM, pw string) []string {
	t.Helper()
	out, err := v.SSH("root", pw, "cat /etc/shadow; ls /etc/shadow.fleetpass 2>/dev/null && echo LEFTOVER; true")
	if err != nil {
		t.Fatalf("read /etc/shadow: %v", err)
	}
	if strings.Contains(out, "LEFTOVER") {
		t.Errorf("/etc/shadow.fleetpass was left beside /etc/shadow")
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}

// onlyRootChanged fails unless before and after differ in root's line alone.
func onlyRootChanged(t *testing.T, before, after []string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("/etc/shadow went from %d to %d lines", len(before), len(after))
	}
	for i := range before {
		if strings.HasPrefix(before[i], "root:") {
			if before[i] == after[i] {
				t.Errorf("root's line did not change")
			}
			continue
		}
		if before[i] != after[i] {
			t.Errorf("line %d changed: %q -> %q", i, before[i], after[i])
		}
	}
}

func (s *server) powerAndWait(action string, in apiv1.Instance) {
	s.t.Helper()
	op, err := s.client.PowerAction(s.t.Context(), apiv1.PowerAction{Action: action, InstanceIDs: []string{in.ID}, StopMode: apiv1.StopSoft})
	if err != nil {
		s.t.Fatal(err)
	}
	mustSucceed(s.t, s.wait(op.ID))
}

func TestAnAgentlessVMIsResetByEditingItsDisk(t *testing.T) {
	s := startServer(t)
	if !strings.Contains(s.logs.String(), "disk resets: available") {
		t.Fatalf("serve did not say disk resets are available:\n%s", tail(s.logs.String(), 40))
	}
	v := s.vm(vmtest.VMOptions{Name: "agentless", NoAgentChannel: true, Root: "/dev/sda"})
	v.Start(t)
	in := s.instanceOf(v, "running, with no guest channel", func(in apiv1.Instance) bool {
		return in.State == apiv1.StateRunning && agentless(in)
	})
	if !slices.Equal(in.ResetMethods, []string{apiv1.MethodDisk}) {
		t.Fatalf("resetMethods = %v, want [disk]", in.ResetMethods)
	}
	pws := make([]string, 6)
	var secrets [][]byte
	for i := range pws {
		pws[i] = newPassword()
		secrets = append(secrets, []byte(pws[i]))
	}
	stopWatch := vmtest.WatchSecrets(t, secrets...)
	keyID, secret := s.tenantKey()
	cur := -1

	t.Run("a running VM without any guest agent is reset offline with consent through the native API", func(t *testing.T) {
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, ForceStop: true}, pws[0])
		mustSucceed(t, op)
		if it := op.Items[0]; it.Mode != apiv1.ModeOffline || it.Method != apiv1.MethodDisk {
			t.Errorf("item %+v: want mode offline, method disk", it)
		}
		if st := v.State(t); st != "running" {
			t.Fatalf("the VM is %s after the reset, want running", st)
		}
		checkLogins(t, v, "root", pws[0], "")
		cur = 0
		if err := v.CanLogin("ciuser", pws[0]); err == nil {
			t.Errorf("ciuser logs in with root's new password: another user's line changed")
		}
	})
	if cur < 0 {
		t.FailNow()
	}

	t.Run("a stopped VM is reset through the action API's VM path: only root's line changes, and the VM ends running", func(t *testing.T) {
		before := shadowLines(t, v, pws[cur])
		s.powerAndWait(apiv1.ActionStop, in)
		s.instanceOf(v, "stopped", stopped)
		status, ans := s.action("/api/v2/vm", "ResetInstancesPassword", keyID, secret,
			map[string]any{"instanceIds": []string{in.ID}, "password": pws[1]})
		if status != http.StatusOK {
			t.Fatalf("VM ResetInstancesPassword: %d %v", status, ans)
		}
		mustSucceed(t, s.waitLatest(in.ID))
		if st := v.State(t); st != "running" {
			t.Fatalf("VM is %s after the reset, want running", st)
		}
		checkLogins(t, v, "root", pws[1], pws[cur])
		cur = 1
		onlyRootChanged(t, before, shadowLines(t, v, pws[cur]))
	})

	t.Run("a stopped VM is reset through the console's API path and ends running", func(t *testing.T) {
		s.powerAndWait(apiv1.ActionStop, in)
		s.instanceOf(v, "stopped", stopped)
		cs := s.console()
		var op apiv1.Operation
		body := map[string]any{"instanceIds": []string{in.ID}, "mode": apiv1.ModeOffline, "password": pws[2]}
		if status := cs.post("/console/api/v1/password-resets", body, &op); status != http.StatusAccepted {
			t.Fatalf("console reset: %d", status)
		}
		mustSucceed(t, s.wait(op.ID))
		if st := v.State(t); st != "running" {
			t.Fatalf("VM is %s after the reset, want running", st)
		}
		checkLogins(t, v, "root", pws[2], pws[cur])
		cur = 2
	})

	t.Run("a missing user fails with USER_NOT_FOUND and the VM is running again", func(t *testing.T) {
		s.instanceOf(v, "running", func(in apiv1.Instance) bool { return in.State == apiv1.StateRunning && !in.Busy })
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, User: "nosuchuser", ForceStop: true, Method: apiv1.MethodDisk}, pws[3])
		it := op.Items[0]
		if op.Status != apiv1.OperationFailed || it.ErrorCode != "USER_NOT_FOUND" {
			t.Fatalf("operation %s, item %+v; want failed with USER_NOT_FOUND", op.Status, it)
		}
		if st := v.State(t); st != "running" {
			t.Fatalf("the VM is %s, want running again as it was", st)
		}
		checkLogins(t, v, "root", pws[cur], "")
	})

	t.Run("a disk another process holds is refused before any power action, and nothing is touched", func(t *testing.T) {
		s.powerAndWait(apiv1.ActionStop, in)
		s.instanceOf(v, "stopped", func(in apiv1.Instance) bool { return in.State == apiv1.StateStopped && !in.Busy })
		sock := filepath.Join(t.TempDir(), "nbd.sock")
		disk := filepath.Join(v.Dir, "disk.qcow2")
		sum := func() string {
			out, err := exec.Command("sha256sum", disk).Output()
			if err != nil {
				t.Fatal(err)
			}
			return string(out)
		}
		nbd := exec.Command("qemu-nbd", "-f", "qcow2", "-k", sock, disk)
		if err := nbd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { nbd.Process.Kill(); nbd.Wait() }()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("qemu-nbd did not start")
			}
		}
		before := sum()
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, ForceStop: true}, pws[4])
		it := op.Items[0]
		if op.Status != apiv1.OperationFailed || it.ErrorCode != "DISK_IN_USE" || it.Step != apiv1.StepQueued {
			t.Fatalf("operation %s, item %+v; want failed with DISK_IN_USE in step queued (before any action)", op.Status, it)
		}
		if st := v.State(t); st != "shut off" && st != "shutoff" {
			t.Errorf("the VM is %s: the refused reset must not have started it", st)
		}
		if sum() != before {
			t.Errorf("the disk changed")
		}
		nbd.Process.Kill()
		nbd.Wait()
		s.powerAndWait(apiv1.ActionStart, in)
		checkLogins(t, v, "root", pws[cur], "")
	})

	t.Run("method guest on a VM without a channel fails with NO_GUEST_CHANNEL, and method disk with mode online is refused", func(t *testing.T) {
		s.instanceOf(v, "idle", func(in apiv1.Instance) bool { return !in.Busy })
		op := s.resetAndWait(apiv1.PasswordReset{InstanceIDs: []string{in.ID}, ForceStop: true, Method: apiv1.MethodGuest}, pws[5])
		if op.Status != apiv1.OperationFailed || op.Items[0].ErrorCode != "NO_GUEST_CHANNEL" {
			t.Fatalf("operation %s, item %+v; want failed with NO_GUEST_CHANNEL", op.Status, op.Items[0])
		}
		_, err := s.client.ResetPasswordSecret(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOnline, Method: apiv1.MethodDisk}, []byte(pws[5]))
		if err == nil || !strings.Contains(err.Error(), "INVALID_ARGUMENT") {
			t.Fatalf("online disk reset: %v, want INVALID_ARGUMENT", err)
		}
	})

	stopWatch()
	s.stop()
	s.assertNoSecret(pws...)
}

func TestAServerKilledDuringADiskEditFinishesTheResetAfterItsRestart(t *testing.T) {
	s := startServer(t)
	// No root named: the helper finds it by inspection.
	v := s.vm(vmtest.VMOptions{Name: "diskcrash", NoAgentChannel: true})
	v.Start(t)
	in := s.instanceOf(v, "running, with no guest channel", func(in apiv1.Instance) bool {
		return in.State == apiv1.StateRunning && agentless(in)
	})
	pw := newPassword()
	stopWatch := vmtest.WatchSecrets(t, []byte(pw))
	op, err := s.client.ResetPasswordSecret(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}, ForceStop: true}, []byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		cur, err := s.client.GetOperation(t.Context(), op.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Items[0].Step == apiv1.StepEditingDisk {
			break
		}
		if cur.Status != apiv1.OperationRunning || time.Now().After(deadline) {
			t.Fatalf("the operation reached %s (step %s) before the disk edit", cur.Status, cur.Items[0].Step)
		}
	}
	// In the middle of the edit: the appliance is booting or editing.
	time.Sleep(4 * time.Second)
	if !helperRunning() {
		t.Logf("the helper was no longer running when the server was killed")
	}
	s.kill()
	for deadline := time.Now().Add(30 * time.Second); helperRunning(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fleetpass-diskreset outlived its killed server")
		}
	}
	s.restart()
	mustSucceed(t, s.wait(op.ID))
	if st := v.State(t); st != "running" {
		t.Fatalf("the VM is %s after the resumed reset, want running", st)
	}
	checkLogins(t, v, "root", pw, "")
	lines := shadowLines(t, v, pw)
	roots := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "root:") {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("/etc/shadow has %d root lines:\n%s", roots, strings.Join(lines, "\n"))
	}
	stopWatch()
	s.stop()
	s.assertNoSecret(pw)
}

// helperRunning reports whether a fleetpass-diskreset process runs.
func helperRunning() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "fleetpass-diskr" {
			return true
		}
	}
	return false
}
