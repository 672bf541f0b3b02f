//go:build cgo && linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleetpass/fleetpass/internal/diskreset"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/guestfs"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
)

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "--probe" {
			p := probe()
			json.NewEncoder(os.Stdout).Encode(p)
			if !p.OK {
				os.Exit(1)
			}
			return
		}
		fmt.Fprintln(os.Stderr, "usage: fleetpass-diskreset [--probe]  (the request comes on stdin; see package diskreset)")
		os.Exit(2)
	}
	res := run()
	json.NewEncoder(os.Stdout).Encode(res)
	if res.Code != "" {
		os.Exit(1)
	}
}

// probe checks what an edit needs without booting the appliance.
func probe() diskreset.Probe {
	g, err := guestfs.Create()
	if err != nil {
		return diskreset.Probe{Problem: err.Error()}
	}
	defer g.Close()
	p := diskreset.Probe{Version: g.Version(), Backend: g.Backend(),
		ForcedTCG: strings.Contains(os.Getenv("LIBGUESTFS_BACKEND_SETTINGS"), "force_tcg")}
	kernel, problem := applianceKernel()
	p.Kernel = kernel
	if problem != "" {
		p.Problem = problem
		return p
	}
	p.OK = true
	return p
}

// applianceKernel finds the kernel supermin will build the appliance with,
// as supermin looks for it: SUPERMIN_KERNEL, else /boot/vmlinuz-* with its
// modules.
func applianceKernel() (string, string) {
	if k := os.Getenv("SUPERMIN_KERNEL"); k != "" {
		if _, err := os.Stat(k); err != nil {
			return k, "SUPERMIN_KERNEL " + k + " is missing"
		}
		if m := os.Getenv("SUPERMIN_MODULES"); m != "" {
			if _, err := os.Stat(m); err != nil {
				return k, "SUPERMIN_MODULES " + m + " is missing"
			}
		}
		if _, err := os.Stat("/lib/modules"); err != nil {
			return k, "/lib/modules is missing (supermin needs the directory even when SUPERMIN_MODULES points elsewhere)"
		}
		return k, ""
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	for i := len(kernels) - 1; i >= 0; i-- {
		v := strings.TrimPrefix(filepath.Base(kernels[i]), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v)); err == nil {
			return kernels[i], ""
		}
	}
	return "", "no kernel for the libguestfs appliance: install linux-image-amd64, or extract one and set SUPERMIN_KERNEL, SUPERMIN_MODULES and SUPERMIN_KERNEL_VERSION (see docs/libvirt.md)"
}

// failure is an edit's end with a result code.
type failure struct {
	code string
	msg  string
}

func (f *failure) Error() string { return f.msg }

func fail(code, format string, args ...any) error {
	return &failure{code: code, msg: fmt.Sprintf(format, args...)}
}

func run() diskreset.Result {
	req, pw, err := diskreset.ReadRequest(os.Stdin)
	defer clear(pw)
	if err != nil {
		return diskreset.Result{Code: diskreset.CodeBadRequest, Message: err.Error()}
	}
	var res diskreset.Result
	err = edit(req, pw, &res)
	var f *failure
	switch {
	case err == nil:
	case errors.As(err, &f):
		res.Code, res.Message = f.code, f.msg
	default:
		res.Code, res.Message = diskreset.CodeFailed, err.Error()
	}
	return res
}

// shadowPath, and the file written beside it then renamed over it: on the
// same filesystem, so the rename is atomic.
const (
	shadowPath = "/etc/shadow"
	shadowNew  = "/etc/shadow.fleetpass"
	maxShadow  = 16 << 20
)

func edit(req diskreset.Request, pw []byte, res *diskreset.Result) error {
	if len(req.Disks) == 0 {
		return fail(diskreset.CodeBadRequest, "no disks")
	}
	// The method comes from the guest, so hashing waits for the disk; a
	// password that cannot be hashed at all is refused before the appliance
	// boots.
	g, err := guestfs.Create()
	if err != nil {
		return err
	}
	defer g.Close()

	// SIGTERM (the server giving up) ends the appliance at once; the call
	// in progress fails and the deferred Close removes the temporary files.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			g.Kill()
		}
	}()

	step := time.Now()
	timed := func(name string) {
		res.Timings = append(res.Timings, diskreset.Timing{Step: name, Seconds: time.Since(step).Seconds()})
		step = time.Now()
	}
	for _, d := range req.Disks {
		if err := g.AddDrive(d.Path, d.Format, d.ReadOnly); err != nil {
			return fail(diskreset.CodeDiskUnsupported, "%v", err)
		}
	}
	if err := g.Launch(); err != nil {
		return launchError(err, g.Log())
	}
	timed("launch")

	root := req.Root
	if root == "" {
		roots, err := g.InspectOS()
		if err != nil {
			return fail(diskreset.CodeDiskUnsupported, "inspect the disk: %v", err)
		}
		switch len(roots) {
		case 0:
			return fail(diskreset.CodeDiskUnsupported,
				"no operating system found on the disk (encrypted, a layout libguestfs cannot read, or not a system disk); name the root filesystem in the domain's fleetpass metadata if it is there")
		case 1:
			root = roots[0]
		default:
			return fail(diskreset.CodeDiskUnsupported, "%d operating systems found on the disk (%s); name the root filesystem in the domain's fleetpass metadata",
				len(roots), strings.Join(roots, ", "))
		}
		typ, err := g.InspectType(root)
		if err != nil {
			return fail(diskreset.CodeDiskUnsupported, "inspect the disk: %v", err)
		}
		if typ != "linux" {
			return fail(diskreset.CodeDiskUnsupported, "the disk holds a %s system; only Linux guests can be reset by editing their disk", typ)
		}
		timed("inspect")
	}
	res.Root = root
	if err := g.Mount(root, "/"); err != nil {
		return fail(diskreset.CodeDiskUnsupported, "mount the root filesystem %s: %v", root, err)
	}
	timed("mount")

	if err := editShadow(g, req.User, pw, res); err != nil {
		return err
	}
	timed("edit")
	if err := g.UmountAll(); err != nil {
		return err
	}
	if err := g.Shutdown(); err != nil {
		return err
	}
	timed("shutdown")
	return nil
}

// launchError explains a failed launch from the appliance's output.
func launchError(err error, log string) error {
	switch {
	case strings.Contains(log, `Failed to get "write" lock`), strings.Contains(log, "Is another process using the image"):
		return fail(diskreset.CodeDiskInUse, "the disk is in use by another process (QEMU's image lock refused it)")
	case strings.Contains(log, "failed to find a suitable kernel"), strings.Contains(log, "supermin"):
		return fail(diskreset.CodeFailed, "the libguestfs appliance cannot be built: %v: %s", err, lastLines(log, 3))
	}
	return fail(diskreset.CodeFailed, "start the libguestfs appliance: %v: %s", err, lastLines(log, 3))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// editShadow replaces the user's hash in /etc/shadow: written beside it
// with its owner, mode and labels, renamed over it, read back.
func editShadow(g *guestfs.Handle, user string, pw []byte, res *diskreset.Result) error {
	if link, err := g.IsSymlink(shadowPath); err != nil || link {
		if err != nil {
			return fail(diskreset.CodeDiskUnsupported, "no %s on the root filesystem %s: %v", shadowPath, res.Root, err)
		}
		return fail(diskreset.CodeDiskUnsupported, "%s is a symbolic link; refusing to edit it", shadowPath)
	}
	if ok, err := g.Exists(shadowPath); err != nil || !ok {
		return fail(diskreset.CodeDiskUnsupported, "no %s on the root filesystem %s", shadowPath, res.Root)
	}
	if n, err := g.Filesize(shadowPath); err != nil || n > maxShadow {
		return fail(diskreset.CodeDiskUnsupported, "%s is larger than %d bytes", shadowPath, maxShadow)
	}
	old, err := g.ReadFile(shadowPath)
	if err != nil {
		return err
	}
	if _, ok := diskreset.HashOf(old, user); !ok {
		return fail(diskreset.CodeUserNotFound, "user %q has no line in %s", user, shadowPath)
	}
	m := diskreset.GuestMethod(func(path string) ([]byte, error) {
		if ok, err := g.Exists(path); err != nil || !ok {
			return nil, os.ErrNotExist
		}
		if n, err := g.Filesize(path); err != nil || n > 1<<20 {
			return nil, os.ErrNotExist
		}
		return g.ReadFile(path)
	})
	res.Method, res.MethodSource = m.Name, m.Source
	hash, err := libcrypt.Hash(pw, m.Prefix, m.Rounds)
	if err != nil {
		return fail(diskreset.CodeFailed, "hash the password with %s: %v", m.Name, err)
	}
	today := time.Now().Unix() / 86400
	updated, err := diskreset.ReplaceHash(old, user, hash, today)
	if errors.Is(err, driver.ErrUserNotFound) {
		return fail(diskreset.CodeUserNotFound, "user %q has no line in %s", user, shadowPath)
	}
	if err != nil {
		return fail(diskreset.CodeDiskUnsupported, "%v", err)
	}
	// A file left by an edit that was killed is overwritten.
	if err := g.Write(shadowNew, updated); err != nil {
		return err
	}
	clear(updated)
	if err := g.CopyAttributes(shadowPath, shadowNew); err != nil {
		g.RmF(shadowNew)
		return err
	}
	if err := g.Rename(shadowNew, shadowPath); err != nil {
		g.RmF(shadowNew)
		return err
	}
	if err := g.Sync(); err != nil {
		return err
	}
	back, err := g.ReadFile(shadowPath)
	if err != nil {
		return fmt.Errorf("read back %s: %w", shadowPath, err)
	}
	got, _ := diskreset.HashOf(back, user)
	if got != hash {
		return fail(diskreset.CodeFailed, "the new hash did not read back from %s", shadowPath)
	}
	if ok, err := libcrypt.Verify(pw, got); err != nil || !ok {
		return fail(diskreset.CodeFailed, "the hash read back from %s does not verify", shadowPath)
	}
	return nil
}
