package libvirt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	lv "github.com/digitalocean/go-libvirt"
	"golang.org/x/sys/unix"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/qga"
)

var _ driver.DiskEditor = (*Driver)(nil)

// DiskResetter edits a shut-off domain's disk (diskreset.Runner, which runs
// the fleetpass-diskreset helper).
type DiskResetter interface {
	Reset(ctx context.Context, req diskreset.Request, password []byte) (diskreset.Result, error)
}

// diskFormats are the image formats disk resets open. Each is named to
// libguestfs explicitly (never probed: a raw image whose content looks like
// a qcow2 header must not be read as one).
var diskFormats = map[string]bool{"raw": true, "qcow2": true}

// DiskResets reports whether the driver can reset passwords by editing
// disks, and why not.
func (d *Driver) DiskResets() (bool, string) {
	if d.cfg.Disk == nil {
		return false, d.cfg.DiskUnavailable
	}
	return true, ""
}

// CheckDisk implements driver.DiskEditor: it refuses, before any power
// action, a domain whose disk a reset cannot edit: on a remote host, a
// Windows guest, a network, encrypted or unsupported disk, or (once the
// domain is off) a disk another process holds.
func (d *Driver) CheckDisk(ctx context.Context, ref driver.Ref) error {
	_, _, err := d.diskRequest(ctx, ref, "check disk", false)
	return err
}

// EditDisk implements driver.DiskEditor through the fleetpass-diskreset
// helper. The domain must be shut off.
func (d *Driver) EditDisk(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	if err := qga.CheckUser(user); err != nil {
		return fmt.Errorf("libvirt: edit disk: %w", err)
	}
	if len(password) == 0 {
		return errors.New("libvirt: edit disk: empty password")
	}
	req, what, err := d.diskRequest(ctx, ref, fmt.Sprintf("edit disk for user %q", user), true)
	if err != nil {
		return err
	}
	req.User, req.Instance = user, ref.InstanceID
	if _, err := d.cfg.Disk.Reset(ctx, req, password); err != nil {
		return scrub(fmt.Errorf("%s: %w", what, err), password)
	}
	return nil
}

// diskRequest reads the domain and makes the helper's request; off says
// the domain must be shut off (the edit), rather than may run (the check
// before shutting it down).
func (d *Driver) diskRequest(ctx context.Context, ref driver.Ref, what string, off bool) (diskreset.Request, string, error) {
	var req diskreset.Request
	if d.cfg.Disk == nil {
		why := d.cfg.DiskUnavailable
		if why == "" {
			why = "no disk editor is configured"
		}
		return req, what, fmt.Errorf("libvirt: %s: %w: %s", what, driver.ErrDiskResetUnavailable, why)
	}
	o, err := d.domain(ctx, ref, what)
	if err != nil {
		return req, what, err
	}
	h, _, err := d.host(ctx, ref.Host)
	if err != nil {
		return req, o.what, err
	}
	if h.t.transport != transportUnix {
		return req, o.what, fmt.Errorf("%s: host %s is reached over %s, and its disks are on that machine: disk resets work on the local host only: %w",
			o.what, h.id, h.t.transport, driver.ErrDiskUnsupported)
	}
	x, err := await(ctx, d.cfg.CallTimeout, func() (string, error) {
		// Inactive XML would miss a running domain's transient disks; the
		// live XML of a shut-off domain is its persistent one.
		return o.l.DomainGetXMLDesc(o.dom, 0)
	})
	if err != nil {
		return req, o.what, classify(o.what+": read domain XML", err)
	}
	info, err := parseDomainXML([]byte(x))
	if err != nil {
		return req, o.what, fmt.Errorf("%s: %w", o.what, err)
	}
	if info.OSType == "windows" {
		return req, o.what, fmt.Errorf("%s: a Windows guest: disk resets edit Linux's /etc/shadow only: %w", o.what, driver.ErrDiskUnsupported)
	}
	st, err := d.rawState(ctx, o.l, o.dom)
	if err != nil {
		return req, o.what, classify(o.what+": read state", err)
	}
	shutOff := st.state == lv.DomainShutoff || st.state == lv.DomainCrashed
	if off && !shutOff {
		return req, o.what, fmt.Errorf("%s: the domain is %s, not shut off, so its disk is in use: %w",
			o.what, mapState(st.state, st.reason), driver.ErrDiskInUse)
	}
	req.Root = info.Root
	for _, dx := range info.Disks {
		if dx.Device != "" && dx.Device != "disk" {
			continue // cdrom, floppy, lun
		}
		disk, err := d.diskPath(ctx, o, dx)
		if err != nil {
			return req, o.what, err
		}
		if err := checkImage(disk); err != nil {
			return req, o.what, fmt.Errorf("%s: disk %s: %w", o.what, dx.Target, err)
		}
		// The domain's own QEMU holds its disks while it runs; once it is
		// off, any holder is another process.
		if shutOff && !disk.ReadOnly {
			if err := checkUnlocked(disk.Path); err != nil {
				return req, o.what, fmt.Errorf("%s: disk %s: %w", o.what, dx.Target, err)
			}
		}
		req.Disks = append(req.Disks, disk)
	}
	if len(req.Disks) == 0 {
		return req, o.what, fmt.Errorf("%s: the domain has no disk: %w", o.what, driver.ErrDiskUnsupported)
	}
	return req, o.what, nil
}

// diskPath resolves a <disk> to a local image and its format.
func (d *Driver) diskPath(ctx context.Context, o op, dx diskXML) (diskreset.Disk, error) {
	disk := diskreset.Disk{Format: dx.Format, ReadOnly: dx.ReadOnly}
	if disk.Format == "" {
		disk.Format = "raw" // libvirt's own default: it never probes either
	}
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("%s: disk %s: %s: %w", o.what, dx.Target, fmt.Sprintf(format, args...), driver.ErrDiskUnsupported)
	}
	switch dx.Type {
	case "file", "":
		disk.Path = dx.File
	case "block":
		disk.Path = dx.Dev
	case "volume":
		p, err := await(ctx, d.cfg.CallTimeout, func() (string, error) {
			pool, err := o.l.StoragePoolLookupByName(dx.Pool)
			if err != nil {
				return "", err
			}
			vol, err := o.l.StorageVolLookupByName(pool, dx.Volume)
			if err != nil {
				return "", err
			}
			return o.l.StorageVolGetPath(vol)
		})
		if err != nil {
			return disk, unsupported("storage volume %s/%s: %v", dx.Pool, dx.Volume, err)
		}
		disk.Path = p
	case "network":
		return disk, unsupported("a %s network disk, which the server cannot open", dx.Protocol)
	default:
		return disk, unsupported("disk type %q is not supported", dx.Type)
	}
	if disk.Path == "" {
		return disk, unsupported("no source (an empty drive)")
	}
	if dx.Encrypted {
		return disk, unsupported("an encrypted disk")
	}
	if !diskFormats[disk.Format] {
		return disk, unsupported("format %q is not supported (raw and qcow2 are)", disk.Format)
	}
	return disk, nil
}

// checkImage refuses images fleetpass cannot open: missing, unreadable,
// or encrypted (LUKS, qcow2's own encryption) with a key it does not have.
func checkImage(disk diskreset.Disk) error {
	f, err := os.Open(disk.Path)
	if err != nil {
		return fmt.Errorf("%w: %w", driver.ErrDiskUnsupported, err)
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: read %s: %w", driver.ErrDiskUnsupported, disk.Path, err)
	}
	head = head[:n]
	switch disk.Format {
	case "raw":
		if bytes.HasPrefix(head, []byte("LUKS\xba\xbe")) {
			return fmt.Errorf("%s is LUKS-encrypted: %w", disk.Path, driver.ErrDiskUnsupported)
		}
	case "qcow2":
		if len(head) < 36 || !bytes.HasPrefix(head, []byte("QFI\xfb")) {
			return fmt.Errorf("%s is not a qcow2 image: %w", disk.Path, driver.ErrDiskUnsupported)
		}
		if binary.BigEndian.Uint32(head[32:36]) != 0 {
			return fmt.Errorf("%s is an encrypted qcow2 image: %w", disk.Path, driver.ErrDiskUnsupported)
		}
	}
	return nil
}

// checkUnlocked tells whether another process holds a lock on the image:
// QEMU (a domain, qemu-nbd, qemu-img, another libguestfs appliance) locks
// the images it opens with open file description locks, which F_OFD_GETLK
// sees without taking any.
func checkUnlocked(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", driver.ErrDiskUnsupported, err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		// No lock support here (some network filesystems): QEMU's own
		// lock, in the helper, is the check then.
		return nil
	}
	if lk.Type != unix.F_UNLCK {
		return fmt.Errorf("%s is in use by another process: %w", path, driver.ErrDiskInUse)
	}
	return nil
}
