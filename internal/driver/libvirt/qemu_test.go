package libvirt

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// TestQEMU runs the driver against real QEMU domains of the local
// qemu:///system that boot nothing: SeaBIOS finds no disk and waits, so
// the domain runs (in well under a second, even without KVM) but no guest
// agent ever answers and ACPI shutdowns are ignored. That is enough to
// check what libvirt's QEMU driver answers for a domain without a channel,
// with a channel but no agent, and when stopped. Booting a real guest is
// the VM harness's business.
func TestQEMU(t *testing.T) {
	needLibvirtd(t)
	const emulator = "/usr/bin/qemu-system-x86_64"
	if _, err := os.Stat(emulator); err != nil {
		t.Fatalf("needs QEMU (apt-get install qemu-system-x86): %v", err)
	}
	d := startDriver(t, Config{AgentTimeout: 2 * time.Second})
	if err := d.SetHost(Host{ID: "local", URI: "qemu:///system"}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "local")

	define := func(channel bool) driver.Ref {
		uuid := randomUUID()
		dev := ""
		if channel {
			dev = `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`
		}
		defineDomain(t, d, "local", fmt.Sprintf(`<domain type='qemu'>
  <name>fleetpass-lvtest-%s</name>
  <uuid>%s</uuid>
  <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://microsoft.com/win/2k22"/></libosinfo:libosinfo></metadata>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>%s</emulator>
    %s
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>`, uuid[:8], uuid, emulator, dev))
		return driver.Ref{InstanceID: "ins-" + uuid[:8], Host: "local", Address: uuid, OSType: "windows"}
	}
	withChannel, without := define(true), define(false)
	pw := []byte("pQemu1234TEST9x!")
	noLeak := func(what string, err error) {
		t.Helper()
		if strings.Contains(fmt.Sprintf("%v %+v", err, err), string(pw)) {
			t.Errorf("%s: error shows the password", what)
		}
	}

	doms, err := d.Domains(call(t), "local")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Domain{}
	for _, dm := range doms {
		got[dm.UUID] = dm
	}
	for ref, channel := range map[driver.Ref]bool{withChannel: true, without: false} {
		want := Domain{UUID: ref.Address, Name: "fleetpass-lvtest-" + ref.Address[:8], State: driver.PowerStopped, OSType: "windows", AgentChannel: channel}
		if got[ref.Address] != want {
			t.Errorf("Domains: %+v, want %+v", got[ref.Address], want)
		}
	}

	if err := d.Preflight(call(t), withChannel); err != nil {
		t.Errorf("Preflight with a channel: %v", err)
	}
	wantErrIs(t, "Preflight without a channel", d.Preflight(call(t), without), driver.ErrNoGuestChannel)

	// Stopped: not alive, whether there is a channel or not (libvirt checks
	// that the domain runs first).
	wantErrIs(t, "Ping of a stopped domain", d.Ping(call(t), withChannel), driver.ErrGuestNotAlive)
	err = d.SetPassword(call(t), withChannel, "root", pw)
	wantErrIs(t, "SetPassword on a stopped domain", err, driver.ErrGuestNotAlive)
	noLeak("SetPassword on a stopped domain", err)

	for _, ref := range []driver.Ref{withChannel, without} {
		for range 2 {
			if err := d.Start(call(t), ref); err != nil {
				t.Fatalf("Start: %v", err)
			}
		}
		wantState(t, d, ref, driver.PowerRunning)
	}
	waitChange(t, d, 10*time.Second, "for a started domain", func(c Change) bool {
		return c.HostID == "local" && (c.UUID == withChannel.Address || c.UUID == without.Address)
	})

	// Running, but nobody answers on the channel.
	err = d.Ping(call(t), withChannel)
	wantErrIs(t, "Ping without an agent", err, driver.ErrGuestNotAlive)
	if errors.Is(err, driver.ErrNoGuestChannel) || driver.IsTransient(err) {
		t.Errorf("Ping without an agent: %v, want only ErrGuestNotAlive", err)
	}
	err = d.SetPassword(call(t), withChannel, "root", pw)
	wantErrIs(t, "SetPassword without an agent", err, driver.ErrGuestNotAlive)
	noLeak("SetPassword without an agent", err)

	// Running, without a channel at all.
	wantErrIs(t, "Ping without a channel", d.Ping(call(t), without), driver.ErrNoGuestChannel)
	err = d.SetPassword(call(t), without, "root", pw)
	wantErrIs(t, "SetPassword without a channel", err, driver.ErrNoGuestChannel)
	noLeak("SetPassword without a channel", err)

	// No agent answers, so Shutdown presses the ACPI button, which SeaBIOS
	// ignores: the domain keeps running until Stop.
	if err := d.Shutdown(call(t), withChannel); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	time.Sleep(time.Second)
	wantState(t, d, withChannel, driver.PowerRunning)
	for _, ref := range []driver.Ref{withChannel, without} {
		for range 2 {
			if err := d.Stop(call(t), ref); err != nil {
				t.Fatalf("Stop: %v", err)
			}
		}
		wantState(t, d, ref, driver.PowerStopped)
	}
}
