package diskreset_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

// These tests run the real helper, with the real libguestfs appliance, on
// a small ext4 image made with mkfs.ext4 -d: no VM image needed, each edit
// about 15 s under software emulation.

const fixtureShadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n"

// fixture makes a raw ext4 image holding /etc/shadow (0640 root:shadow),
// /etc/passwd and a Debian PAM configuration asking for yescrypt.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for path, content := range map[string]string{
		"etc/passwd":                "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
		"etc/shadow":                fixtureShadow,
		"etc/pam.d/common-password": "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n",
	} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shadow := filepath.Join(root, "etc/shadow")
	if err := os.Chmod(shadow, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(shadow, 0, 42); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// debugfs runs a read-only debugfs request on an ext4 image.
func debugfs(t *testing.T, img, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, img).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", request, err)
	}
	return string(out)
}

func runner(t *testing.T) *diskreset.Runner {
	t.Helper()
	env := vmtest.Guestfs(t)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return &diskreset.Runner{Path: vmtest.BuildDiskHelper(t, ""), Timeout: 5 * time.Minute}
}

func TestTheHelperReplacesOneUsersHashAtomicallyAndReadsItBack(t *testing.T) {
	r := runner(t)
	if p, err := r.Probe(t.Context()); err != nil || !p.OK {
		t.Fatalf("probe: %+v, %v", p, err)
	}
	img := fixture(t)
	inodeBefore := debugfs(t, img, "stat /etc/shadow")
	pw := []byte("Fleet-Pass-42x")
	stop := vmtest.WatchSecrets(t, pw)
	res, err := r.Reset(t.Context(), diskreset.Request{Disks: []diskreset.Disk{{Path: img, Format: "raw"}},
		Root: "/dev/sda", User: "alice"}, pw)
	stop()
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	t.Logf("result: %+v", res)
	if res.Method != "yescrypt" || res.MethodSource != "/etc/pam.d/common-password" {
		t.Errorf("method %s from %s, want yescrypt from the guest's PAM", res.Method, res.MethodSource)
	}
	got := debugfs(t, img, "cat /etc/shadow")
	before, after := strings.Split(fixtureShadow, "\n"), strings.Split(got, "\n")
	if len(before) != len(after) || before[0] != after[0] || before[1] != after[1] || before[3] != after[3] {
		t.Fatalf("lines other than alice's changed:\n%s", got)
	}
	f := strings.Split(after[2], ":")
	if f[0] != "alice" || !strings.HasPrefix(f[1], "$y$") || f[2] == "19000" || strings.Join(f[3:], ":") != "0:99999:7:::" {
		t.Fatalf("alice's line: %q", after[2])
	}
	if ok, err := libcrypt.Verify(pw, f[1]); !ok || err != nil {
		t.Fatalf("the new hash does not verify the password: %v", err)
	}
	st := debugfs(t, img, "stat /etc/shadow")
	if !strings.Contains(st, "Mode:  0640") || !strings.Contains(st, "User:     0   Group:    42") {
		t.Errorf("owner or mode not kept:\n%s", st)
	}
	if inode(inodeBefore) == inode(st) {
		t.Errorf("the same inode: the file was edited in place, not replaced by a rename")
	}
	if ls := debugfs(t, img, "ls -l /etc"); strings.Contains(ls, "shadow.fleetpass") {
		t.Errorf("the temporary file was left beside /etc/shadow:\n%s", ls)
	}
	leftovers, _ := filepath.Glob(filepath.Join(os.TempDir(), "libguestfs*"))
	for _, l := range leftovers {
		if st, err := os.Stat(l); err == nil && time.Since(st.ModTime()) < time.Minute {
			t.Errorf("libguestfs left %s behind", l)
		}
	}
}

func inode(stat string) string {
	i := strings.Index(stat, "Inode:")
	if i < 0 {
		return ""
	}
	return strings.Fields(stat[i+len("Inode:"):])[0]
}

func TestTheHelperReportsAMissingUser(t *testing.T) {
	r := runner(t)
	img := fixture(t)
	_, err := r.Reset(t.Context(), diskreset.Request{Disks: []diskreset.Disk{{Path: img, Format: "raw"}},
		Root: "/dev/sda", User: "nobody-here"}, []byte("Fleet-Pass-42x"))
	if !errors.Is(err, driver.ErrUserNotFound) {
		t.Fatalf("err = %v, want ErrUserNotFound", err)
	}
	if got := debugfs(t, img, "cat /etc/shadow"); got != fixtureShadow {
		t.Fatalf("/etc/shadow changed:\n%s", got)
	}
}

func TestTheHelperRefusesADiskAnotherProcessHolds(t *testing.T) {
	r := runner(t)
	img := fixture(t)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	nbd := exec.Command("qemu-nbd", "-f", "raw", "-k", sock, img)
	if err := nbd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nbd.Process.Kill(); nbd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_, err := r.Reset(ctx, diskreset.Request{Disks: []diskreset.Disk{{Path: img, Format: "raw"}},
		Root: "/dev/sda", User: "alice"}, []byte("Fleet-Pass-42x"))
	if !errors.Is(err, driver.ErrDiskInUse) {
		t.Fatalf("err = %v, want ErrDiskInUse", err)
	}
	nbd.Process.Kill()
	nbd.Wait()
	if got := debugfs(t, img, "cat /etc/shadow"); got != fixtureShadow {
		t.Fatalf("/etc/shadow changed:\n%s", got)
	}
}

func TestTheHelperRefusesABadRequest(t *testing.T) {
	r := runner(t)
	_, err := r.Reset(t.Context(), diskreset.Request{User: "root"}, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "no disks") {
		t.Fatalf("err = %v", err)
	}
}
