package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TempDirs are the directories WatchSecrets scans for new files.
var TempDirs = []string{os.TempDir(), "/tmp", "/var/tmp", "/dev/shm"}

// WatchSecrets scans, until the returned stop is called, every process's
// command line and environment, and every file created in TempDirs since
// the call, for any of secrets; stop fails the test naming where one
// showed. Scans run every 100 ms, so a process or file that lives longer
// than that is seen.
func WatchSecrets(t testing.TB, secrets ...[]byte) (stop func()) {
	t.Helper()
	since := time.Now().Add(-time.Second)
	done := make(chan struct{})
	var mu sync.Mutex
	found := map[string]bool{}
	holds := func(data []byte) bool {
		for _, s := range secrets {
			if len(s) > 0 && bytes.Contains(data, s) {
				return true
			}
		}
		return false
	}
	scan := func() {
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			for _, f := range []string{"cmdline", "environ"} {
				if data, err := os.ReadFile(filepath.Join(p, f)); err == nil && holds(data) {
					mu.Lock()
					found[filepath.Join(p, f)] = true
					mu.Unlock()
				}
			}
		}
		for _, dir := range TempDirs {
			filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() {
					// Three levels down is enough for libguestfs's and
					// QEMU's files; Go's build trees are not ours.
					rel, _ := filepath.Rel(dir, path)
					if strings.Count(rel, string(filepath.Separator)) >= 3 || strings.HasPrefix(d.Name(), "go-build") {
						return filepath.SkipDir
					}
					return nil
				}
				info, err := d.Info()
				if err != nil || info.ModTime().Before(since) || !info.Mode().IsRegular() || info.Size() > 32<<20 {
					return nil
				}
				if data, err := os.ReadFile(path); err == nil && holds(data) {
					mu.Lock()
					found[path] = true
					mu.Unlock()
				}
				return nil
			})
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			scan()
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() {
		t.Helper()
		close(done)
		wg.Wait()
		scan()
		mu.Lock()
		defer mu.Unlock()
		for where := range found {
			t.Errorf("a secret showed in %s", where)
		}
	}
}
