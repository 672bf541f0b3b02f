package realvm

import (
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// The host's domains are instances that follow the domains: started and
// stopped outside fleetpass, through a libvirtd restart (UNKNOWN while the
// connection is down), and undefined (MISSING, with the instance kept).
func TestInventoryFollowsTheHostsDomains(t *testing.T) {
	s := startServer(t)
	v := s.vm(vmtest.VMOptions{Name: "inv"})
	in := s.instanceOf(v, "stopped", stopped)
	if in.Name != v.Name || in.Power.Driver != "libvirt" || in.Power.Address != v.UUID || in.Tenant != tenant {
		t.Fatalf("instance made by the inventory: %+v", in)
	}

	// Started behind fleetpass's back: the lifecycle event tells.
	v.Start(t)
	s.instanceOf(v, "running", func(in apiv1.Instance) bool { return in.State == apiv1.StateRunning })

	// libvirtd goes away and comes back.
	sawUnknown := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			got, err := s.client.GetInstance(t.Context(), in.ID)
			if err == nil && got.State == apiv1.StateUnknown {
				sawUnknown <- true
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		sawUnknown <- false
	}()
	s.lv.Restart(t)
	if !<-sawUnknown {
		t.Errorf("the instance never showed UNKNOWN while libvirtd was down")
	}
	s.instanceOf(v, "running again after the reconnect", func(in apiv1.Instance) bool { return in.State == apiv1.StateRunning })
	// The owner records the host's status on its own beside the
	// instances' reconcile: both are seen within a few seconds, in either
	// order.
	var hosts []apiv1.Host
	ok := testutil.Eventually(10*time.Second, func() bool {
		list, err := s.client.ListHosts(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		hosts = list.Hosts
		return len(hosts) == 1 && hosts[0].Connected && hosts[0].URI == "qemu:///system"
	})
	if !ok {
		t.Fatalf("hosts 10 s after the reconnect: %+v", hosts)
	}

	// Undefined: marked, not deleted.
	v.Destroy(t)
	if err := s.lv.Connect(t).DomainUndefineFlags(v.Domain, 0); err != nil {
		t.Fatal(err)
	}
	s.instanceOf(v, "MISSING", func(in apiv1.Instance) bool { return in.State == apiv1.StateMissing })
	if _, err := s.client.GetInstance(t.Context(), in.ID); err != nil {
		t.Fatalf("the instance of an undefined domain must stay: %v", err)
	}
}
