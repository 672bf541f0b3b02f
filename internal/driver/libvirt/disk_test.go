package libvirt

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/driver"
)

func writeImage(t *testing.T, head []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, append(head, make([]byte, 4096)...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func qcow2Header(cryptMethod uint32) []byte {
	h := make([]byte, 104)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], 3)
	binary.BigEndian.PutUint32(h[32:], cryptMethod)
	return h
}

func TestCheckImageRefusesWhatCannotBeOpened(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format string
		head   []byte
		want   error
	}{
		{"a plain raw image", "raw", []byte("\x00\x00"), nil},
		{"a plain qcow2 image", "qcow2", qcow2Header(0), nil},
		{"a LUKS raw image", "raw", []byte("LUKS\xba\xbe\x00\x01"), driver.ErrDiskUnsupported},
		{"an encrypted qcow2 image", "qcow2", qcow2Header(2), driver.ErrDiskUnsupported},
		{"a raw file said to be qcow2", "qcow2", []byte("hello"), driver.ErrDiskUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkImage(diskreset.Disk{Path: writeImage(t, tc.head), Format: tc.format})
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("checkImage = %v, want %v", err, tc.want)
			}
		})
	}
	if err := checkImage(diskreset.Disk{Path: "/nonexistent/disk.img", Format: "raw"}); !errors.Is(err, driver.ErrDiskUnsupported) {
		t.Fatalf("a missing image: %v", err)
	}
}

func TestCheckUnlockedSeesAnotherHoldersLock(t *testing.T) {
	p := writeImage(t, nil)
	if err := checkUnlocked(p); err != nil {
		t.Fatalf("an unused image: %v", err)
	}
	// An open file description lock of another open, as QEMU takes them.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: 201, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if err := checkUnlocked(p); !errors.Is(err, driver.ErrDiskInUse) {
		t.Fatalf("an image another open holds: %v, want ErrDiskInUse", err)
	}
}

func TestCheckUnlockedSeesQEMUsLock(t *testing.T) {
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-nbd (qemu-utils) is missing")
		}
		t.Skip("qemu-nbd (qemu-utils) is not installed")
	}
	p := writeImage(t, nil)
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command("qemu-nbd", "-f", "raw", "-k", sock, p)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// qemu-nbd locks the image once it opened it, around the time its
	// socket appears.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := checkUnlocked(p)
		if errors.Is(err, driver.ErrDiskInUse) {
			return
		}
		if time.Now().After(deadline) {
			_, serr := os.Stat(sock)
			t.Fatalf("an image qemu-nbd serves: %v, want ErrDiskInUse (socket: %v)", err, serr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDiskPathRefusesDisksTheServerCannotOpen(t *testing.T) {
	d := New(Config{})
	o := op{what: "libvirt: host h: domain d: check disk"}
	for _, tc := range []struct {
		name string
		disk diskXML
		want string // the resolved path, or "" for a refusal
	}{
		{"a qcow2 file", diskXML{Type: "file", Format: "qcow2", File: "/v/a.qcow2"}, "/v/a.qcow2"},
		{"a block device, raw by default", diskXML{Type: "block", Dev: "/dev/vg/lv"}, "/dev/vg/lv"},
		{"a network disk", diskXML{Type: "network", Protocol: "rbd"}, ""},
		{"an encrypted file", diskXML{Type: "file", Format: "qcow2", File: "/v/a.qcow2", Encrypted: true}, ""},
		{"a vmdk file", diskXML{Type: "file", Format: "vmdk", File: "/v/a.vmdk"}, ""},
		{"an empty drive", diskXML{Type: "file", Format: "raw"}, ""},
		{"a dir disk", diskXML{Type: "dir", File: "/v"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := d.diskPath(context.Background(), o, tc.disk)
			if tc.want == "" {
				if !errors.Is(err, driver.ErrDiskUnsupported) {
					t.Fatalf("diskPath = %+v, %v; want ErrDiskUnsupported", got, err)
				}
				return
			}
			if err != nil || got.Path != tc.want {
				t.Fatalf("diskPath = %+v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestWithoutADiskEditorDiskResetsAreUnavailable(t *testing.T) {
	d := New(Config{DiskUnavailable: "no helper here"})
	if ok, why := d.DiskResets(); ok || why != "no helper here" {
		t.Fatalf("DiskResets = %v, %q", ok, why)
	}
	err := d.CheckDisk(context.Background(), driver.Ref{Address: "00000000-0000-0000-0000-000000000001"})
	if !errors.Is(err, driver.ErrDiskResetUnavailable) {
		t.Fatalf("CheckDisk = %v, want ErrDiskResetUnavailable", err)
	}
}
