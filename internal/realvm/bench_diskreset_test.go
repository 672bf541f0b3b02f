//go:build cgo && linux

package realvm

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/guestfs/guestfstest"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// BenchmarkAgentlessOfflineResetOfARealVM measures an agentless (disk
// edit) offline reset of a running VM through fleetpass against its floor:
// the same steps by hand, as fast as the VM and libguestfs allow (ACPI
// shutdown polled every 50 ms; the same libguestfs calls in this process,
// with no helper, no server, no JSON; virDomainCreate; SSH logins with the
// new password every 200 ms until one works). Each iteration does both,
// alternating, on the same VM; the metrics are medians. Run it with
//
//	go test -run '^$' -bench AgentlessOfflineResetOfARealVM -benchtime 3x -timeout 30m ./internal/realvm/
func BenchmarkAgentlessOfflineResetOfARealVM(b *testing.B) {
	s := startServer(b)
	for _, kv := range vmtest.Guestfs(b) {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	v := s.vm(vmtest.VMOptions{Name: "benchdisk", NoAgentChannel: true, Root: "/dev/sda"})
	v.Start(b)
	in := s.instanceOf(v, "running, with no guest channel", func(in apiv1.Instance) bool {
		return in.State == apiv1.StateRunning && in.NoGuestChannel
	})
	l := s.lv.Connect(b)
	disk := filepath.Join(v.Dir, "disk.qcow2")
	pw := ""

	floor := map[string][]time.Duration{}
	fp := map[string][]time.Duration{}
	b.ResetTimer()
	// ACPI's power button is heard once the guest's acpid runs, which is
	// before its sshd.
	v.WaitSSH(b, 3*time.Minute)
	for range b.N {
		// The floor, by hand.
		next := newPassword()
		start := time.Now()
		t := start
		if err := l.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownAcpiPowerBtn); err != nil {
			b.Fatalf("shutdown: %v", err)
		}
		pressed := time.Now()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			st, _, err := l.DomainGetState(v.Domain, 0)
			if err != nil {
				b.Fatal(err)
			}
			if libvirt.DomainState(st) == libvirt.DomainShutoff {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the VM did not shut down")
			}
			if time.Since(pressed) > 10*time.Second {
				// A press the guest missed (fleetpass asks again too).
				l.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownAcpiPowerBtn)
				pressed = time.Now()
			}
		}
		floor["shutdown"] = append(floor["shutdown"], time.Since(t))
		t = time.Now()
		guestfstest.FloorEdit(b, disk, "root", next)
		floor["edit"] = append(floor["edit"], time.Since(t))
		t = time.Now()
		if err := l.DomainCreate(v.Domain); err != nil {
			b.Fatalf("start: %v", err)
		}
		floor["start"] = append(floor["start"], time.Since(t))
		t = time.Now()
		waitLogin(b, v, next)
		floor["verify"] = append(floor["verify"], time.Since(t))
		floor["total"] = append(floor["total"], time.Since(start))
		if pw != "" {
			checkLogins(b, v, "root", next, pw)
		}
		pw = next
		s.instanceOf(v, "running", func(in apiv1.Instance) bool { return in.State == apiv1.StateRunning && !in.Busy })

		// fleetpass.
		next = newPassword()
		start = time.Now()
		op, err := s.client.ResetPasswordSecret(b.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID},
			ForceStop: true}, []byte(next))
		if err != nil {
			b.Fatal(err)
		}
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
				if cur.Items[0].Method != apiv1.MethodDisk {
					b.Fatalf("method %q", cur.Items[0].Method)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		done := time.Since(start)
		t = time.Now()
		waitLogin(b, v, next)
		fp["verify"] = append(fp["verify"], time.Since(t))
		fp["total"] = append(fp["total"], time.Since(start))
		fp["shutdown"] = append(fp["shutdown"], seen[apiv1.StepEditingDisk]-seen[apiv1.StepShuttingDown])
		fp["edit"] = append(fp["edit"], seen[apiv1.StepStarting]-seen[apiv1.StepEditingDisk])
		fp["start"] = append(fp["start"], done-seen[apiv1.StepStarting])
		checkLogins(b, v, "root", next, pw)
		pw = next
		s.instanceOf(v, "running", func(in apiv1.Instance) bool { return in.State == apiv1.StateRunning && !in.Busy })
		// Every pair, for the spread (b.Log keeps only the first run's).
		last := func(m map[string][]time.Duration, k string) string {
			return m[k][len(m[k])-1].Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(os.Stderr, "agentless pair: floor shutdown %s edit %s start %s verify %s total %s | fleetpass shutdown %s edit %s start %s verify %s total %s\n",
			last(floor, "shutdown"), last(floor, "edit"), last(floor, "start"), last(floor, "verify"), last(floor, "total"),
			last(fp, "shutdown"), last(fp, "edit"), last(fp, "start"), last(fp, "verify"), last(fp, "total"))
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
	for _, k := range []string{"shutdown", "edit", "start", "verify", "total"} {
		b.ReportMetric(med(floor[k]).Seconds(), "floor-"+k+"-s")
		b.ReportMetric(med(fp[k]).Seconds(), "fleetpass-"+k+"-s")
	}
	f, p := med(floor["total"]), med(fp["total"])
	b.ReportMetric(100*(p-f).Seconds()/f.Seconds(), "overhead-%")
	fe, pe := med(floor["edit"]), med(fp["edit"])
	b.ReportMetric(100*(pe-fe).Seconds()/fe.Seconds(), "edit-overhead-%")
	b.Logf("floor: %v; fleetpass: %v; total overhead %s = %.1f%%, disk edit %s vs %s (%.1f%%)",
		floor, fp, (p - f).Round(time.Millisecond), 100*(p-f).Seconds()/f.Seconds(),
		pe.Round(time.Millisecond), fe.Round(time.Millisecond), 100*(pe-fe).Seconds()/fe.Seconds())
	if os.Getenv("FLEETPASS_BENCH_LOG") != "" {
		b.Logf("fleetpass log:\n%s", s.logs)
	}
	s.assertNoSecret(pw)
}

// waitLogin polls SSH logins with password until one works.
func waitLogin(b *testing.B, v *vmtest.VM, password string) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		err := v.CanLogin("root", password)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no SSH login with the new password: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
