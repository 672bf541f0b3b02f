package vmtest

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/qga"
)

const (
	// namePrefix marks the domains of this package, so CleanupStale never
	// touches anything else defined on the machine.
	namePrefix = "fpt-"
	// workRoot holds each VM's overlay, seed disk and console log. Not
	// t.TempDir(): that may sit under a directory libvirt-qemu cannot
	// traverse (TMPDIR=/root/...), and CleanupStale must find leftovers.
	workRoot = "/var/lib/fleetpass-vmtest"

	defaultMemoryMiB = 256
)

//go:embed domain.xml.tmpl
var domainXML string

var domainTmpl = template.Must(template.New("domain").Parse(domainXML))

// VMOptions says what DefineVM makes.
type VMOptions struct {
	// Name is part of the domain's name, after "fpt-" and before a random
	// suffix; empty means the test's name.
	Name string
	// NoAgentChannel defines the domain without the org.qemu.guest_agent.0
	// channel, like a VM whose owner never added one: libvirt then refuses
	// agent commands with "guest agent is not configured".
	NoAgentChannel bool
	// Agent, when set, gives the VM a seed disk from which the guest
	// installs, enrols and runs fleetpass-agent at boot.
	Agent *AgentSeed
	// MemoryMiB is the guest's memory; 0 means 256.
	MemoryMiB int
	// Root, when set, names the root filesystem for disk resets in the
	// domain's fleetpass metadata (the guest's rootfs is an ext4 with no
	// partition table: /dev/sda to libguestfs); empty leaves it to
	// inspection.
	Root string
}

// AgentSeed is what a guest needs to enrol fleetpass-agent.
type AgentSeed struct {
	// Binary is a fleetpass-agent built for the guest (see BuildAgent).
	Binary string
	// ServerURL is the fleetpass server as the guest sees it (see GuestURL).
	// The agent accepts plain http only on loopback, so this is https.
	ServerURL string
	// Fingerprint is the SHA-256 fingerprint of the server's certificate.
	Fingerprint string
	// Token is the one-time enrolment token. It reaches the agent in a
	// file (--token-file), never in an argument.
	Token string
	// TokenFor, when set, makes the token once the domain's name is known
	// (for a token bound to the instance name the VM will have), in place
	// of Token.
	TokenFor func(domainName string) string
}

// VM is a domain defined by DefineVM.
type VM struct {
	Name    string
	UUID    string
	SSHPort int    // on 127.0.0.1, forwarded to the guest's port 22
	Dir     string // the VM's files: disk.qcow2, seed.img, console.log
	// Domain is the domain for the test's own go-libvirt calls (Connect).
	Domain libvirt.Domain

	l       *Libvirt
	console string
	params  map[string]any // the domain template's, for redefinitions
	started time.Time
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// vmName makes a domain name unique to this test and readable in `virsh
// list`: fpt-<test>-<random>. The random part keeps parallel test binaries
// and repeated -count runs apart.
func vmName(t testing.TB, name string) string {
	if name == "" {
		name = t.Name()
	}
	name = strings.Trim(unsafeName.ReplaceAllString(name, "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	var b [4]byte
	rand.Read(b[:])
	return namePrefix + strings.ToLower(name) + "-" + hex.EncodeToString(b[:])
}

// freePort returns a loopback TCP port nobody listens on right now. QEMU
// binds it only at start, and another process may take it in between:
// Start then redefines the domain with another port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// DefineVM defines a VM (persistently, not started) from img. The test's
// cleanup destroys and undefines it and removes its files.
func (l *Libvirt) DefineVM(t testing.TB, img *GuestImage, o VMOptions) *VM {
	t.Helper()
	name := vmName(t, o.Name)
	dir := filepath.Join(workRoot, name)
	// 0755: QEMU (libvirt-qemu) must reach the files; libvirt changes the
	// owner of the disks themselves while the domain runs.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	os.Chmod(workRoot, 0o755)
	v := &VM{Name: name, Dir: dir, l: l, console: filepath.Join(dir, "console.log")}
	t.Cleanup(func() { v.cleanup(t) })
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(owner()+"\n"), 0o644); err != nil {
		t.Fatalf("vmtest: %v", err)
	}

	// A throwaway copy-on-write overlay: the cached rootfs is never written.
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
		"-b", img.Rootfs, disk).CombinedOutput(); err != nil {
		t.Fatalf("vmtest: qemu-img create: %v: %s", err, out)
	}
	var seed string
	if o.Agent != nil {
		var err error
		if seed, err = makeSeed(dir, name, o.Agent); err != nil {
			t.Fatalf("vmtest: seed disk: %v", err)
		}
	}
	mem := o.MemoryMiB
	if mem == 0 {
		mem = defaultMemoryMiB
	}
	v.params = map[string]any{
		"Name":         name,
		"Owner":        owner(),
		"MemoryMiB":    mem,
		"Kernel":       xmlEscape(img.Kernel),
		"Initrd":       xmlEscape(img.Initrd),
		"Disk":         xmlEscape(disk),
		"Seed":         xmlEscape(seed),
		"Console":      xmlEscape(v.console),
		"AgentChannel": !o.NoAgentChannel,
		"Root":         xmlEscape(o.Root),
		"UUID":         "", // libvirt picks it
	}
	d, err := v.define(t)
	if err != nil {
		t.Fatalf("vmtest: define %s: %v", name, err)
	}
	v.Domain = d
	v.UUID = formatUUID(d.UUID)
	v.params["UUID"] = v.UUID // a redefinition must keep it
	return v
}

// define (re)defines the domain with a newly picked SSH port.
func (v *VM) define(t testing.TB) (libvirt.Domain, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return libvirt.Domain{}, err
	}
	v.params["SSHPort"] = port
	var x bytes.Buffer
	if err := domainTmpl.Execute(&x, v.params); err != nil {
		return libvirt.Domain{}, fmt.Errorf("domain XML: %w", err)
	}
	// For a human looking at a running test (virsh dumpxml shows it too).
	if err := os.WriteFile(filepath.Join(v.Dir, "domain.xml"), x.Bytes(), 0o644); err != nil {
		return libvirt.Domain{}, err
	}
	d, err := v.client(t).DomainDefineXML(x.String())
	if err != nil {
		return libvirt.Domain{}, err
	}
	v.SSHPort = port
	return d, nil
}

func formatUUID(u libvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// makeSeed makes the VM's seed disk: a small ext4 image built from a
// directory with mkfs.ext4 -d (no mount or loop device). The guest mounts
// it read-only at /seed.
func makeSeed(dir, name string, a *AgentSeed) (string, error) {
	token := a.Token
	if a.TokenFor != nil {
		token = a.TokenFor(name)
	}
	src := filepath.Join(dir, "seed")
	if err := os.Mkdir(src, 0o700); err != nil {
		return "", err
	}
	// The token leaves this directory only inside the image; the tree is
	// removed at once.
	defer os.RemoveAll(src)
	bin, err := os.ReadFile(a.Binary)
	if err != nil {
		return "", fmt.Errorf("agent binary: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"fleetpass-agent", bin, 0o755},
		{"server", []byte(a.ServerURL + "\n"), 0o644},
		{"fingerprint", []byte(a.Fingerprint + "\n"), 0o644},
		{"name", []byte(name + "\n"), 0o644},
		{"token", []byte(token + "\n"), 0o600},
	} {
		if err := os.WriteFile(filepath.Join(src, f.name), f.data, f.mode); err != nil {
			return "", err
		}
	}
	// Room for the files plus ext4's own overhead (journal, inodes).
	sizeMiB := len(bin)/(1<<20) + 16
	img := filepath.Join(dir, "seed.img")
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "seed", "-d", src,
		img, fmt.Sprintf("%dM", sizeMiB)).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	// The image holds the token: readable by QEMU's user only once libvirt
	// hands it over at start.
	if err := os.Chmod(img, 0o600); err != nil {
		return "", err
	}
	return img, nil
}

// client is the harness's libvirt connection, or a test failure.
func (v *VM) client(t testing.TB) *libvirt.Libvirt {
	t.Helper()
	c, err := v.l.client()
	if err != nil {
		v.fatalf(t, "%v", err)
	}
	return c
}

// cleanup removes the domain and its files; failed tests get the console
// tail first, since it usually says why.
func (v *VM) cleanup(t testing.TB) {
	if t.Failed() {
		if s := v.consoleTail(40); s != "" {
			t.Logf("vmtest: %s serial console (last lines):\n%s", v.Name, s)
		}
	}
	if v.Domain.Name != "" {
		c, err := v.l.client()
		if err == nil {
			err = removeDomain(c, v.Domain)
		}
		if err != nil {
			t.Errorf("vmtest: remove %s: %v", v.Name, err)
		}
	}
	if err := os.RemoveAll(v.Dir); err != nil {
		t.Errorf("vmtest: %v", err)
	}
}

// Start powers the VM on.
func (v *VM) Start(t testing.TB) {
	t.Helper()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := v.client(t).DomainCreate(v.Domain)
		if err == nil {
			break
		}
		// Another process took the SSH port between freePort and now:
		// QEMU then fails with "Could not set up host forwarding rule".
		// Redefining with another port is all it takes.
		if attempt < 4 && strings.Contains(err.Error(), "host forwarding") {
			t.Logf("vmtest: %s: port %d taken, picking another: %v", v.Name, v.SSHPort, err)
			if _, err := v.define(t); err != nil {
				v.fatalf(t, "redefine %s: %v", v.Name, err)
			}
			continue
		}
		v.fatalf(t, "start %s: %v", v.Name, err)
	}
	v.started = time.Now()
	t.Logf("vmtest: %s started (%v)", v.Name, v.started.Sub(start).Round(time.Millisecond))
}

// Destroy powers the VM off at once (virsh destroy); a VM that is off
// already is fine.
func (v *VM) Destroy(t testing.TB) {
	t.Helper()
	start := time.Now()
	if err := v.client(t).DomainDestroyFlags(v.Domain, 0); err != nil && !isNotRunning(err) {
		v.fatalf(t, "destroy %s: %v", v.Name, err)
	}
	t.Logf("vmtest: %s destroyed (%v)", v.Name, time.Since(start).Round(time.Millisecond))
}

var stateNames = map[libvirt.DomainState]string{
	libvirt.DomainNostate:     "nostate",
	libvirt.DomainRunning:     "running",
	libvirt.DomainBlocked:     "blocked",
	libvirt.DomainPaused:      "paused",
	libvirt.DomainShutdown:    "shutdown", // being shut down
	libvirt.DomainShutoff:     "shutoff",
	libvirt.DomainCrashed:     "crashed",
	libvirt.DomainPmsuspended: "pmsuspended",
}

// State is the domain's state as virsh's API names it: "running",
// "shutoff", "paused", ...
func (v *VM) State(t testing.TB) string {
	t.Helper()
	s, _, err := v.client(t).DomainGetState(v.Domain, 0)
	if err != nil {
		v.fatalf(t, "state of %s: %v", v.Name, err)
	}
	if n, ok := stateNames[libvirt.DomainState(s)]; ok {
		return n
	}
	return fmt.Sprintf("state-%d", s)
}

// WaitState waits until the domain is in state (see State).
func (v *VM) WaitState(t testing.TB, state string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	var last string
	for {
		if last = v.State(t); last == state {
			t.Logf("vmtest: %s is %s after %v", v.Name, state, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > timeout {
			v.fatalf(t, "%s still %s, not %s, after %v", v.Name, last, state, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AgentPing sends guest-ping to the guest agent once, waiting at most
// 2 s for the answer. A domain without the agent channel fails at once with
// libvirt's "guest agent is not configured".
func (v *VM) AgentPing() error {
	c, err := v.l.client()
	if err != nil {
		return err
	}
	_, err = c.QEMUDomainAgentCommand(v.Domain, `{"execute":"guest-ping"}`, 2, 0)
	return err
}

// WaitAgent waits until the guest agent answers guest-ping.
func (v *VM) WaitAgent(t testing.TB, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		err := v.AgentPing()
		if err == nil {
			t.Logf("vmtest: %s agent answers %v after the wait began%s", v.Name,
				time.Since(start).Round(time.Millisecond), v.sinceStart())
			return
		}
		if strings.Contains(err.Error(), "not configured") {
			v.fatalf(t, "%s: %v", v.Name, err) // waiting will not help
		}
		if time.Since(start) > timeout {
			v.fatalf(t, "%s: no answer to guest-ping after %v: %v", v.Name, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// WaitSSH waits until the guest's sshd greets on the forwarded port.
// Connecting is not enough: QEMU accepts on the host side before anything
// listens in the guest, and then closes.
func (v *VM) WaitSSH(t testing.TB, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	var err error
	for {
		if err = v.sshBanner(); err == nil {
			t.Logf("vmtest: %s sshd answers %v after the wait began%s", v.Name,
				time.Since(start).Round(time.Millisecond), v.sinceStart())
			return
		}
		if time.Since(start) > timeout {
			v.fatalf(t, "%s: sshd does not answer on 127.0.0.1:%d after %v: %v", v.Name, v.SSHPort, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (v *VM) sinceStart() string {
	if v.started.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (%v after Start)", time.Since(v.started).Round(time.Millisecond))
}

func (v *VM) sshBanner() error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(v.SSHPort)), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if n >= 4 && string(buf[:4]) == "SSH-" {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("not an SSH greeting: %q", buf[:n])
	}
	return err
}

// SetPassword sets user's password through the guest agent with libvirt's
// API (virDomainSetUserPassword). Never through virsh: the password would
// be in virsh's argv, readable by every process on the machine. The guests
// are Linux, so, as the libvirt driver does, only a crypt(3) hash of it
// crosses libvirtd, QEMU and the channel.
func (v *VM) SetPassword(t testing.TB, user, password string) {
	t.Helper()
	start := time.Now()
	secret, crypted, err := qga.GuestSecret(driver.OSLinux, []byte(password))
	if err != nil || !crypted {
		v.fatalf(t, "hash the password of %s for %s: crypted %v, %v", user, v.Name, crypted, err)
	}
	err = v.client(t).DomainSetUserPassword(v.Domain, libvirt.OptString{user}, libvirt.OptString{string(secret)},
		libvirt.DomainPasswordEncrypted)
	clear(secret)
	if err != nil {
		v.fatalf(t, "set the password of %s on %s: %v", user, v.Name, err)
	}
	t.Logf("vmtest: %s: password of %s set (%v)", v.Name, user, time.Since(start).Round(time.Millisecond))
}

// IgnoreShutdown makes the guest ignore shutdown requests, both the ACPI
// power button and the agent's guest-shutdown, until its next boot.
func (v *VM) IgnoreShutdown(t testing.TB, user, password string) {
	t.Helper()
	if out, err := v.SSH(user, password, "touch /run/ignore-shutdown"); err != nil {
		v.fatalf(t, "%s: ignore shutdown: %v: %s", v.Name, err, out)
	}
}

// BootID returns the guest's boot id, which changes at every boot.
func (v *VM) BootID(t testing.TB, user, password string) string {
	t.Helper()
	out, err := v.SSH(user, password, "cat /proc/sys/kernel/random/boot_id")
	if err != nil {
		v.fatalf(t, "%s: boot id: %v: %s", v.Name, err, out)
	}
	return strings.TrimSpace(out)
}

// ConsoleLog returns what the guest wrote on its serial console so far.
func (v *VM) ConsoleLog() string {
	b, _ := os.ReadFile(v.console)
	return string(b)
}

// Logs writes the serial console to the test log.
func (v *VM) Logs(t testing.TB) {
	t.Helper()
	t.Logf("vmtest: %s serial console:\n%s", v.Name, v.ConsoleLog())
}

func (v *VM) consoleTail(lines int) string {
	s := strings.TrimRight(v.ConsoleLog(), "\n")
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// fatalf fails the test with the end of the serial console, which usually
// tells why a guest did not come up.
func (v *VM) fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Fatalf("vmtest: %s\n--- %s serial console (last lines) ---\n%s", fmt.Sprintf(format, args...), v.Name, v.consoleTail(25))
}
