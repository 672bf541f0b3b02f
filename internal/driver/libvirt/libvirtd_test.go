package libvirt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// The tests in this file and in ssh_test.go run against a real libvirtd
// (with libvirt's mock test:///default driver, so no VM is needed). They
// are skipped under -short; otherwise they need root and libvirtd and fail
// rather than skip without them, so that a CI run cannot pass by skipping.

const (
	libvirtdBin  = "/usr/sbin/libvirtd"
	libvirtdSock = "/var/run/libvirt/libvirt-sock"
	// testDomainUUID is the UUID of the "test" domain that
	// test:///default always has.
	testDomainUUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
)

// needLibvirtd makes sure the shared libvirtd runs, through the VM test
// harness: it skips under -short, fails without root or the packages,
// starts the daemons when they are not running, and takes turns with the
// other test binaries' VM tests, some of which restart libvirtd.
func needLibvirtd(t *testing.T) {
	t.Helper()
	vmtest.Libvirtd(t)
}

// startDriver runs a Driver with quick reconnects until the test ends.
func startDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
	}
	d := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// On-demand hosts connect only once Run runs: wait for it, as a
	// server's driver has long been running when it is first used.
	testutil.WaitFor(t, 10*time.Second, "the driver to run", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.runCtx != nil
	})
	return d
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// waitChange reads changes until one satisfies ok, failing t after
// timeout.
func waitChange(t *testing.T, d *Driver, timeout time.Duration, what string, ok func(Change) bool) Change {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case c := <-d.Changes():
			if ok(c) {
				return c
			}
		case <-timer.C:
			t.Fatalf("no change %s within %v", what, timeout)
		}
	}
}

// waitConnected waits for a host's resync after a connect.
func waitConnected(t *testing.T, d *Driver, hostID string) {
	t.Helper()
	waitChange(t, d, 30*time.Second, "connected "+hostID, func(c Change) bool {
		return c.HostID == hostID && c.UUID == "" && c.Connected
	})
	if st := d.HostStatus(hostID); !st.Connected || st.LibvirtVersion == "" || st.Error != "" {
		t.Fatalf("HostStatus(%s) = %+v after the connect, want connected with a version", hostID, st)
	}
}

// call returns a context for one driver call.
func call(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// randomUUID returns a random UUID in canonical form.
func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// defineTestDomain defines a stopped domain in the test driver, on the
// driver's own connection to the host (the test driver's state belongs to
// the connections that share it, so no other connection would do).
func defineTestDomain(t *testing.T, d *Driver, hostID string, agentChannel bool) driver.Ref {
	t.Helper()
	uuid := randomUUID()
	channel := ""
	if agentChannel {
		channel = `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>`
	}
	x := `<domain type='test'>
  <name>fleetpass-` + uuid[:8] + `</name>
  <uuid>` + uuid + `</uuid>
  <metadata><fleetpass:instance xmlns:fleetpass="https://fleetpass.dev/xmlns/libvirt/1"><os>linux</os></fleetpass:instance></metadata>
  <memory>65536</memory>
  <os><type>hvm</type></os>
  <devices>` + channel + `</devices>
</domain>`
	defineDomain(t, d, hostID, x)
	return driver.Ref{InstanceID: "ins-" + uuid[:8], Host: hostID, Address: uuid}
}

// defineDomain defines a domain on the driver's connection to a host, and
// removes it when the test ends.
func defineDomain(t *testing.T, d *Driver, hostID, x string) {
	t.Helper()
	_, l, err := d.host(context.Background(), hostID)
	if err != nil {
		t.Fatal(err)
	}
	dom, err := l.DomainDefineXML(x)
	if err != nil {
		t.Fatalf("define a domain: %v", err)
	}
	t.Cleanup(func() {
		_ = l.DomainDestroy(dom)
		_ = l.DomainUndefine(dom)
	})
}

func wantState(t *testing.T, d *Driver, ref driver.Ref, want driver.PowerState) {
	t.Helper()
	got, err := d.State(call(t), ref)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if got != want {
		t.Fatalf("State = %s, want %s", got, want)
	}
}

func wantErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %q", what, err, target)
	}
}

func TestTestDriver(t *testing.T) {
	needLibvirtd(t)
	d := startDriver(t, Config{})
	if err := d.SetHost(Host{ID: "h1", URI: "test:///default"}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "h1")

	t.Run("Domains", func(t *testing.T) {
		ref := defineTestDomain(t, d, "h1", true)
		doms, err := d.Domains(call(t), "h1")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]Domain{}
		for _, dm := range doms {
			got[dm.UUID] = dm
		}
		if want := (Domain{UUID: testDomainUUID, Name: "test", State: driver.PowerRunning}); got[testDomainUUID] != want {
			t.Errorf("Domains: test domain %+v, want %+v (all: %+v)", got[testDomainUUID], want, doms)
		}
		want := Domain{UUID: ref.Address, Name: "fleetpass-" + ref.Address[:8], State: driver.PowerStopped, OSType: "linux", AgentChannel: true}
		if got[ref.Address] != want {
			t.Errorf("Domains: defined domain %+v, want %+v", got[ref.Address], want)
		}
		if _, err := d.Domains(call(t), "nope"); !errors.Is(err, driver.ErrMachineNotFound) {
			t.Errorf("Domains of an unknown host: %v", err)
		}
	})

	t.Run("Power", func(t *testing.T) {
		ref := defineTestDomain(t, d, "h1", false)
		wantState(t, d, ref, driver.PowerStopped)
		if err := d.Shutdown(call(t), ref); err != nil {
			t.Fatalf("Shutdown of a stopped domain: %v", err)
		}
		if err := d.Stop(call(t), ref); err != nil {
			t.Fatalf("Stop of a stopped domain: %v", err)
		}
		for range 2 {
			if err := d.Start(call(t), ref); err != nil {
				t.Fatalf("Start: %v", err)
			}
			wantState(t, d, ref, driver.PowerRunning)
		}
		// The test driver refuses the ACPI flag: this is the fallback to
		// flags 0.
		for range 2 {
			if err := d.Shutdown(call(t), ref); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			wantState(t, d, ref, driver.PowerStopped)
		}
		if err := d.Start(call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		for range 2 {
			if err := d.Stop(call(t), ref); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			wantState(t, d, ref, driver.PowerStopped)
		}
	})

	t.Run("Changes", func(t *testing.T) {
		ref := defineTestDomain(t, d, "h1", false)
		if err := d.Start(call(t), ref); err != nil {
			t.Fatalf("Start: %v", err)
		}
		waitChange(t, d, 10*time.Second, "for the started domain", func(c Change) bool {
			return c.HostID == "h1" && c.UUID == ref.Address && c.Connected
		})
		if err := d.Stop(call(t), ref); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		waitChange(t, d, 10*time.Second, "for the stopped domain", func(c Change) bool {
			return c.HostID == "h1" && c.UUID == ref.Address
		})
	})

	t.Run("Guest", func(t *testing.T) {
		// The test driver has no guest agent passthrough, which reads as
		// no channel; it accepts set-user-password and does nothing.
		ref := driver.Ref{Host: "h1", Address: testDomainUUID}
		wantErrIs(t, "Ping", d.Ping(call(t), ref), driver.ErrNoGuestChannel)
		wantErrIs(t, "Preflight without a channel", d.Preflight(call(t), ref), driver.ErrNoGuestChannel)
		if err := d.SetPassword(call(t), ref, "root", []byte("N3w-Passw0rd!")); err != nil {
			t.Errorf("SetPassword: %v", err)
		}
		// A Linux guest's hash goes with VIR_DOMAIN_PASSWORD_ENCRYPTED.
		linux := ref
		linux.OSType = driver.OSLinux
		if err := d.SetPassword(call(t), linux, "root", []byte("N3w-Passw0rd!")); err != nil {
			t.Errorf("SetPassword of a Linux guest: %v", err)
		}
		withChannel := defineTestDomain(t, d, "h1", true)
		if err := d.Preflight(call(t), withChannel); err != nil {
			t.Errorf("Preflight with a channel: %v", err)
		}
		// An empty host means the only host.
		if _, err := d.State(call(t), driver.Ref{Address: testDomainUUID}); err != nil {
			t.Errorf("State with an empty host: %v", err)
		}
	})

	t.Run("UnknownMachine", func(t *testing.T) {
		pw := []byte("N3w-Passw0rd!")
		for _, ref := range []driver.Ref{
			{Host: "h1", Address: randomUUID()},
			{Host: "h1", Address: "drivertest-no-such-machine"},
			{Host: "nope", Address: testDomainUUID},
		} {
			_, err := d.State(call(t), ref)
			wantErrIs(t, "State", err, driver.ErrMachineNotFound)
			wantErrIs(t, "Start", d.Start(call(t), ref), driver.ErrMachineNotFound)
			wantErrIs(t, "Shutdown", d.Shutdown(call(t), ref), driver.ErrMachineNotFound)
			wantErrIs(t, "Stop", d.Stop(call(t), ref), driver.ErrMachineNotFound)
			wantErrIs(t, "Ping", d.Ping(call(t), ref), driver.ErrMachineNotFound)
			err = d.SetPassword(call(t), ref, "root", pw)
			wantErrIs(t, "SetPassword", err, driver.ErrMachineNotFound)
			if strings.Contains(fmt.Sprintf("%v %+v", err, err), string(pw)) {
				t.Errorf("SetPassword error shows the password: %v", err)
			}
			wantErrIs(t, "Preflight", d.Preflight(call(t), ref), driver.ErrMachineNotFound)
		}
	})

	t.Run("UnixSocketURI", func(t *testing.T) {
		if err := d.SetHost(Host{ID: "h2", URI: "test+unix:///default?socket=" + libvirtdSock}); err != nil {
			t.Fatal(err)
		}
		defer d.RemoveHost("h2")
		waitConnected(t, d, "h2")
		wantState(t, d, driver.Ref{Host: "h2", Address: testDomainUUID}, driver.PowerRunning)
	})

	t.Run("UnreachableHost", func(t *testing.T) {
		if err := d.SetHost(Host{ID: "h3", URI: "qemu+unix:///system?socket=/nonexistent/libvirt-sock"}); err != nil {
			t.Fatal(err)
		}
		defer d.RemoveHost("h3")
		deadline := time.Now().Add(5 * time.Second)
		for d.HostStatus("h3").Error == "not connected yet" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		st := d.HostStatus("h3")
		if st.Connected || !strings.Contains(st.Error, "/nonexistent/libvirt-sock") {
			t.Errorf("HostStatus of an unreachable host = %+v", st)
		}
		_, err := d.State(call(t), driver.Ref{Host: "h3", Address: testDomainUUID})
		if !driver.IsTransient(err) {
			t.Errorf("State on an unreachable host: %v, want a transient error", err)
		}
	})

	if err := d.SetHost(Host{ID: "h4", URI: "qemu+tcp://kvm1/system"}); err == nil || !strings.Contains(err.Error(), "unsupported transport") {
		t.Errorf("SetHost with a tcp URI: %v", err)
	}
}

// TestReconnect stops libvirtd under a connected driver: the driver must
// notice, fail calls with transient errors meanwhile, reconnect once the
// daemon is back, and ask for a resync.
//
// It stops a private libvirtd rather than the shared one, so that it does
// not pull the daemon from under other packages' tests that run VMs at the
// same time (go test runs packages in parallel).
func TestReconnect(t *testing.T) {
	needLibvirtd(t)
	p := startPrivateLibvirtd(t, nil)
	d := startDriver(t, Config{})
	if err := d.SetHost(Host{ID: "h1", URI: "test+unix:///default?socket=" + p.socket}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "h1")
	ref := driver.Ref{Host: "h1", Address: testDomainUUID}
	wantState(t, d, ref, driver.PowerRunning)

	p.stop(t)
	waitChange(t, d, 10*time.Second, "disconnected", func(c Change) bool {
		return c.HostID == "h1" && !c.Connected
	})
	if st := d.HostStatus("h1"); st.Connected || st.Error == "" {
		t.Errorf("HostStatus while libvirtd is down = %+v", st)
	}
	_, err := d.State(call(t), ref)
	if !driver.IsTransient(err) {
		t.Errorf("State while libvirtd is down: %v, want a transient error", err)
	}
	// An unknown machine is still unknown, not transient.
	_, err = d.State(call(t), driver.Ref{Host: "h1", Address: "not-a-uuid"})
	wantErrIs(t, "State of an unknown machine while libvirtd is down", err, driver.ErrMachineNotFound)

	p.start(t)
	waitConnected(t, d, "h1")
	wantState(t, d, ref, driver.PowerRunning)
}

// privateLibvirtd is a libvirtd of our own: a session daemon run as
// nobody in a directory of its own, with its own socket, state and
// configuration, so that a test can stop and start it at will.
type privateLibvirtd struct {
	dir    string
	socket string
	args   []string // extra arguments for libvirtd
	cmd    *exec.Cmd
	done   chan struct{}
}

// startPrivateLibvirtd starts a private libvirtd. configure, when not nil,
// may write files into the daemon's directory (owned by nobody once it
// returns) and returns extra arguments for libvirtd.
func startPrivateLibvirtd(t *testing.T, configure func(dir string) []string) *privateLibvirtd {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("look up user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// Not t.TempDir: its parent is private to root, and the daemon runs as
	// nobody.
	dir, err := os.MkdirTemp("", "fleetpass-libvirtd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &privateLibvirtd{dir: dir, socket: dir + "/run/libvirt/libvirt-sock"}
	if configure != nil {
		p.args = configure(dir)
	}
	err = filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(path, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	p.start(t)
	t.Cleanup(func() {
		if p.cmd != nil {
			p.stop(t)
		}
	})
	return p
}

func (p *privateLibvirtd) start(t *testing.T) {
	t.Helper()
	fi, err := os.Stat(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	logFile, err := os.OpenFile(p.dir+"/libvirtd.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(libvirtdBin, p.args...)
	cmd.Dir = p.dir
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + p.dir,
		"XDG_RUNTIME_DIR=" + p.dir + "/run",
		"XDG_CONFIG_HOME=" + p.dir + "/config",
		"XDG_CACHE_HOME=" + p.dir + "/cache",
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: st.Uid, Gid: st.Gid},
		Pdeathsig:  syscall.SIGTERM, // no daemon left behind by a crashed test
	}
	if err := os.MkdirAll(p.dir+"/run", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p.dir+"/run", int(st.Uid), int(st.Gid)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a private libvirtd: %v", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", p.socket)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.dir + "/libvirtd.log")
			t.Fatalf("private libvirtd exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("private libvirtd's socket does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *privateLibvirtd) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Error("private libvirtd did not exit after SIGTERM")
	}
	p.cmd = nil
}

// TestAnOnDemandHostConnectsWhenUsedAndClosesWhenIdle: two drivers stand
// for two replicas on one libvirtd: the one that follows the host sees a
// domain the other starts on demand (the test driver's state is shared by
// the daemon's connections while one stays open); the on-demand one sends
// no Changes and closes its connection once idle.
func TestAnOnDemandHostConnectsWhenUsedAndClosesWhenIdle(t *testing.T) {
	needLibvirtd(t)
	follower := startDriver(t, Config{})
	if err := follower.SetHost(Host{ID: "h1", URI: "test:///default"}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, follower, "h1")
	lazy := startDriver(t, Config{IdleTimeout: 300 * time.Millisecond})
	if err := lazy.SetHost(Host{ID: "h1", URI: "test:///default", OnDemand: true}); err != nil {
		t.Fatal(err)
	}
	if st := lazy.HostStatus("h1"); st.Connected {
		t.Fatalf("an on-demand host connected before any call: %+v", st)
	}
	ref := defineTestDomain(t, follower, "h1", false)
	if err := lazy.Start(call(t), ref); err != nil {
		t.Fatalf("Start on demand: %v", err)
	}
	if st := lazy.HostStatus("h1"); !st.Connected {
		t.Fatalf("after a call: %+v, want connected", st)
	}
	wantState(t, follower, ref, driver.PowerRunning)
	deadline := time.Now().Add(30 * time.Second)
	for lazy.HostStatus("h1").Connected {
		if time.Now().After(deadline) {
			t.Fatal("the idle on-demand connection stayed open")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case c := <-lazy.Changes():
		t.Fatalf("an on-demand host sent a change: %+v", c)
	default:
	}
	// Used again, it reconnects.
	if err := lazy.Stop(call(t), ref); err != nil {
		t.Fatalf("Stop on demand after the idle close: %v", err)
	}
	wantState(t, follower, ref, driver.PowerStopped)
	// Switched to followed (it became the owner), it connects and sends
	// its resync.
	if err := lazy.SetHost(Host{ID: "h1", URI: "test:///default"}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, lazy, "h1")
}

// TestAHostAddedElsewhereIsLookedUpInsteadOfUnknown: a replica whose pass
// has not seen a host yet (another replica added it a moment ago) finds
// it through Lookup and acts on it on demand; a host Lookup does not know
// stays an unknown machine, and a host the pass added meanwhile keeps its
// mode.
func TestAHostAddedElsewhereIsLookedUpInsteadOfUnknown(t *testing.T) {
	needLibvirtd(t)
	follower := startDriver(t, Config{})
	if err := follower.SetHost(Host{ID: "h1", URI: "test:///default"}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, follower, "h1")
	ref := defineTestDomain(t, follower, "h1", false)
	var looked []string
	late := startDriver(t, Config{Lookup: func(_ context.Context, id string) (Host, bool, error) {
		looked = append(looked, id)
		if id != "h1" {
			return Host{}, false, nil
		}
		return Host{ID: "h1", URI: "test:///default", OnDemand: true}, true, nil
	}})
	if err := late.Start(call(t), ref); err != nil {
		t.Fatalf("Start on a host only Lookup knows: %v", err)
	}
	wantState(t, follower, ref, driver.PowerRunning)
	if ids := late.HostIDs(); len(ids) != 1 || ids[0] != "h1" {
		t.Errorf("hosts after the lookup: %v", ids)
	}
	gone := ref
	gone.Host = "h-nowhere"
	_, err := late.State(call(t), gone)
	wantErrIs(t, "a host nobody knows", err, driver.ErrMachineNotFound)
	if len(looked) != 2 {
		t.Errorf("lookups %v, want h1 once (then known) and h-nowhere", looked)
	}
}
