package realvm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/drivertest"
	"github.com/fleetpass/fleetpass/internal/driver/libvirt"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// libvirtHarness runs the driver conformance suite against the libvirt
// driver, each machine a real VM booted by the local libvirtd.
type libvirtHarness struct {
	lv  *vmtest.Libvirt
	img *vmtest.GuestImage
	d   *libvirt.Driver

	mu  sync.Mutex
	vms map[string]*vmtest.VM // by UUID
}

const conformanceHost = "local"

func (h *libvirtHarness) Power() driver.Power { return h.d }
func (h *libvirtHarness) Guest() driver.Guest { return h.d }

func (h *libvirtHarness) Config() drivertest.Config {
	uuid := make([]byte, 16)
	_, _ = rand.Read(uuid)
	return drivertest.Config{TransitionTimeout: 3 * time.Minute, PollInterval: 250 * time.Millisecond,
		CallTimeout: 90 * time.Second, User: "root", CanHangShutdown: true, CanKillAgent: true,
		UnknownMachine: driver.Ref{Host: conformanceHost, OSType: driver.OSLinux,
			Address: fmt.Sprintf("%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16])}}
}

func (h *libvirtHarness) NewMachine(t testing.TB, spec drivertest.MachineSpec) driver.Ref {
	t.Helper()
	for _, u := range spec.Users {
		if u != "root" && u != "ciuser" {
			t.Fatalf("the guest image has root and ciuser, not %q", u)
		}
	}
	v := h.lv.DefineVM(t, h.img, vmtest.VMOptions{Name: "conf"})
	h.mu.Lock()
	h.vms[v.UUID] = v
	h.mu.Unlock()
	// The guest image is Linux: its agent is sent hashes, as the engine's
	// would be.
	ref := driver.Ref{InstanceID: v.Name, Host: conformanceHost, Address: v.UUID, OSType: driver.OSLinux}
	if !spec.Running {
		return ref
	}
	v.Start(t)
	v.WaitAgent(t, 3*time.Minute)
	// The harness's own way in: a root password only it knows.
	pw := newPassword()
	v.SetPassword(t, "root", pw)
	if spec.HangShutdown {
		v.IgnoreShutdown(t, "root", pw)
	}
	if spec.DeadAgent {
		// inittab respawns qemu-ga: take its binary away first.
		v.WaitSSH(t, time.Minute)
		if _, err := v.SSH("root", pw, "mv /usr/sbin/qemu-ga /usr/sbin/qemu-ga.dead && busybox killall qemu-ga"); err != nil {
			t.Fatalf("kill the guest agent: %v", err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			err := h.d.Ping(context.Background(), ref)
			if errors.Is(err, driver.ErrGuestNotAlive) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the guest agent still answers: %v", err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return ref
}

func (h *libvirtHarness) CheckPassword(t testing.TB, ref driver.Ref, user string, password []byte) bool {
	t.Helper()
	h.mu.Lock()
	v := h.vms[ref.Address]
	h.mu.Unlock()
	if v == nil {
		t.Fatalf("no VM %s", ref.Address)
	}
	v.WaitSSH(t, 2*time.Minute)
	err := v.CanLogin(user, string(password))
	if err != nil && !errors.Is(err, vmtest.ErrAuthFailed) {
		t.Fatalf("%s: ssh: %v", v.Name, err)
	}
	return err == nil
}

// The libvirt driver must behave like every other power driver and guest
// channel, on real VMs.
func TestLibvirtDriverConformance(t *testing.T) {
	lv := vmtest.Libvirtd(t)
	img := vmtest.Image(t)
	d := libvirt.New(libvirt.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go d.Run(ctx)
	if err := d.SetHost(libvirt.Host{ID: conformanceHost, URI: "qemu:///system"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !d.HostStatus(conformanceHost).Connected {
		if time.Now().After(deadline) {
			t.Fatalf("libvirt host not connected: %+v", d.HostStatus(conformanceHost))
		}
		time.Sleep(100 * time.Millisecond)
	}
	drivertest.Run(t, &libvirtHarness{lv: lv, img: img, d: d, vms: map[string]*vmtest.VM{}})
}
