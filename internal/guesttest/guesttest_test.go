package guesttest_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/qga"
)

// hostFiles snapshots the host files a guest must never touch, and checks
// them again when the test ends.
func hostFiles(t *testing.T) {
	t.Helper()
	guesttest.EnsureTools(t) // before reading /etc/shadow, which needs root
	sum := func() map[string][32]byte {
		m := map[string][32]byte{}
		for _, f := range []string{"/etc/shadow", "/etc/passwd", "/etc/group", "/etc/gshadow", "/etc/ssh/sshd_config"} {
			b, err := os.ReadFile(f)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			m[f] = sha256.Sum256(b)
		}
		return m
	}
	before := sum()
	t.Cleanup(func() {
		for f, h := range sum() {
			if h != before[f] {
				t.Errorf("the host's %s changed", f)
			}
		}
	})
}

// noHostMounts checks that none of the guest's mounts is visible on the host.
func noHostMounts(t *testing.T, g *guesttest.Guest) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSuffix(g.QGASocket(), "/qga/qga.sock")
	if strings.Contains(string(b), dir) {
		t.Errorf("a guest mount is visible on the host:\n%s", b)
	}
}

func wantLogin(t *testing.T, g *guesttest.Guest, user, password string) {
	t.Helper()
	if err := g.CheckLogin(user, password); err != nil {
		t.Fatalf("login as %s with the right password: %v", user, err)
	}
}

func wantAuthFailure(t *testing.T, g *guesttest.Guest, user, password string) {
	t.Helper()
	if err := g.CheckLogin(user, password); !errors.Is(err, guesttest.ErrAuthFailed) {
		t.Fatalf("login as %s with a wrong password: %v, want ErrAuthFailed", user, err)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	hostFiles(t)
	g := guesttest.Start(t, guesttest.Options{Users: []guesttest.UserSpec{
		{Name: "alice", Password: "Alice-pw-1"},
		{Name: "carol", Password: "Carol-pw-1"},
	}})
	wantLogin(t, g, "alice", "Alice-pw-1")
	wantLogin(t, g, "carol", "Carol-pw-1")
	wantAuthFailure(t, g, "alice", "Carol-pw-1")
	wantAuthFailure(t, g, "nobody-here", "Alice-pw-1")
	noHostMounts(t, g)
	if host, _, _ := net.SplitHostPort(g.SSHAddr()); !strings.HasPrefix(host, "127.") || host == "127.0.0.1" {
		t.Errorf("sshd on %s, want a loopback address of its own", g.SSHAddr())
	}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "\nalice:") {
		t.Error("alice is in the host's /etc/passwd")
	}
	// The guest sees its own processes only.
	out, err := g.Run("cat", "/proc/1/cmdline")
	if err != nil || !strings.HasPrefix(out, "/bin/sh") {
		t.Errorf("pid 1 in the guest: %q, %v", out, err)
	}
}

func TestChpasswdInGuest(t *testing.T) {
	t.Parallel()
	hostFiles(t)
	g := guesttest.Start(t, guesttest.Options{Users: []guesttest.UserSpec{{Name: "alice", Password: "Old-pw-123"}}})
	if err := g.SetPassword("alice", "New-pw-456"); err != nil {
		t.Fatal(err)
	}
	wantLogin(t, g, "alice", "New-pw-456")
	wantAuthFailure(t, g, "alice", "Old-pw-123")
	out, err := g.Run("getent", "shadow", "alice")
	if err != nil || !strings.HasPrefix(out, "alice:$y$") {
		t.Errorf("guest shadow entry: %q, %v", out, err)
	}
}

func TestPowerCycle(t *testing.T) {
	t.Parallel()
	hostFiles(t)
	g := guesttest.Start(t, guesttest.Options{Users: []guesttest.UserSpec{{Name: "alice", Password: "First-pw-1"}}})

	// A session that is still open when the power goes must be cut.
	sess := openSession(t, g, "alice", "First-pw-1")
	if err := sess.Start("sleep 600"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- sess.Wait() }()

	start := time.Now()
	g.PowerOff()
	t.Logf("power off took %v", time.Since(start))
	if g.Running() {
		t.Error("Running after PowerOff")
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Error("an SSH session survived PowerOff")
	}
	err := g.CheckLogin("alice", "First-pw-1")
	if err == nil || errors.Is(err, guesttest.ErrAuthFailed) {
		t.Fatalf("login to a powered-off guest: %v, want a connection failure", err)
	}

	start = time.Now()
	g.PowerOn()
	t.Logf("power on took %v", time.Since(start))
	wantLogin(t, g, "alice", "First-pw-1")

	// An offline change, made while the guest is off, is there after boot.
	g.PowerOff()
	if err := g.SetPassword("alice", "Second-pw-2"); err != nil {
		t.Fatalf("chpasswd while powered off: %v", err)
	}
	g.PowerOn()
	wantLogin(t, g, "alice", "Second-pw-2")
	wantAuthFailure(t, g, "alice", "First-pw-1")
	noHostMounts(t, g)
}

func openSession(t *testing.T, g *guesttest.Guest, user, password string) *ssh.Session {
	t.Helper()
	c, err := ssh.Dial("tcp", g.SSHAddr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQGASetPassword is the end-to-end proof: the real qemu-ga, driven by
// qga.Channel, changes the password sshd checks.
func TestQGASetPassword(t *testing.T) {
	t.Parallel()
	hostFiles(t)
	g := guesttest.Start(t, guesttest.Options{
		Users: []guesttest.UserSpec{{Name: "bob", Password: "Old-pw-123"}},
		QGA:   true,
	})
	ch := &qga.Channel{}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ref := g.Ref()

	if err := ch.Ping(ctx, ref); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	newPassword := "N3w-Passw0rd!"
	start := time.Now()
	if err := ch.SetPassword(ctx, ref, "bob", []byte(newPassword)); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	t.Logf("SetPassword took %v", time.Since(start))
	wantLogin(t, g, "bob", newPassword)
	wantAuthFailure(t, g, "bob", "Old-pw-123")

	// Setting the same password again is harmless.
	if err := ch.SetPassword(ctx, ref, "bob", []byte(newPassword)); err != nil {
		t.Fatalf("SetPassword again: %v", err)
	}
	wantLogin(t, g, "bob", newPassword)

	err := ch.SetPassword(ctx, ref, "nosuchuser", []byte(newPassword))
	if !errors.Is(err, driver.ErrUserNotFound) {
		t.Fatalf("SetPassword for a missing user: %v, want ErrUserNotFound", err)
	}
	t.Logf("missing user: %v", err)

	// Offline: powered off, the agent is not alive; powered on, it is, and
	// the password stayed.
	g.PowerOff()
	if err := ch.Ping(ctx, ref); !errors.Is(err, driver.ErrGuestNotAlive) {
		t.Fatalf("Ping of a powered-off guest: %v", err)
	}
	g.PowerOn()
	if err := ch.Ping(ctx, ref); err != nil {
		t.Fatalf("Ping after power on: %v", err)
	}
	wantLogin(t, g, "bob", newPassword)

	log := g.QGALog()
	for _, secret := range []string{newPassword, base64.StdEncoding.EncodeToString([]byte(newPassword))} {
		if strings.Contains(log, secret) || strings.Contains(g.SSHDLog(), secret) {
			t.Errorf("a log holds the password (%q)", secret)
		}
	}
	noHostMounts(t, g)
}
