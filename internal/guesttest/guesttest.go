// Package guesttest makes throwaway Linux "guests" for tests
// (docs/design.md#testing-ladder, level 3): a guest is a tree of real
// processes (sshd, and optionally qemu-ga) in their own mount and PID
// namespaces, with a private copy of /etc bind-mounted over /etc, so that
// password changes inside the guest (chpasswd, PAM, qemu-ga's
// guest-set-user-password) go to the copy and never to the host's /etc. Each
// guest's sshd listens on its own loopback address, so a test proves a
// password change the way a user would: an SSH login with the new password
// succeeds and one with the old password fails.
//
// Besides its private /etc, a guest has a private /run (emptied at each
// power-on, as a tmpfs would be at boot) and /var/log, so that sshd, PAM
// and qemu-ga leave nothing on the host either. Everything lives in a
// temporary directory that is removed when the test ends.
//
// The tools come from Debian's packages openssh-server, qemu-guest-agent
// and util-linux, and the guest needs root (mount namespaces). Tests that
// use guests call Start, which calls EnsureTools: under `go test -short`
// they are skipped, otherwise missing tools fail the test with a message
// that says how to install them.
package guesttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/qga"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// Timeouts are generous: the tests run on loaded 2-core machines.
const (
	bootTimeout  = 60 * time.Second
	haltTimeout  = 30 * time.Second
	runTimeout   = 60 * time.Second
	loginTimeout = 60 * time.Second
)

// ErrAuthFailed is what CheckLogin returns (wrapped) when sshd refused the
// password, as opposed to a guest that could not be reached at all. Tests
// that check an old password no longer works should insist on it.
// It is the test kit's one sentinel (testutil.ErrAuthFailed), which
// vmtest's logins return too.
var ErrAuthFailed = testutil.ErrAuthFailed

// UserSpec is a user to create in the guest.
type UserSpec struct {
	Name     string
	Password string
}

// Options configures a guest.
type Options struct {
	// Users are created in the guest's private /etc, each with a home
	// directory, /bin/sh as shell, and the given password.
	Users []UserSpec
	// QGA runs the real qemu-ga in the guest, listening on QGASocket(),
	// restarted whenever it exits as Debian's systemd unit does.
	QGA bool
	// QGAVerbose runs that qemu-ga with -v: at debug level it logs every
	// command line it reads, guest-set-user-password's base64 password
	// included, so a test can look in QGALog for what the agent was sent.
	QGAVerbose bool
}

// Guest is a throwaway Linux guest. Its methods are safe for concurrent
// use, except that PowerOn, PowerOff and Start report failures with
// t.Fatal and so belong on the test's goroutine.
type Guest struct {
	t       testing.TB
	opts    Options
	tools   tools
	root    string // guest directory on the host
	addr    string // sshd's host:port
	hostKey ssh.PublicKey

	sshdLog, qgaLog, initLog testutil.LogBuffer

	// mu is held for writing to power on and off, and for reading while a
	// command is started inside the guest.
	mu     sync.RWMutex
	boot   *boot // nil while powered off
	closed bool
}

// boot is one power cycle of a guest.
type boot struct {
	init    *process
	initPID int // pid 1 of the guest's PID namespace, as the host sees it
	pidfd   int // pidfd of initPID, so that killing it can never hit a recycled pid
	daemons []*process
	qga     *process // among daemons; nil when not running
}

// process is a command the guest runs and its end.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error
}

// startProcess starts cmd and notes in log how it ended.
func startProcess(name string, cmd *exec.Cmd, log io.Writer) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(log, "guesttest: %s ended: %v\n", name, p.err)
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// marker is a file in every guest's private /etc. Every command is started
// through a guard that checks for it, so that nothing meant for the guest
// ever runs against the host's /etc, whatever went wrong with the mounts.
const marker = ".fleetpass-guesttest"

// setupScript runs in a new mount namespace: it puts the guest's private
// directories in place, then runs the command after the guest directory.
const setupScript = `set -e
root=$1; shift
mount --bind "$root/etc" /etc
mount --bind "$root/run" /run
mount --bind "$root/log" /var/log
test -e /etc/` + marker + `
exec "$@"`

// guardScript runs a command only if it is inside a guest.
const guardScript = `test -e /etc/` + marker + ` || { echo "guesttest: not inside a guest, refusing to run $1" >&2; exit 97; }
exec "$@"`

// initScript is pid 1 of a guest: it says it is ready (its namespaces
// exist and the mounts are in place), then waits forever, reaping orphans.
const initScript = `echo ready
while :; do sleep 3600 & wait $!; done`

func guestEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C",
		"HOME=/root",
	}
}

// Start makes a guest, powers it on, and closes it when the test ends.
func Start(t testing.TB, opts Options) *Guest {
	t.Helper()
	tl := ensureTools(t)
	for _, u := range opts.Users {
		if err := checkUser(u); err != nil {
			t.Fatalf("guesttest: %v", err)
		}
	}
	// Not t.TempDir: unix socket paths must stay under 108 bytes, and
	// t.TempDir's grow with the test's name.
	root, err := os.MkdirTemp("", "guest-")
	if err != nil {
		t.Fatalf("guesttest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("guesttest: remove guest directory: %v", err)
		}
	})
	g := &Guest{t: t, opts: opts, tools: tl, root: root}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guesttest: logs of guest %s\n--- init:\n%s\n--- sshd:\n%s\n--- qemu-ga:\n%s",
				g.addr, g.initLog.String(), g.sshdLog.String(), g.qgaLog.String())
		}
	})
	t.Cleanup(g.Close)
	if err := g.prepare(); err != nil {
		t.Fatalf("guesttest: prepare guest: %v", err)
	}
	// A free port may be taken again before sshd binds it: try another.
	for attempt := 1; ; attempt++ {
		err := g.powerOn()
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, errSSHDExited) {
			t.Fatalf("guesttest: power on: %v", err)
		}
		if err := g.pickAddr(); err != nil {
			t.Fatalf("guesttest: %v", err)
		}
	}
	return g
}

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func checkUser(u UserSpec) error {
	if !userName.MatchString(u.Name) {
		return fmt.Errorf("user name %q is not one useradd accepts", u.Name)
	}
	if strings.ContainsAny(u.Password, "\n\x00") || u.Password == "" {
		return fmt.Errorf("user %s: the password must be one non-empty line", u.Name)
	}
	return nil
}

// prepare builds the guest's directory: its private /etc with a fresh host
// key, an sshd_config and the users.
func (g *Guest) prepare() error {
	// Users reach their home directories beneath root.
	if err := os.Chmod(g.root, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	etc := filepath.Join(g.root, "etc")
	if out, err := exec.CommandContext(ctx, g.tools.cp, "-a", "/etc", etc).CombinedOutput(); err != nil {
		return fmt.Errorf("copy /etc: %w: %s", err, out)
	}
	for _, dir := range []string{"run", "log", "home", "qga"} {
		if err := os.Mkdir(filepath.Join(g.root, dir), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(etc, marker), []byte(g.root+"\n"), 0o644); err != nil {
		return err
	}
	if err := g.writeHostKey(); err != nil {
		return err
	}
	if err := g.pickAddr(); err != nil {
		return err
	}
	for _, u := range g.opts.Users {
		if err := g.addUser(u); err != nil {
			return err
		}
	}
	return nil
}

// writeHostKey replaces the host's own keys in the copy with a fresh one,
// which also lets CheckLogin verify the guest's identity.
func (g *Guest) writeHostKey() error {
	sshDir := filepath.Join(g.root, "etc", "ssh")
	old, _ := filepath.Glob(filepath.Join(sshDir, "ssh_host_*"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "guesttest")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sshDir, "ssh_host_ed25519_key"), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	g.hostKey, err = ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(sshDir, "ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(g.hostKey), 0o644)
}

// pickAddr chooses a free port on a loopback address of the guest's own
// and writes sshd_config for it.
func (g *Guest) pickAddr() error {
	ip := fmt.Sprintf("127.0.0.%d", 2+mathrand.IntN(253))
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	g.addr = l.Addr().String()
	l.Close()
	host, port, _ := net.SplitHostPort(g.addr)
	// Debian's PAM stack (common-auth, common-password: pam_unix with
	// yescrypt) is kept as it is: it reads the private /etc/shadow.
	config := fmt.Sprintf(`# A guesttest guest's sshd.
ListenAddress %s:%s
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
PermitRootLogin yes
PermitEmptyPasswords no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
MaxStartups 100:30:200
# As on a real server: file transfer tools (Ansible's sftp, and scp, which
# speaks SFTP since OpenSSH 9) need it.
Subsystem sftp internal-sftp
`, host, port)
	return os.WriteFile(filepath.Join(g.root, "etc", "ssh", "sshd_config"), []byte(config), 0o644)
}

func (g *Guest) addUser(u UserSpec) error {
	home := filepath.Join(g.root, "home", u.Name)
	if _, err := g.Run("useradd", "--home-dir", home, "--no-create-home", "--shell", "/bin/sh", "--user-group", u.Name); err != nil {
		return err
	}
	uid, gid, err := g.lookupUser(u.Name)
	if err != nil {
		return err
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		return err
	}
	if err := os.Chown(home, uid, gid); err != nil {
		return err
	}
	return g.SetPassword(u.Name, u.Password)
}

// lookupUser reads the guest's /etc/passwd from the host side.
func (g *Guest) lookupUser(name string) (uid, gid int, err error) {
	b, err := os.ReadFile(filepath.Join(g.root, "etc", "passwd"))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) >= 4 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err := errors.Join(err1, err2); err != nil {
				return 0, 0, fmt.Errorf("guest passwd entry of %s: %w", name, err)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("user %s is not in the guest's /etc/passwd", name)
}

// SSHAddr is the host:port of the guest's sshd (also while powered off).
func (g *Guest) SSHAddr() string { return g.addr }

// QGASocket is the path of the unix socket qemu-ga listens on, with
// Options.QGA; use it as driver.Ref.Address of a qga.Channel.
func (g *Guest) QGASocket() string { return filepath.Join(g.root, "qga", "qga.sock") }

// Ref is a driver.Ref for the guest's qemu-ga, a Linux guest's.
func (g *Guest) Ref() driver.Ref {
	return driver.Ref{InstanceID: "guest-" + g.addr, Address: g.QGASocket(), OSType: driver.OSLinux}
}

// SSHDLog is what the guest's sshd wrote so far (across power cycles).
func (g *Guest) SSHDLog() string { return g.sshdLog.String() }

// QGALog is what the guest's qemu-ga wrote so far (across power cycles).
func (g *Guest) QGALog() string { return g.qgaLog.String() }

// Running reports whether the guest is powered on.
func (g *Guest) Running() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.boot != nil
}

// CheckLogin logs in as user with password over SSH and runs `true`. It
// returns nil on success, an error wrapping ErrAuthFailed when sshd refused
// the password, and another error when the guest could not be reached.
func (g *Guest) CheckLogin(user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), loginTimeout)
	defer cancel()
	_, err := testutil.SSH(ctx, testutil.SSHLogin{Addr: g.addr, User: user, Password: password,
		HostKey: g.hostKey, Timeout: loginTimeout}, "true")
	if err != nil {
		return fmt.Errorf("guesttest: %w", err)
	}
	return nil
}

// Run runs a command inside the guest and returns its combined output.
// While the guest is powered on the command joins its namespaces (and is
// killed by PowerOff); while it is off, the command gets namespaces of its
// own with the same private directories, as a rescue system would.
func (g *Guest) Run(args ...string) (string, error) {
	return g.RunInput(nil, args...)
}

// RunInput is Run with stdin. Secrets go here, never in args.
func (g *Guest) RunInput(stdin []byte, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("guesttest: run: no command")
	}
	// The lock keeps the guest from powering off between choosing how to
	// enter it and entering it; once in, PowerOff may kill the command.
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return "", errors.New("guesttest: run: guest is closed")
	}
	return g.run(stdin, args, g.mu.RUnlock)
}

// run runs a command in the guest; g.mu must be held, and unlock is called
// once the command has started.
func (g *Guest) run(stdin []byte, args []string, unlock func()) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := g.command(ctx, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Start()
	unlock()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.String(), fmt.Errorf("guesttest: run %q in the guest: %w: %s", args, err, bytes.TrimSpace(out.Bytes()))
	}
	return out.String(), nil
}

// command builds a command that runs inside the guest. g.mu must be held.
func (g *Guest) command(ctx context.Context, args ...string) *exec.Cmd {
	var argv []string
	if g.boot != nil {
		argv = []string{g.tools.nsenter, "--target", strconv.Itoa(g.boot.initPID), "--mount", "--pid", "--",
			"/bin/sh", "-c", guardScript, "guest"}
	} else {
		argv = []string{g.tools.unshare, "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private", "--",
			"/bin/sh", "-c", setupScript, "guest-setup", g.root, "/bin/sh", "-c", guardScript, "guest"}
	}
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	g.prepareCmd(cmd)
	return cmd
}

func (g *Guest) prepareCmd(cmd *exec.Cmd) {
	cmd.Env = guestEnv()
	cmd.Dir = "/"
	// If the test binary dies, its guests die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
}

// SetPassword sets user's password inside the guest with chpasswd, the
// password going through stdin.
func (g *Guest) SetPassword(user, password string) error {
	if err := checkUser(UserSpec{Name: user, Password: password}); err != nil {
		return fmt.Errorf("guesttest: %w", err)
	}
	_, err := g.RunInput([]byte(user+":"+password+"\n"), "chpasswd")
	return err
}

// PowerOn starts the guest's processes again (sshd, and qemu-ga with
// Options.QGA) and waits until they answer. Its /etc is kept from before;
// its /run starts empty.
func (g *Guest) PowerOn() {
	g.t.Helper()
	if err := g.powerOn(); err != nil {
		g.t.Fatalf("guesttest: power on: %v", err)
	}
}

// PowerOff kills every process of the guest, as pulling the plug would,
// and returns once they are all gone. Its files are kept.
func (g *Guest) PowerOff() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.halt(); err != nil {
		g.t.Fatalf("guesttest: power off: %v", err)
	}
}

// Close powers the guest off for good. Start registers it with t.Cleanup;
// calling it again is harmless.
func (g *Guest) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	if err := g.halt(); err != nil {
		g.t.Errorf("guesttest: close: %v", err)
	}
}

var errSSHDExited = errors.New("sshd exited")

func (g *Guest) powerOn() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("guest is closed")
	}
	if g.boot != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	err := g.startInit(ctx)
	if err == nil {
		err = g.startSSHD(ctx)
	}
	if err == nil && g.opts.QGA {
		err = g.startQGA(ctx)
	}
	if err != nil {
		if herr := g.halt(); herr != nil {
			err = errors.Join(err, herr)
		}
		return err
	}
	return nil
}

// startInit creates the guest's namespaces, held by an init process.
func (g *Guest) startInit(ctx context.Context) error {
	// A fresh /run at each boot, as a tmpfs would give.
	run := filepath.Join(g.root, "run")
	if err := os.RemoveAll(run); err != nil {
		return err
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll(filepath.Join(run, "sshd"), 0o755); err != nil {
		return err
	}
	if err := os.Remove(g.QGASocket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	cmd := exec.Command(g.tools.unshare, "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private", "--",
		"/bin/sh", "-c", setupScript, "guest-setup", g.root, "/bin/sh", "-c", initScript)
	g.prepareCmd(cmd)
	cmd.Stderr = &g.initLog
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	p, err := startProcess("guest init", cmd, &g.initLog)
	if err != nil {
		return err
	}
	g.boot = &boot{init: p, pidfd: -1}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected output %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("guest init: %w: %s", err, g.initLog.String())
		}
	case <-ctx.Done():
		return fmt.Errorf("guest init: %w", ctx.Err())
	}
	return g.findInit(cmd.Process.Pid)
}

// findInit finds the guest's pid 1 (the child of unshare) and opens a pidfd
// for it while its parent, still alive, keeps its pid from being reused.
func (g *Guest) findInit(unsharePID int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", unsharePID, unsharePID))
	if err != nil {
		return fmt.Errorf("find guest init: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 1 {
		return fmt.Errorf("find guest init: unshare has children %q", fields)
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return fmt.Errorf("find guest init: %w", err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("find guest init: pidfd_open: %w", err)
	}
	g.boot.pidfd = fd
	// Between reading children and pidfd_open, the child could have died
	// and its pid been reused; the unshare process exits when its child
	// does, so it still running proves the pidfd is the right process.
	if g.boot.init.exited() {
		return fmt.Errorf("guest init exited: %v: %s", g.boot.init.err, g.initLog.String())
	}
	g.boot.initPID = pid
	return nil
}

// startDaemon runs a command inside the guest for the rest of its boot.
func (g *Guest) startDaemon(name string, out io.Writer, args ...string) (*process, error) {
	cmd := g.command(context.Background(), args...)
	cmd.Stdout = out
	cmd.Stderr = out
	p, err := startProcess(name, cmd, out)
	if err != nil {
		return nil, err
	}
	g.boot.daemons = append(g.boot.daemons, p)
	return p, nil
}

func (g *Guest) startSSHD(ctx context.Context) error {
	fmt.Fprintf(&g.sshdLog, "guesttest: starting sshd on %s\n", g.addr)
	// -D: stay in the foreground; -e: log to stderr, not to the host's syslog.
	p, err := g.startDaemon("sshd", &g.sshdLog, g.tools.sshd, "-D", "-e")
	if err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%w: %v: %s", errSSHDExited, p.err, g.sshdLog.String())
		}
		return sshAnswers(ctx, g.addr), nil
	})
}

// sshAnswers reports whether an SSH server greets on addr.
func sshAnswers(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	banner := make([]byte, 4)
	_, err = io.ReadFull(c, banner)
	return err == nil && string(banner) == "SSH-"
}

func (g *Guest) startQGA(ctx context.Context) error {
	args := []string{"/bin/sh", "-c", qgaSupervisor, "qemu-ga-supervisor",
		g.tools.qemuGA,
		"--method", "unix-listen", "--path", g.QGASocket(),
		"--pidfile", "/run/qemu-ga.pid", "--statedir", "/run",
		"--block-rpcs", hostRPCs}
	// -v only when asked: qemu-ga's debug log prints every command it
	// reads, guest-set-user-password's base64 password included.
	if g.opts.QGAVerbose {
		args = append(args, "-v")
	}
	p, err := g.startDaemon("qemu-ga", &g.qgaLog, args...)
	if err != nil {
		return err
	}
	g.boot.qga = p
	ch := &qga.Channel{Timeout: 5 * time.Second, SyncTimeout: 2 * time.Second}
	return poll(ctx, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("qemu-ga exited: %v: %s", p.err, g.qgaLog.String())
		}
		if _, err := os.Stat(g.QGASocket()); err != nil {
			return false, nil
		}
		return ch.Ping(ctx, g.Ref()) == nil, nil
	})
}

// qgaSupervisor runs qemu-ga as Debian's unit does (Restart=always,
// RestartSec=0), which matters: qemu-ga 7.2 in unix-listen mode quits when
// a client closes its connection with an answer still unread (the agent's
// next read fails with ECONNRESET). SIGTERM stops the supervisor and the
// agent, and the supervisor exits only once the agent is gone.
const qgaSupervisor = `echo $$ >/run/qemu-ga-supervisor.pid
trap 'kill -KILL "$agent" 2>/dev/null; wait "$agent"; exit 0' TERM
while :; do
	"$@" &
	agent=$!
	wait "$agent"
	echo "guesttest: qemu-ga exited with status $?; restarting it" >&2
	sleep 0.1
done`

// StopQGA stops the guest's qemu-ga, as `systemctl stop qemu-guest-agent`
// would: the guest keeps running, its agent is not alive. StartQGA starts
// it again.
func (g *Guest) StopQGA() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.boot == nil || g.boot.qga == nil {
		return
	}
	p := g.boot.qga
	if _, err := g.run(nil, []string{"sh", "-c", `kill -TERM "$(cat /run/qemu-ga-supervisor.pid)"`}, func() {}); err != nil {
		g.t.Fatalf("guesttest: stop qemu-ga: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(haltTimeout):
		g.t.Fatalf("guesttest: qemu-ga did not stop in %v", haltTimeout)
	}
	g.boot.qga = nil
}

// StartQGA starts the guest's qemu-ga after StopQGA, and waits until it
// answers. The guest must be powered on.
func (g *Guest) StartQGA() {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.boot == nil {
		g.t.Fatal("guesttest: StartQGA on a powered-off guest")
	}
	if g.boot.qga != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := g.startQGA(ctx); err != nil {
		g.t.Fatalf("guesttest: start qemu-ga: %v", err)
	}
}

// hostRPCs are the agent commands that would act on the host itself: the
// guest shares its kernel, clock, CPUs and file systems (think of shutting
// down, or freezing the file systems of, the machine that runs the tests).
// The guest's qemu-ga refuses them, as an agent with a blocklist does.
const hostRPCs = "guest-shutdown," +
	"guest-suspend-disk,guest-suspend-ram,guest-suspend-hybrid," +
	"guest-set-time," +
	"guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,guest-fsfreeze-thaw,guest-fstrim," +
	"guest-set-vcpus,guest-set-memory-blocks"

// poll calls f until it reports done or fails, or ctx ends.
func poll(ctx context.Context, f func() (bool, error)) error {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// halt kills the guest's init, which makes the kernel kill every other
// process in its PID namespace, and waits for all of it. g.mu must be held
// for writing.
func (g *Guest) halt() error {
	b := g.boot
	if b == nil {
		return nil
	}
	g.boot = nil
	// unshare then complains that it cannot pass SIGKILL on: expected.
	fmt.Fprintln(&g.initLog, "guesttest: powering off")
	var errs []error
	if b.pidfd >= 0 {
		if err := unix.PidfdSendSignal(b.pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill guest init: %w", err))
		}
		unix.Close(b.pidfd)
	} else if b.init != nil && !b.init.exited() {
		// The init was not found: kill unshare instead, whose
		// --kill-child takes the init with it.
		_ = b.init.cmd.Process.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), haltTimeout)
	defer cancel()
	// unshare exits only once it has reaped the init, and the init is
	// reaped only once every process of its namespace is gone.
	for _, p := range append([]*process{b.init}, b.daemons...) {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("%s did not end in %v", p.name, haltTimeout))
		}
	}
	return errors.Join(errs...)
}
