package vmtest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// Generous: three VMs boot at once under TCG on a shared 2-core machine.
const (
	bootTimeout = 120 * time.Second
	haltTimeout = 60 * time.Second
)

// TestLifecycle proves what the reset tests rely on: the agent sets a
// password through libvirt, SSH tells a good password from a refused one,
// the boot id tells boots apart, IgnoreShutdown holds off both shutdown
// requests, and a password set by the agent survives a clean restart.
func TestLifecycle(t *testing.T) {
	l := vmtest.Libvirtd(t)
	img := vmtest.Image(t)
	t.Parallel()
	v := l.DefineVM(t, img, vmtest.VMOptions{})
	c := l.Connect(t)
	if got := v.State(t); got != "shutoff" {
		t.Fatalf("a defined VM is %q, want shutoff", got)
	}

	v.Start(t)
	v.WaitAgent(t, bootTimeout)
	v.SetPassword(t, "root", "first-Passw0rd")
	v.WaitSSH(t, bootTimeout)
	if err := v.CanLogin("root", "first-Passw0rd"); err != nil {
		t.Fatalf("login with the password just set: %v", err)
	}
	v.SetPassword(t, "root", "second-Passw0rd")
	for _, pw := range []string{"first-Passw0rd", "wrong"} {
		if err := v.CanLogin("root", pw); !errors.Is(err, vmtest.ErrAuthFailed) {
			t.Fatalf("login with %q: %v, want ErrAuthFailed", pw, err)
		}
	}
	const pw = "second-Passw0rd"
	boot1 := v.BootID(t, "root", pw)
	if again := v.BootID(t, "root", pw); again != boot1 || len(boot1) != 36 {
		t.Fatalf("boot ids %q then %q: want one stable uuid", boot1, again)
	}
	if !strings.Contains(v.ConsoleLog(), "boot_id="+boot1) {
		t.Errorf("the console does not show boot_id=%s at VM-READY", boot1)
	}

	// Neither the power button nor the command qemu-ga's guest-shutdown
	// runs stops a guest that ignores shutdown requests. (The command is
	// run over SSH here: libvirt's agent-mode shutdown of such a guest
	// blocks for 60 s waiting for the guest to stop, then fails with
	// "Guest agent is not responding".)
	v.IgnoreShutdown(t, "root", pw)
	if err := c.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownAcpiPowerBtn); err != nil {
		t.Fatalf("ACPI shutdown: %v", err)
	}
	if out, err := v.SSH("root", pw, "/sbin/shutdown -h -P +0 hypervisor initiated shutdown"); err != nil {
		t.Fatalf("/sbin/shutdown in the guest: %v: %s", err, out)
	}
	time.Sleep(5 * time.Second)
	if got := v.State(t); got != "running" {
		t.Fatalf("a guest ignoring shutdown is %q 5 s after the requests, want running", got)
	}
	// acpid sees the button twice (input layer and netlink).
	for _, want := range []string{"VM-IGNORED-SHUTDOWN acpi", "VM-IGNORED-SHUTDOWN shutdown -h -P +0"} {
		if !strings.Contains(v.ConsoleLog(), want) {
			t.Errorf("the console lacks %q", want)
		}
	}

	// A destroy and a boot clear the switch (/run is a tmpfs): the power
	// button works again, and the guest syncs before powering off.
	v.Destroy(t)
	v.WaitState(t, "shutoff", haltTimeout)
	v.Start(t)
	v.WaitAgent(t, bootTimeout)
	v.SetPassword(t, "root", "third-Passw0rd")
	start := time.Now()
	if err := c.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownAcpiPowerBtn); err != nil {
		t.Fatalf("ACPI shutdown: %v", err)
	}
	v.WaitState(t, "shutoff", haltTimeout)
	t.Logf("ACPI shutdown took %v", time.Since(start).Round(time.Millisecond))

	v.Start(t)
	v.WaitAgent(t, bootTimeout)
	v.WaitSSH(t, bootTimeout)
	if err := v.CanLogin("root", "third-Passw0rd"); err != nil {
		t.Fatalf("the password set before a clean shutdown does not work after it: %v", err)
	}
	if boot3 := v.BootID(t, "root", "third-Passw0rd"); boot3 == boot1 {
		t.Errorf("boot id %s did not change across boots", boot3)
	}
	start = time.Now()
	if err := c.DomainShutdownFlags(v.Domain, libvirt.DomainShutdownGuestAgent); err != nil {
		t.Fatalf("agent shutdown: %v", err)
	}
	v.WaitState(t, "shutoff", haltTimeout)
	t.Logf("agent shutdown took %v", time.Since(start).Round(time.Millisecond))
}

// TestNoAgentChannel: a VM without the agent channel boots and serves SSH,
// and libvirt refuses agent commands at once rather than timing out.
func TestNoAgentChannel(t *testing.T) {
	l := vmtest.Libvirtd(t)
	img := vmtest.Image(t)
	t.Parallel()
	v := l.DefineVM(t, img, vmtest.VMOptions{NoAgentChannel: true})
	v.Start(t)
	v.WaitSSH(t, bootTimeout)
	start := time.Now()
	err := v.AgentPing()
	if err == nil || !strings.Contains(err.Error(), "guest agent is not configured") {
		t.Fatalf("guest-ping without an agent channel: %v, want libvirt's \"guest agent is not configured\"", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("guest-ping took %v to fail, want at once", d)
	}
	// Passwords start locked: nobody gets in.
	if err := v.CanLogin("root", "anything"); !errors.Is(err, vmtest.ErrAuthFailed) {
		t.Errorf("login to a fresh guest: %v, want ErrAuthFailed", err)
	}
	v.Destroy(t)
}

// TestAgentSeed: the seed disk installs fleetpass-agent, which tries to
// enrol with the server given in the seed, reached on the host's loopback
// through 10.0.2.2, with the pinned certificate and the token from the
// seed's file. The server here only records the attempts.
func TestAgentSeed(t *testing.T) {
	l := vmtest.Libvirtd(t)
	img := vmtest.Image(t)
	t.Parallel()
	bin := vmtest.BuildAgent(t)

	var (
		mu    sync.Mutex
		reqs  []agentproto.EnrollRequest
		conns atomic.Int32
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.EnrollRequest
		if r.URL.Path == agentproto.PathEnroll && json.NewDecoder(r.Body).Decode(&req) == nil {
			mu.Lock()
			reqs = append(reqs, req)
			mu.Unlock()
		}
		http.Error(w, "vmtest: not a fleetpass server", http.StatusServiceUnavailable)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fp := sha256.Sum256(srv.Certificate().Raw)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	const token = "vmtest-token-6f1c2a"

	v := l.DefineVM(t, img, vmtest.VMOptions{Agent: &vmtest.AgentSeed{
		Binary:      bin,
		ServerURL:   vmtest.GuestURL(port),
		Fingerprint: hex.EncodeToString(fp[:]),
		Token:       token,
	}})
	v.Start(t)
	v.WaitAgent(t, bootTimeout)
	v.SetPassword(t, "root", "seed-Passw0rd")
	v.WaitSSH(t, bootTimeout)

	// The wrapper retries a failed enrolment every 5 s or so; two attempts
	// prove the guest opens fresh connections to the host, not one stream.
	deadline := time.Now().Add(bootTimeout)
	for conns.Load() < 2 {
		if time.Now().After(deadline) {
			v.Logs(t)
			t.Fatalf("%d connections from the guest's agent to the host's server, want 2", conns.Load())
		}
		time.Sleep(250 * time.Millisecond)
	}
	mu.Lock()
	if len(reqs) == 0 || reqs[0].Token != token || reqs[0].Hostname != v.Name {
		t.Errorf("enrolment requests %+v: want the seed's token and hostname %s", reqs, v.Name)
	}
	mu.Unlock()

	out, err := v.SSH("root", "seed-Passw0rd",
		"/usr/local/sbin/fleetpass-agent version && cat /var/log/fleetpass-agent.log && "+
			"mount | grep ' /seed ' && "+
			"for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done")
	if err != nil {
		t.Fatalf("look at the agent in the guest: %v\n%s", err, out)
	}
	for _, want := range []string{"fleetpass-agent", "FLEETPASS-AGENT enroll " + vmtest.GuestURL(port), "(ro"} {
		if !strings.Contains(out, want) {
			t.Errorf("the guest's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, token) {
		t.Errorf("the token appears in the guest's log or in some process's arguments:\n%s", out)
	}
	v.Destroy(t)
}

// TestRestart: a running domain survives a libvirtd restart, and the
// harness's calls work again afterwards. Not parallel: it restarts the
// daemon every test of this binary talks to (tests in other packages that
// share it must tolerate a restart anyway, as a production libvirtd may
// restart under fleetpass at any time).
func TestRestart(t *testing.T) {
	l := vmtest.Libvirtd(t)
	v := l.DefineVM(t, vmtest.Image(t), vmtest.VMOptions{})
	v.Start(t)
	v.WaitAgent(t, bootTimeout)
	l.Restart(t)
	if got := v.State(t); got != "running" {
		t.Fatalf("after a libvirtd restart the VM is %q, want running", got)
	}
	v.WaitAgent(t, 30*time.Second)
	v.Destroy(t)
}
