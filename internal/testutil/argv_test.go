package testutil

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps the failures Check reports instead
// of failing the test that holds it.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

// startProcess runs sh (named by its argv[0] "fleetpass-argv-test") with
// args for the rest of the test.
func startProcess(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", "sleep 60; :", "fleetpass-argv-test"}, args...)...)
	cmd.Args[0] = "fleetpass-argv-test"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func (w *ArgvWatch) sightings(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[name]
}

func TestArgvWatchPassesWhenItWatchedTheProcessAndSawNoSecret(t *testing.T) {
	startProcess(t, "harmless")
	w := WatchArgv(t, "Argv-Secret-0815")
	w.Expect("fleetpass-argv-test")
	WaitFor(t, time.Minute, "sightings", func() bool { return w.sightings("fleetpass-argv-test") >= MinSightings })
	r := &recorder{TB: t}
	w.Check(r)
	if len(r.errors) > 0 {
		t.Fatalf("Check failed: %v", r.errors)
	}
}

func TestArgvWatchFindsASecretInAProcesssArguments(t *testing.T) {
	const secret = "Argv-Secret-0816"
	startProcess(t, "--password", secret)
	w := WatchArgv(t, secret)
	w.Expect("fleetpass-argv-test")
	WaitFor(t, time.Minute, "sightings", func() bool { return w.sightings("fleetpass-argv-test") >= MinSightings })
	r := &recorder{TB: t}
	w.Check(r)
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "a secret appeared") {
		t.Fatalf("Check reported %q, want one failure: the secret in an argv", r.errors)
	}
	if strings.Contains(r.errors[0], secret) {
		t.Error("the failure message holds the secret itself")
	}
}

// A watch that never overlapped the process the secret goes through
// proves nothing, and must say so rather than pass.
func TestArgvWatchFailsWhenItNeverSawTheExpectedProcess(t *testing.T) {
	w := WatchArgv(t, "Argv-Secret-0817")
	w.Expect("fleetpass-never-started")
	r := &recorder{TB: t}
	w.Check(r)
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "fleetpass-never-started") {
		t.Fatalf("Check reported %q, want one failure: the expected process unseen", r.errors)
	}
}

func TestArgvWatchThatExpectsNoProcessFails(t *testing.T) {
	w := WatchArgv(t, "Argv-Secret-0818")
	WaitFor(t, time.Minute, "a few scans", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.scans >= MinSightings
	})
	r := &recorder{TB: t}
	w.Check(r)
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "expected no process") {
		t.Fatalf("Check reported %q, want one failure: no process expected", r.errors)
	}
}
