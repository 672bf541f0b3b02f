package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"golang.org/x/sys/unix"
)

const (
	// URI is the libvirt connection every VM of this package lives on.
	URI = string(libvirt.QEMUSystem)

	socketPath = "/var/run/libvirt/libvirt-sock"
	daemonLock = "/run/fleetpass-vmtest.lock"
	// sessionLock serializes the tests of different test binaries that
	// use the shared libvirtd (see holdSession).
	sessionLock     = "/run/fleetpass-vmtest.session"
	sessionTimeout  = 40 * time.Minute
	libvirtdPIDFile = "/run/libvirtd.pid"
	virtlogdPIDFile = "/run/virtlogd.pid"

	// The first connection after libvirtd starts probes QEMU's capabilities
	// (about 4 s on an idle machine); loaded CI machines need more.
	socketTimeout = 90 * time.Second

	installHint = "run scripts/install-test-deps.sh (as root)"
)

// Libvirt is a running libvirtd on this machine.
type Libvirt struct {
	// URI is the connection URI, "qemu:///system".
	URI string

	mu   sync.Mutex
	conn *libvirt.Libvirt // the harness's own connection, redialled after Restart
}

// The daemons and the harness connection are per process: every test of a
// binary shares them, and stale domains are swept once.
var (
	procMu      sync.Mutex
	procLibvirt *Libvirt
)

// Libvirtd returns the machine's libvirtd, starting it (and virtlogd) when
// it is not running. It skips the test under -short and fails it when the
// process is not root or the packages are missing.
func Libvirtd(t testing.TB) *Libvirt {
	t.Helper()
	if testing.Short() {
		t.Skip("vmtest: real VMs are skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("vmtest: real VMs need root (libvirtd, qemu:///system): run the tests as root, after scripts/install-test-deps.sh")
	}
	if missing := missingTools(); len(missing) > 0 {
		t.Fatalf("vmtest: missing %s: %s", strings.Join(missing, ", "), installHint)
	}
	holdSession(t)
	procMu.Lock()
	defer procMu.Unlock()
	if procLibvirt != nil {
		return procLibvirt
	}
	// The common case, both daemons up: no need to queue for the lock.
	running := daemonPID("virtlogd", virtlogdPIDFile) != 0 &&
		daemonPID("libvirtd", libvirtdPIDFile) != 0 && waitSocket(0) == nil
	if !running {
		err := withDaemonLock(func() error {
			if err := ensureDaemon("virtlogd", virtlogdPIDFile); err != nil {
				return err
			}
			if err := ensureDaemon("libvirtd", libvirtdPIDFile); err != nil {
				return err
			}
			// Wait under the lock, so that a second test binary does not take
			// a slow first connection for a dead daemon.
			return waitSocket(socketTimeout)
		})
		if err != nil {
			t.Fatalf("vmtest: %v", err)
		}
	}
	l := &Libvirt{URI: URI}
	l.CleanupStale(t)
	procLibvirt = l
	return l
}

// The VM session: `go test ./...` runs several test binaries at once, and
// some tests restart the shared libvirtd (a restart in the middle of an
// operation is a behaviour under test). A restart cuts every client off, so
// a test of another binary would fail for no fault of its own. So the tests
// of one binary hold the machine-wide session lock from their first call to
// Libvirtd until their clean-up, and binaries take turns test by test; the
// tests of one binary share it.
var (
	sessionMu     sync.Mutex
	sessionHolds  int
	sessionUnlock func()
)

func holdSession(t testing.TB) {
	t.Helper()
	sessionMu.Lock()
	if sessionHolds == 0 {
		start := time.Now()
		unlock, err := lockFile(sessionLock, sessionTimeout)
		if err != nil {
			sessionMu.Unlock()
			t.Fatalf("vmtest: %v", err)
		}
		if waited := time.Since(start); waited > time.Second {
			t.Logf("vmtest: waited %s for another test binary's VM tests", waited.Round(time.Second))
		}
		sessionUnlock = unlock
	}
	sessionHolds++
	sessionMu.Unlock()
	t.Cleanup(func() {
		sessionMu.Lock()
		defer sessionMu.Unlock()
		if sessionHolds--; sessionHolds == 0 {
			sessionUnlock()
			sessionUnlock = nil
		}
	})
}

// missingTools lists what the Debian packages of the VM tests provide and
// this machine lacks.
func missingTools() []string {
	var missing []string
	for _, p := range []string{
		"/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/qemu-system-x86_64",
		"/usr/bin/qemu-img", "/usr/sbin/debootstrap", "/usr/sbin/mkfs.ext4",
	} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	// libvirt-daemon-driver-qemu: libvirtd starts without it, and then
	// fails every qemu:/// connection with an obscure message.
	if m, _ := filepath.Glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"); len(m) == 0 {
		missing = append(missing, "libvirt_driver_qemu.so")
	}
	return missing
}

// withDaemonLock runs f holding the machine-wide lock on the daemons.
func withDaemonLock(f func() error) error {
	unlock, err := lockFile(daemonLock, 5*time.Minute)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// lockFile takes an exclusive flock on path, waiting at most timeout, and
// returns its release. A lock whose taker has exited but which is still
// held counts as free: that happens when a daemon was started from a shell
// under flock(1) and inherited the locked descriptor, which it then keeps
// for its whole life. Go's own files are close-on-exec, so the daemons this
// package starts cannot do that.
func lockFile(path string, timeout time.Duration) (func(), error) {
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(fd.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { fd.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			fd.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if holder := flockHolder(fd); holder > 0 && syscall.Kill(holder, 0) == syscall.ESRCH {
			// Leaked into another process: nobody will ever release it.
			return func() { fd.Close() }, nil
		}
		if time.Now().After(deadline) {
			fd.Close()
			return nil, fmt.Errorf("lock %s: still held by pid %d after %v", path, flockHolder(fd), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flockHolder returns the pid that took the flock on f, from /proc/locks
// (the pid of the process that took it, even when that process is gone),
// or 0.
func flockHolder(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	suffix := fmt.Sprintf(":%d", st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		// "10: FLOCK  ADVISORY  WRITE 28457 fe:00:9773057 0 EOF"; waiters
		// have "->" after the number.
		fs := strings.Fields(line)
		if len(fs) < 6 || fs[1] != "FLOCK" || !strings.HasSuffix(fs[5], suffix) {
			continue
		}
		pid, _ := strconv.Atoi(fs[4])
		return pid
	}
	return 0
}

// daemonPID returns the pid in pidFile when that process runs and is name,
// or 0. A pid file may outlive its daemon (a crash, a machine restart
// without a tmpfs /run), and its pid may then belong to something else.
func daemonPID(name, pidFile string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != name || procStart(pid) == "" {
		return 0 // not that daemon, or its zombie
	}
	return pid
}

// ensureDaemon starts /usr/sbin/name in the background unless it runs.
func ensureDaemon(name, pidFile string) error {
	if daemonPID(name, pidFile) != 0 {
		return nil
	}
	// -d daemonizes (so the daemon outlives this test binary) and returns
	// once the daemon is set up. No --listen: that needs TLS certificates
	// and would open TCP ports; the local socket is all the tests use.
	cmd := exec.Command("/usr/sbin/"+name, "-d", "-p", pidFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The daemon points its stdio at /dev/null when it forks; should one
	// ever keep our pipe, do not wait for it to exit.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start %s: %v: %s", name, err, out.Bytes())
	}
	deadline := time.Now().Add(10 * time.Second)
	for daemonPID(name, pidFile) == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s -d returned but %s names no running %s", name, pidFile, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// dial connects a go-libvirt client to libvirtd's local socket.
func dial() (*libvirt.Libvirt, error) {
	c := libvirt.NewWithDialer(dialers.NewLocal(
		dialers.WithSocket(socketPath), dialers.WithLocalTimeout(5*time.Second)))
	if err := c.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return nil, err
	}
	return c, nil
}

// waitSocket waits until libvirtd answers on its socket.
func waitSocket(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := dial()
		if err == nil {
			_, err = c.ConnectGetLibVersion()
			c.Disconnect()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("libvirtd does not answer on %s after %v: %v", socketPath, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// client returns the harness's connection, dialling again when libvirtd
// dropped it (Restart, or a restart by the test itself).
func (l *Libvirt) client() (*libvirt.Libvirt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		select {
		case <-l.conn.Disconnected():
			l.conn = nil
		default:
			return l.conn, nil
		}
	}
	var err error
	// libvirtd may be coming back up after a restart: retry a little.
	for i := 0; i < 50; i++ {
		var c *libvirt.Libvirt
		if c, err = dial(); err == nil {
			l.conn = c
			return c, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("connect to libvirtd: %w", err)
}

// Connect returns a new go-libvirt client of libvirtd, for the test's own
// calls; it is closed when the test ends. It does not survive Restart.
func (l *Libvirt) Connect(t testing.TB) *libvirt.Libvirt {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("vmtest: connect to libvirtd: %v", err)
	}
	t.Cleanup(func() { c.Disconnect() })
	return c
}

// Restart stops libvirtd (SIGTERM, then waits for it to exit) and starts
// it again, returning once it answers. QEMU processes keep running while
// libvirtd is down and libvirtd reconnects to their monitors when it starts,
// so running domains survive; connections from Connect do not.
func (l *Libvirt) Restart(t testing.TB) {
	t.Helper()
	start := time.Now()
	err := withDaemonLock(func() error {
		if pid := daemonPID("libvirtd", libvirtdPIDFile); pid != 0 {
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("stop libvirtd: %w", err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for procStart(pid) != "" { // gone, or a zombie nobody reaped yet
				if time.Now().After(deadline) {
					return fmt.Errorf("libvirtd (pid %d) still runs 60 s after SIGTERM", pid)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if err := ensureDaemon("virtlogd", virtlogdPIDFile); err != nil {
			return err
		}
		if err := ensureDaemon("libvirtd", libvirtdPIDFile); err != nil {
			return err
		}
		return waitSocket(socketTimeout)
	})
	// The old daemon's connection may not have noticed its end yet; the
	// next call dials anew. Closing it is best effort, and must not wait on
	// a socket whose far end is gone.
	l.mu.Lock()
	if old := l.conn; old != nil {
		go old.Disconnect()
		l.conn = nil
	}
	l.mu.Unlock()
	if err != nil {
		t.Fatalf("vmtest: restart libvirtd: %v", err)
	}
	t.Logf("vmtest: libvirtd restarted in %v", time.Since(start).Round(time.Millisecond))
}

// CleanupStale destroys and undefines the domains named fpt-* whose test
// process is gone, and removes their files; Libvirtd calls it once per test
// binary. Domains of test binaries that still run are left alone.
func (l *Libvirt) CleanupStale(t testing.TB) {
	t.Helper()
	c, err := l.client()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	doms, _, err := c.ConnectListAllDomains(1, 0)
	if err != nil {
		t.Fatalf("vmtest: list domains: %v", err)
	}
	for _, d := range doms {
		if !strings.HasPrefix(d.Name, namePrefix) {
			continue
		}
		x, err := c.DomainGetXMLDesc(d, 0)
		if err != nil {
			if !libvirt.IsNotFound(err) {
				t.Logf("vmtest: stale check of %s: %v", d.Name, err)
			}
			continue
		}
		if ownerAlive(ownerFromXML(x)) {
			continue
		}
		t.Logf("vmtest: removing domain %s left by an earlier run", d.Name)
		removeDomain(c, d)
		os.RemoveAll(filepath.Join(workRoot, d.Name))
	}
	// Work directories whose domain is gone already (a crash between the
	// two steps of a cleanup).
	ents, _ := os.ReadDir(workRoot)
	for _, e := range ents {
		dir := filepath.Join(workRoot, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err == nil && ownerAlive(strings.TrimSpace(string(b))) {
			continue
		}
		if _, err := c.DomainLookupByName(e.Name()); err == nil {
			continue // a domain the loop above kept
		}
		os.RemoveAll(dir)
	}
}

// removeDomain destroys (if it runs) and undefines d, ignoring "not
// running" and "no such domain".
func removeDomain(c *libvirt.Libvirt, d libvirt.Domain) error {
	if err := c.DomainDestroyFlags(d, 0); err != nil && !isNotRunning(err) && !libvirt.IsNotFound(err) {
		return fmt.Errorf("destroy %s: %w", d.Name, err)
	}
	if err := c.DomainUndefineFlags(d, 0); err != nil && !libvirt.IsNotFound(err) {
		return fmt.Errorf("undefine %s: %w", d.Name, err)
	}
	return nil
}

func isNotRunning(err error) bool {
	var e libvirt.Error
	return errors.As(err, &e) && e.Code == uint32(libvirt.ErrOperationInvalid)
}

// owner identifies this test process as "pid starttime": the start time
// (in clock ticks since boot, from /proc/PID/stat) tells a reused pid
// from the process that made a domain.
var owner = sync.OnceValue(func() string {
	return fmt.Sprintf("%d %s", os.Getpid(), procStart(os.Getpid()))
})

// procStart returns the start time of process pid, or "" when there is no
// such process or it has exited (a zombie).
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; fields after ")" are
	// fixed: the state is field 3, the start time field 22.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return "" // a killed test binary may linger as a zombie
	}
	return f[19]
}

func ownerAlive(o string) bool {
	pid, start, ok := strings.Cut(o, " ")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return false
	}
	st := procStart(n)
	return st != "" && st == start
}

// ownerFromXML finds the owner in a domain's <description>.
func ownerFromXML(x string) string {
	const tag = "vmtest-owner="
	i := strings.Index(x, tag)
	if i < 0 {
		return ""
	}
	rest := x[i+len(tag):]
	if j := strings.IndexAny(rest, "<;"); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest)
}
