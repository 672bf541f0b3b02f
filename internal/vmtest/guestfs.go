package vmtest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const guestfsScript = "scripts/vm/guestfs-kernel.sh"

var (
	guestfsMu  sync.Mutex
	guestfsEnv []string
)

// Guestfs returns the environment libguestfs needs on this machine, for
// disk resets in tests: the appliance kernel extracted by
// scripts/vm/guestfs-kernel.sh (cached in /var/cache/fleetpass/guestfs,
// about 10 s the first time), the appliance cache, the direct backend, and
// LIBGUESTFS_BACKEND_SETTINGS=force_tcg unless the environment sets it:
// on the test machines /dev/kvm exists but QEMU aborts on it (nested
// virtualisation), and libguestfs does not fall back by itself. It skips
// under -short and fails (never skips) when libguestfs is not installed.
func Guestfs(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("vmtest: libguestfs tests skipped under -short")
	}
	guestfsMu.Lock()
	defer guestfsMu.Unlock()
	if guestfsEnv != nil {
		return guestfsEnv
	}
	if _, err := exec.LookPath("libguestfs-test-tool"); err != nil {
		t.Fatalf("vmtest: libguestfs is not installed (scripts/install-test-deps.sh installs libguestfs-tools)")
	}
	start := time.Now()
	cmd := exec.Command("/bin/bash", filepath.Join(RepoRoot(t), guestfsScript))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vmtest: %s: %v\n%s", guestfsScript, err, stderr.Bytes())
	}
	env := []string{"LIBGUESTFS_BACKEND=direct"}
	if v, ok := os.LookupEnv("LIBGUESTFS_BACKEND_SETTINGS"); ok {
		env = append(env, "LIBGUESTFS_BACKEND_SETTINGS="+v)
	} else {
		env = append(env, "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.Contains(line, "=") {
			env = append(env, line)
		}
	}
	t.Logf("vmtest: libguestfs environment ready in %v: %v", time.Since(start).Round(time.Millisecond), env)
	guestfsEnv = env
	return env
}

var (
	helperOnce sync.Once
	helperPath string
	helperErr  error
)

// BuildDiskHelper builds ./cmd/fleetpass-diskreset (cgo, libguestfs) once
// per test binary into dir/fleetpass-diskreset, or, when dir is "", a
// directory of its own, and returns its path.
func BuildDiskHelper(t testing.TB, dir string) string {
	t.Helper()
	if dir != "" {
		return buildDiskHelper(t, filepath.Join(dir, "fleetpass-diskreset"))
	}
	helperOnce.Do(func() {
		d, err := os.MkdirTemp("", "fleetpass-diskreset-bin-")
		if err != nil {
			helperErr = err
			return
		}
		helperPath = filepath.Join(d, "fleetpass-diskreset")
		cmd := exec.Command("go", "build", "-o", helperPath, "./cmd/fleetpass-diskreset")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			helperErr = err
			t.Logf("%s", out)
		}
	})
	if helperErr != nil {
		t.Fatalf("vmtest: build fleetpass-diskreset: %v", helperErr)
	}
	return helperPath
}

func buildDiskHelper(t testing.TB, out string) string {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, "./cmd/fleetpass-diskreset")
	cmd.Dir = RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vmtest: build fleetpass-diskreset: %v\n%s", err, b)
	}
	return out
}
