package diskreset_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The fleetpass binary must stay pure Go: libguestfs and libcrypt are the
// helper's alone.
func TestTheServerBinaryLinksNeitherLibguestfsNorCgoOfOurs(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{len .CgoFiles}}",
		"github.com/fleetpass/fleetpass/cmd/fleetpass").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, cgo, _ := strings.Cut(line, " ")
		if strings.Contains(pkg, "guestfs") || strings.Contains(pkg, "libcrypt") {
			t.Errorf("cmd/fleetpass depends on %s", pkg)
		}
		if strings.HasPrefix(pkg, "github.com/fleetpass/fleetpass/") && cgo != "0" {
			t.Errorf("cmd/fleetpass depends on %s, which uses cgo", pkg)
		}
	}
}
