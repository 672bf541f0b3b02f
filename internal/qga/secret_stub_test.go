//go:build !cgo || !linux

package qga

import (
	"errors"
	"slices"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
)

// Run with CGO_ENABLED=0: a build without libcrypt cannot hash, and must
// not fall back to sending a Linux guest the password.
func TestWithoutLibcryptALinuxGuestGetsNothingAndOthersThePassword(t *testing.T) {
	f := userAgent("{\"return\": {}}\n", 0, true)
	path := f.listen(t)
	err := (&Channel{}).SetPassword(testContext(t), driver.Ref{Address: path, OSType: driver.OSLinux}, "alice", []byte("Secret-123"))
	if !errors.Is(err, libcrypt.ErrUnavailable) {
		t.Fatalf("SetPassword of a Linux guest: %v, want libcrypt.ErrUnavailable", err)
	}
	if slices.Contains(f.executes(), "guest-set-user-password") {
		t.Fatal("the agent was sent guest-set-user-password")
	}
	if err := (&Channel{}).SetPassword(testContext(t), driver.Ref{Address: path, OSType: "windows"}, "alice", []byte("Secret-123")); err != nil {
		t.Fatalf("SetPassword of a Windows guest: %v", err)
	}
}
