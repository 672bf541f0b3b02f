// Package ipmitest runs real IPMI 2.0 BMCs for tests: OpenIPMI's ipmi_sim
// (Debian package openipmi) serving RMCP+ ("lanplus") on a loopback UDP
// port, whose chassis power commands run a hook of the test's own. The hook
// is a small bash script that hands each command to the test process over a
// loopback TCP connection, where a Chassis decides what power means: a
// process in its own PID namespace (ProcessChassis), or a guesttest guest
// with sshd and the fleetpass agent (the end-to-end tests).
//
// ipmitool (Debian package ipmitool) is the second client tests use to
// cross-check what fleetpass says. Start skips the test under -short and
// fails it, with a hint, when the tools are missing.
//
// ipmi_sim quirks this package works around: it starts with no BMC unless
// told (bmc.emu), ignores lan.conf's users once a persisted users file
// exists (a fresh state directory per BMC), logs only to syslog after
// start-up (the hook log is the record of what it did), and runs the hook
// synchronously, running a command again when the client retransmits, so
// Chassis implementations must answer fast.
package ipmitest

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Chassis is the machine behind a BMC. ipmi_sim waits for each call (and
// its client may retransmit after about a second), so implementations
// start long work in the background and return at once.
type Chassis interface {
	// Power reports whether the machine is on.
	Power() bool
	// SetPower switches the machine on, or cuts its power.
	SetPower(on bool) error
	// SoftOff asks the operating system to shut down (ACPI power button).
	SoftOff() error
	// Reset resets the machine (a hard reset: off and at once on again).
	Reset() error
}

// Options configures a BMC.
type Options struct {
	// User and Password are the BMC's administrator account. Defaults:
	// "admin" and a random password.
	User, Password string
}

// BMC is a running ipmi_sim.
type BMC struct {
	t        testing.TB
	Host     string
	Port     int
	User     string
	Password string

	dir     string
	chassis Chassis
	hookLn  net.Listener

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	calls    []string
	stopping bool
}

const installHint = "IPMI tests need Debian's openipmi (ipmi_sim) and ipmitool; run the README's test command, " +
	"which installs them (scripts/install-test-deps.sh), or use `go test -short` to skip these tests"

// EnsureTools skips the test under -short, and fails it unless ipmi_sim,
// ipmitool and bash are installed.
func EnsureTools(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("ipmitest: real BMCs are skipped under -short")
	}
	for _, tool := range []string{"ipmi_sim", "ipmitool", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("ipmitest: %s not found\n%s", tool, installHint)
		}
	}
}

// Start runs ipmi_sim on a free loopback port with ch as its chassis, and
// stops it when the test ends. It returns once the BMC answers ipmitool.
func Start(t testing.TB, ch Chassis, opts Options) *BMC {
	t.Helper()
	EnsureTools(t)
	if opts.User == "" {
		opts.User = "admin"
	}
	if opts.Password == "" {
		opts.Password = "bmc-" + randomWord()
	}
	dir, err := os.MkdirTemp("", "bmc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &BMC{t: t, Host: "127.0.0.1", User: opts.User, Password: opts.Password, dir: dir, chassis: ch}
	if b.hookLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.hookLn.Close() })
	go b.serveHook()
	if err := b.writeConfig(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	if err := b.run(); err != nil {
		t.Fatalf("ipmitest: %v", err)
	}
	return b
}

// Addr is the BMC's host:port.
func (b *BMC) Addr() string { return net.JoinHostPort(b.Host, fmt.Sprint(b.Port)) }

// Dir is the BMC's directory (configuration, state, hook log).
func (b *BMC) Dir() string { return b.dir }

func (b *BMC) writeConfig() error {
	port, err := freeUDPPort()
	if err != nil {
		return err
	}
	b.Port = port
	hook := filepath.Join(b.dir, "chassis.sh")
	lan := fmt.Sprintf(`name "fpbmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s %s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, hook, b.dir, b.User, b.Password)
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n"
	hookPort := b.hookLn.Addr().(*net.TCPAddr).Port
	// The hook answers from the test process; with the test gone, it fails
	// fast rather than hanging ipmi_sim.
	script := fmt.Sprintf(`#!/bin/bash
dir=$1; shift
printf '%%s\n' "$*" >>"$dir/hook.log"
exec 3<>/dev/tcp/127.0.0.1/%d || exit 1
printf '%%s\n' "$*" >&3
IFS= read -r -t 10 answer <&3 || exit 1
case $answer in
ok) exit 0 ;;
"ok "*) printf '%%s\n' "${answer#ok }"; exit 0 ;;
*) printf '%%s\n' "$answer" >&2; exit 1 ;;
esac
`, hookPort)
	for name, content := range map[string]string{"lan.conf": lan, "bmc.emu": emu, "chassis.sh": script} {
		mode := os.FileMode(0o600)
		if name == "chassis.sh" {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(content), mode); err != nil {
			return err
		}
	}
	return nil
}

// run starts ipmi_sim with a fresh state directory and waits until it
// answers.
func (b *BMC) run() error {
	state, err := os.MkdirTemp(b.dir, "state-")
	if err != nil {
		return err
	}
	cmd := exec.Command("ipmi_sim", "-c", filepath.Join(b.dir, "lan.conf"), "-f", filepath.Join(b.dir, "bmc.emu"),
		"-s", state, "-n")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if f, err := os.Create(filepath.Join(b.dir, "ipmi_sim.log")); err == nil {
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ipmi_sim: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.mu.Lock()
	b.cmd, b.done, b.stopping = cmd, done, false
	b.mu.Unlock()
	go b.watch(done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := b.IPMITool("chassis", "power", "status"); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("ipmi_sim does not answer on %s: %v\n%s", b.Addr(), err, b.simLog())
		}
		select {
		case <-done:
			return fmt.Errorf("ipmi_sim exited at start-up:\n%s", b.simLog())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watch fails the test loudly when ipmi_sim dies without being told to:
// some clients' packets crash it (go-ipmi with cipher suite 2 does).
func (b *BMC) watch(done chan struct{}) {
	<-done
	b.mu.Lock()
	expected := b.stopping
	b.mu.Unlock()
	if !expected {
		b.t.Errorf("ipmitest: ipmi_sim on %s exited unexpectedly:\n%s", b.Addr(), b.simLog())
	}
}

func (b *BMC) simLog() string {
	out, _ := os.ReadFile(filepath.Join(b.dir, "ipmi_sim.log"))
	return string(out)
}

// Kill kills ipmi_sim with SIGKILL, as a BMC that loses power or crashes
// would go: its port stops answering. The chassis is left as it is.
func (b *BMC) Kill() {
	b.t.Helper()
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.stopping = true
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	b.mu.Lock()
	b.cmd = nil
	b.mu.Unlock()
}

// Restart starts ipmi_sim again after Kill, on the same port, with the
// users of its configuration.
func (b *BMC) Restart() {
	b.t.Helper()
	b.Kill()
	if err := b.run(); err != nil {
		b.t.Fatalf("ipmitest: restart: %v", err)
	}
}

func (b *BMC) stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.stopping = true
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if b.t.Failed() {
		b.t.Logf("ipmitest: hook calls of BMC %s: %q", b.Addr(), b.HookCalls())
	}
}

// HookCalls is every chassis command ipmi_sim ran, oldest first ("get
// power", "set power 1", "set shutdown 1", ...), as the hook logged them.
func (b *BMC) HookCalls() []string {
	out, err := os.ReadFile(filepath.Join(b.dir, "hook.log"))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// Commands is HookCalls without the reads ("get ..."): the commands that
// changed something.
func (b *BMC) Commands() []string {
	var out []string
	for _, c := range b.HookCalls() {
		if c != "" && !strings.HasPrefix(c, "get ") {
			out = append(out, c)
		}
	}
	return out
}

// IPMITool runs ipmitool against the BMC over lanplus with cipher suite 3,
// the password in the environment (-E), never in its arguments.
func (b *BMC) IPMITool(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"-I", "lanplus", "-H", b.Host, "-p", fmt.Sprint(b.Port), "-U", b.User, "-E", "-C", "3",
		"-N", "1", "-R", "2"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", full...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+b.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// PowerStatus asks ipmitool whether the chassis is on.
func (b *BMC) PowerStatus() (bool, error) {
	out, err := b.IPMITool("chassis", "power", "status")
	if err != nil {
		return false, err
	}
	switch {
	case strings.Contains(out, "is on"):
		return true, nil
	case strings.Contains(out, "is off"):
		return false, nil
	}
	return false, fmt.Errorf("ipmitool chassis power status said %q", out)
}

// serveHook answers the hook's connections: one command per connection.
func (b *BMC) serveHook() {
	for {
		conn, err := b.hookLn.Accept()
		if err != nil {
			return
		}
		go b.answer(conn)
	}
}

func (b *BMC) answer(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	cmd := strings.Fields(line)
	b.mu.Lock()
	b.calls = append(b.calls, strings.Join(cmd, " "))
	b.mu.Unlock()
	reply := "ok"
	if err := b.do(cmd, &reply); err != nil {
		reply = "error " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	fmt.Fprintln(conn, reply)
}

func (b *BMC) do(cmd []string, reply *string) error {
	if len(cmd) < 2 {
		return fmt.Errorf("bad hook command %q", cmd)
	}
	arg := ""
	if len(cmd) > 2 {
		arg = cmd[2]
	}
	switch cmd[0] + " " + cmd[1] {
	case "get power":
		*reply = "ok power:0"
		if b.chassis.Power() {
			*reply = "ok power:1"
		}
		return nil
	case "set power":
		return b.chassis.SetPower(arg == "1")
	case "set reset":
		return b.chassis.Reset()
	case "set shutdown":
		return b.chassis.SoftOff()
	case "get boot":
		*reply = "ok boot:default"
		return nil
	case "set boot", "set identify":
		return nil
	}
	return fmt.Errorf("unsupported hook command %q", cmd)
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func randomWord() string { return strings.ToLower(rand.Text()[:12]) }

// SetPassword changes the BMC user's password, as an operator rotating it
// on the BMC would, over IPMI (Set User Password) rather than through
// ipmitool, whose arguments would show it. Password records it.
func (b *BMC) SetPassword(password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.NewClient(b.Host, b.Port, b.User, b.Password)
	if err != nil {
		return err
	}
	c.WithCipherSuiteID(types.CipherSuiteID3)
	c.WithTimeout(time.Second).WithRetry(2)
	if err := c.Connect(ctx); err != nil {
		return fmt.Errorf("ipmitest: set password: %w", err)
	}
	defer c.Close(ctx)
	// User 2 is lan.conf's; ipmi_sim keeps 16-byte passwords unless told 20.
	if _, err := c.SetUserPassword(ctx, 2, password, len(password) > 16); err != nil {
		return fmt.Errorf("ipmitest: set password: %w", err)
	}
	b.Password = password
	return nil
}
