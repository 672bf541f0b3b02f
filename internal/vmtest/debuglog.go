package vmtest

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// adminURI is libvirtd's administration interface (virt-admin).
const adminURI = "libvirtd:///system"

// DebugQEMULog makes libvirtd log its QEMU driver at debug level to the file
// path, besides its usual outputs, until the returned stop is called (or the
// test ends): then it restores the filters and outputs libvirtd had. At that
// level libvirtd logs every command it sends to a guest agent, so a test can
// look in the file for what crossed libvirtd. The settings are libvirtd's
// and so every test binary's: only call it while holding the VM session,
// which every test that called Libvirtd does.
func (l *Libvirt) DebugQEMULog(t testing.TB, path string) (stop func()) {
	t.Helper()
	if _, err := exec.LookPath("virt-admin"); err != nil {
		t.Fatalf("vmtest: virt-admin (libvirt-clients) is missing: %s", installHint)
	}
	filters, err := adminSetting("daemon-log-filters", "Logging filters:")
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	outputs, err := adminSetting("daemon-log-outputs", "Logging outputs:")
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	// Filter "1:qemu" lets debug messages of every category whose name
	// holds "qemu" (the driver, its monitor and agent code) through; the
	// usual outputs keep their own, higher levels.
	if _, err := virtAdmin("daemon-log-outputs", strings.TrimSpace(outputs+" 1:file:"+path)); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	if _, err := virtAdmin("daemon-log-filters", "1:qemu"); err != nil {
		_, _ = virtAdmin("daemon-log-outputs", outputs)
		t.Fatalf("vmtest: %v", err)
	}
	t.Logf("vmtest: libvirtd logs its QEMU driver at debug level to %s (filters were %q, outputs %q)", path, filters, outputs)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			// Filters first, so that nothing is logged at debug level
			// to the usual outputs in between.
			if _, err := virtAdmin("daemon-log-filters", filters); err != nil {
				t.Errorf("vmtest: restore libvirtd's log filters %q: %v", filters, err)
			}
			if _, err := virtAdmin("daemon-log-outputs", outputs); err != nil {
				t.Errorf("vmtest: restore libvirtd's log outputs %q: %v", outputs, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// adminSetting reads one of libvirtd's logging settings, printed by
// virt-admin as " Logging filters: 1:qemu 3:util".
func adminSetting(cmd, label string) (string, error) {
	out, err := virtAdmin(cmd)
	if err != nil {
		return "", err
	}
	_, value, ok := strings.Cut(out, label)
	if !ok {
		return "", fmt.Errorf("virt-admin %s: no %q in %q", cmd, label, out)
	}
	return strings.TrimSpace(value), nil
}

// virtAdmin runs virt-admin against libvirtd. An empty argument is passed
// as one (virt-admin daemon-log-filters "" resets the filters).
func virtAdmin(args ...string) (string, error) {
	cmd := exec.Command("virt-admin", append([]string{"-c", adminURI}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("virt-admin %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return out.String(), nil
}
