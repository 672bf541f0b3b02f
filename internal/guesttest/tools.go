package guesttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// tools are the absolute paths of the programs a guest needs. sshd must be
// started by absolute path: it re-executes itself for each connection.
type tools struct {
	unshare, nsenter, cp string
	sshd, qemuGA         string
}

// installHint says how to get the tools, in every failure message.
const installHint = "real-guest tests need root and Debian's openssh-server, qemu-guest-agent and util-linux; " +
	"run the README's test command, which installs them (scripts/install-test-deps.sh), " +
	"or use `go test -short` to skip these tests"

// EnsureTools skips the test under `go test -short`, and otherwise fails it
// with a clear message unless everything a guest needs is there: root,
// mount and PID namespaces, unshare, nsenter, sshd, qemu-ga, useradd and
// chpasswd. Start calls it.
func EnsureTools(t testing.TB) {
	t.Helper()
	ensureTools(t)
}

func ensureTools(t testing.TB) tools {
	t.Helper()
	if testing.Short() {
		t.Skip("guesttest: real guests are skipped under -short")
	}
	tl, err := findTools()
	if err != nil {
		t.Fatalf("guesttest: %v\n%s", err, installHint)
	}
	return tl
}

func findTools() (tools, error) {
	if os.Geteuid() != 0 {
		return tools{}, errors.New("not running as root (guests need mount namespaces)")
	}
	var tl tools
	var errs []error
	for _, tool := range []struct {
		name string
		path *string
	}{
		{"unshare", &tl.unshare},
		{"nsenter", &tl.nsenter},
		{"cp", &tl.cp},
		{"sshd", &tl.sshd},
		{"qemu-ga", &tl.qemuGA},
		{"useradd", nil},
		{"chpasswd", nil},
		{"mount", nil},
		{"sh", nil},
	} {
		p, err := lookTool(tool.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if tool.path != nil {
			*tool.path = p
		}
	}
	if err := errors.Join(errs...); err != nil {
		return tools{}, err
	}
	// Namespaces may be forbidden (an unprivileged container): say so now
	// rather than with a puzzling failure later.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tl.unshare, "--mount", "--pid", "--fork", "--propagation", "private", "true").CombinedOutput()
	if err != nil {
		return tools{}, fmt.Errorf("cannot create mount and PID namespaces: %w: %s", err, out)
	}
	return tl, nil
}

// lookTool finds a program in PATH, or in the sbin directories a non-login
// root shell may lack in its PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}
