package qga

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

func TestCheckAddressDialsOnlyUnderTheOperatorsDirectories(t *testing.T) {
	allowed, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(allowed, "vms"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &Channel{SocketDirs: []string{allowed}}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{filepath.Join(allowed, "vm.sock"), true},
		{filepath.Join(allowed, "vms", "web-1.sock"), true},
		{allowed, false},
		{filepath.Join(outside, "vm.sock"), false},
		{filepath.Join(allowed, "..", filepath.Base(outside), "vm.sock"), false},
		{filepath.Join(allowed, "escape", "vm.sock"), false},
		{allowed + "-sibling/vm.sock", false},
		{"vm.sock", false},
		{"/run/systemd/private", false},
	} {
		err := c.CheckAddress(driver.Ref{Address: tc.path})
		if (err == nil) != tc.ok {
			t.Errorf("CheckAddress(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
	if err := (&Channel{SocketDirs: []string{}}).CheckAddress(driver.Ref{Address: filepath.Join(allowed, "vm.sock")}); err == nil {
		t.Error("an empty list of directories allowed a socket")
	}
	if err := (&Channel{}).CheckAddress(driver.Ref{Address: "/anywhere.sock"}); err != nil {
		t.Errorf("a channel without SocketDirs (library use) refused: %v", err)
	}
}
