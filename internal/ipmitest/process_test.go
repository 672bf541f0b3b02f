package ipmitest_test

import (
	"os/exec"
	"testing"

	"github.com/fleetpass/fleetpass/internal/ipmitest"
)

// TestProcessChassisLeavesNoProcess: power off at once after power on, many
// times, leaves no process of any boot behind.
func TestProcessChassisLeavesNoProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes in PID namespaces")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare (util-linux) not found")
	}
	c := &ipmitest.ProcessChassis{}
	t.Cleanup(c.Close)
	for range 100 {
		if err := c.SetPower(true); err != nil {
			t.Fatal(err)
		}
		if err := c.SetPower(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if left := c.Leftovers(); len(left) > 0 {
		t.Fatalf("processes left behind: %v", left)
	}
}
