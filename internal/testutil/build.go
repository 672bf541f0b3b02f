package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

var builds struct {
	mu   sync.Mutex
	bins map[string]*build
}

type build struct {
	once  sync.Once
	index int
	path  string
	err   error
}

// BuildBinary builds the command pkg (an import path such as
// "github.com/fleetpass/fleetpass/cmd/fleetpass") once per test process
// and returns the binary's path. The binaries of a test process live in a
// directory named after its pid; a later build removes those of processes
// that have ended, so killed test runs leave nothing behind for long.
func BuildBinary(t testing.TB, pkg string, env ...string) string {
	t.Helper()
	key := fmt.Sprint(pkg, env)
	builds.mu.Lock()
	if builds.bins == nil {
		builds.bins = map[string]*build{}
	}
	b, ok := builds.bins[key]
	if !ok {
		b = &build{index: len(builds.bins)}
		builds.bins[key] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		dir, err := binDir()
		if err != nil {
			b.err = err
			return
		}
		// Named as the command is (a server finds its helpers by name),
		// one directory per build.
		sub := filepath.Join(dir, fmt.Sprint(b.index))
		if b.err = os.MkdirAll(sub, 0o700); b.err != nil {
			return
		}
		b.path = filepath.Join(sub, path.Base(pkg))
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func binDir() (string, error) {
	root := filepath.Join(os.TempDir(), "fleetpass-test-bin")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", err
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
	dir := filepath.Join(root, strconv.Itoa(os.Getpid()))
	return dir, os.MkdirAll(dir, 0o700)
}
