package realvm

import (
	"errors"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// BenchmarkOfflineResetOfARealVM measures an offline reset of a running VM
// through fleetpass against its floor: the same steps done by hand with
// libvirt as fast as the VM allows (graceful shutdown through the guest
// agent, start, polling the guest agent every 50 ms, set the password).
// Each iteration does both, alternating, on the same VM; the metrics are
// medians. fleetpass's overhead is its time minus the floor's, as a share
// of the floor. Run it with
//
//	go test -run '^$' -bench OfflineResetOfARealVM -benchtime 5x -timeout 30m ./internal/realvm/
func BenchmarkOfflineResetOfARealVM(b *testing.B) {
	s := startServer(b)
	v := s.vm(vmtest.VMOptions{Name: "bench"})
	v.Start(b)
	v.WaitAgent(b, 3*time.Minute)
	pw := newPassword()
	v.SetPassword(b, "root", pw)
	in := s.instanceOf(v, "running with a live guest agent", running)
	l := s.lv.Connect(b)

	var floors, fps []time.Duration
	steps := map[string][]time.Duration{}
	var fpSteps = map[string][]time.Duration{}
	b.ResetTimer()
	for range b.N {
		// The floor, by hand.
		next := newPassword()
		f := floorReset(b, l, v, next)
		for k, d := range f {
			steps[k] = append(steps[k], d)
		}
		floors = append(floors, f["total"])
		v.WaitSSH(b, 2*time.Minute)
		t0 := time.Now()
		if err := v.CanLogin("root", next); err != nil {
			b.Fatalf("floor reset: %v", err)
		}
		steps["verify"] = append(steps["verify"], time.Since(t0))
		pw = next
		s.instanceOf(v, "running with a live guest agent", running)

		// fleetpass.
		next = newPassword()
		start := time.Now()
		op, err := s.client.ResetPasswordSecret(b.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID},
			Mode: apiv1.ModeOffline, ForceStop: true}, []byte(next))
		if err != nil {
			b.Fatal(err)
		}
		// Follow the item's steps as a client would see them.
		seen := map[string]time.Duration{}
		for {
			cur, err := s.client.GetOperation(b.Context(), op.ID)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := seen[cur.Items[0].Step]; !ok {
				seen[cur.Items[0].Step] = time.Since(start)
			}
			if cur.Status != apiv1.OperationRunning {
				mustSucceed(b, cur)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		total := time.Since(start)
		fps = append(fps, total)
		for _, k := range []string{apiv1.StepShuttingDown, apiv1.StepStarting, apiv1.StepWaitingGuest, apiv1.StepApplying} {
			if d, ok := seen[k]; ok {
				fpSteps[k] = append(fpSteps[k], d)
			}
		}
		checkLogins(b, v, "root", next, pw)
		pw = next
		s.instanceOf(v, "running with a live guest agent", running)
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		c := append([]time.Duration(nil), ds...)
		sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
		return c[len(c)/2]
	}
	floor, fp := med(floors), med(fps)
	for _, k := range []string{"shutdown", "start", "agent", "set", "verify"} {
		b.ReportMetric(med(steps[k]).Seconds(), "floor-"+k+"-s")
	}
	b.ReportMetric(floor.Seconds(), "floor-total-s")
	b.ReportMetric(fp.Seconds(), "fleetpass-total-s")
	b.ReportMetric(100*(fp-floor).Seconds()/floor.Seconds(), "overhead-%")
	b.Logf("floor %s (shutdown %s, start %s, agent %s, set %s; verify %s); fleetpass %s (entered starting at %s, waiting_for_guest at %s, applying at %s); overhead %s = %.1f%%; runs: floor %v fleetpass %v",
		floor.Round(time.Millisecond), med(steps["shutdown"]).Round(time.Millisecond), med(steps["start"]).Round(time.Millisecond),
		med(steps["agent"]).Round(time.Millisecond), med(steps["set"]).Round(time.Millisecond), med(steps["verify"]).Round(time.Millisecond),
		fp.Round(time.Millisecond), med(fpSteps[apiv1.StepStarting]).Round(time.Millisecond),
		med(fpSteps[apiv1.StepWaitingGuest]).Round(time.Millisecond), med(fpSteps[apiv1.StepApplying]).Round(time.Millisecond),
		(fp - floor).Round(time.Millisecond), 100*(fp-floor).Seconds()/floor.Seconds(), floors, fps)
	if os.Getenv("FLEETPASS_BENCH_LOG") != "" {
		b.Logf("fleetpass log:\n%s", s.logs)
	}
	s.assertNoSecret(pw)
}

// floorReset does an offline reset by hand with libvirt, each wait polled
// every 50 ms, and returns the time of each step and the total.
func floorReset(b *testing.B, l *libvirt.Libvirt, v *vmtest.VM, password string) map[string]time.Duration {
	b.Helper()
	out := map[string]time.Duration{}
	start := time.Now()
	t := start
	if err := l.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownGuestAgent); err != nil {
		b.Fatalf("shutdown: %v", err)
	}
	for {
		st, _, err := l.DomainGetState(v.Domain, 0)
		if err != nil {
			b.Fatal(err)
		}
		if libvirt.DomainState(st) == libvirt.DomainShutoff {
			break
		}
		if time.Since(t) > 2*time.Minute {
			b.Fatal("the VM did not shut down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out["shutdown"] = time.Since(t)
	t = time.Now()
	if err := l.DomainCreate(v.Domain); err != nil {
		b.Fatalf("start: %v", err)
	}
	out["start"] = time.Since(t)
	t = time.Now()
	for {
		_, err := l.QEMUDomainAgentCommand(v.Domain, `{"execute":"guest-ping"}`, 1, 0)
		if err == nil {
			break
		}
		var le libvirt.Error
		if !errors.As(err, &le) && time.Since(t) > 10*time.Second {
			b.Fatalf("guest-ping: %v", err)
		}
		if time.Since(t) > 3*time.Minute {
			b.Fatal("the guest agent did not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out["agent"] = time.Since(t)
	t = time.Now()
	if err := l.DomainSetUserPassword(v.Domain, libvirt.OptString{"root"}, libvirt.OptString{password}, 0); err != nil {
		b.Fatalf("set-user-password: %v", err)
	}
	out["set"] = time.Since(t)
	out["total"] = time.Since(start)
	return out
}
