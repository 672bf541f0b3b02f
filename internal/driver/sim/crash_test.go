//go:build unix

package sim_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
)

// TestCrash kills a process that uses a fleet file with SIGKILL and checks
// that every change it reported done survived.
func TestCrash(t *testing.T) {
	if path := os.Getenv("SIM_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "fleet.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), "SIM_CRASH_CHILD="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\n%s", err, out)
	}

	f := openFile(t, path, sim.Options{})
	ctx := t.Context()
	list, err := f.List(ctx)
	must(t, err)
	if len(list) != 100 {
		t.Fatalf("%d machines after the crash, want 100", len(list))
	}
	for _, s := range list {
		wantPassword(t, f, s.ID, "root", "Crash-pass-"+s.ID, true)
		if s.Power != driver.PowerStopping || !s.Faults.HangShutdown {
			t.Errorf("%s: %s with faults %+v, want stopping with a hung shutdown", s.ID, s.Power, s.Faults)
		}
	}
}

// crashChild makes changes to a fleet and kills itself before closing it.
func crashChild(path string) {
	ctx := context.Background()
	f, err := sim.Open(ctx, path, sim.Options{})
	if err != nil {
		panic(err)
	}
	for i := range 100 {
		id := fmt.Sprintf("m%03d", i)
		ref := driver.Ref{Address: id}
		steps := []error{
			f.Add(ctx, sim.Machine{ID: id, Running: true, Faults: sim.Faults{HangShutdown: true}}),
			f.SetPassword(ctx, ref, "root", []byte("Crash-pass-"+id)),
			f.Shutdown(ctx, ref),
		}
		if err := errors.Join(steps...); err != nil {
			panic(err)
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // not reached
}
