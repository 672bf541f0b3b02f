//go:build cgo && linux

package guestfs

/*
#cgo LDFLAGS: -lguestfs
#include <stdlib.h>
#include <string.h>
#include <guestfs.h>

// fp_log keeps the end of the appliance's console output: the only place
// some failures are explained (QEMU's image lock refusal reaches the
// library as "appliance closed the connection unexpectedly").
struct fp_log {
	char buf[16384];
	size_t len;
};

static void fp_log_cb(guestfs_h *g, void *opaque, uint64_t event, int event_handle, int flags,
		const char *buf, size_t buf_len, const uint64_t *array, size_t array_len) {
	struct fp_log *l = opaque;
	if (buf_len >= sizeof l->buf) {
		buf += buf_len - sizeof l->buf;
		buf_len = sizeof l->buf;
	}
	if (l->len + buf_len > sizeof l->buf) {
		size_t drop = l->len + buf_len - sizeof l->buf;
		memmove(l->buf, l->buf + drop, l->len - drop);
		l->len -= drop;
	}
	memcpy(l->buf + l->len, buf, buf_len);
	l->len += buf_len;
}

static int fp_watch(guestfs_h *g, struct fp_log *l) {
	return guestfs_set_event_callback(g, fp_log_cb, GUESTFS_EVENT_APPLIANCE | GUESTFS_EVENT_LIBRARY | GUESTFS_EVENT_WARNING, 0, l);
}

static int fp_add_drive(guestfs_h *g, const char *path, const char *format, int readonly) {
	struct guestfs_add_drive_opts_argv o = {0};
	o.bitmask = GUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK | GUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK;
	o.format = format;
	o.readonly = readonly;
	return guestfs_add_drive_opts_argv(g, path, &o);
}

static int fp_copy_attributes(guestfs_h *g, const char *src, const char *dst) {
	struct guestfs_copy_attributes_argv o = {0};
	o.bitmask = GUESTFS_COPY_ATTRIBUTES_ALL_BITMASK;
	o.all = 1;
	return guestfs_copy_attributes_argv(g, src, dst, &o);
}

static void fp_free_strings(char **s) {
	if (!s) return;
	for (char **p = s; *p; p++) free(*p);
	free(s);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// Handle is one libguestfs handle. Its methods are not safe for concurrent
// use, except Kill.
type Handle struct {
	g   *C.guestfs_h
	log *C.struct_fp_log

	mu     sync.Mutex
	pid    int
	killed bool // Kill was called: a launch that ends later is ended too
	closed bool
}

// Error is a libguestfs call's failure.
type Error struct {
	Op    string
	Msg   string
	Errno int
}

func (e *Error) Error() string { return "guestfs: " + e.Op + ": " + e.Msg }

// Create makes a handle configured by libguestfs's standard environment
// variables (LIBGUESTFS_BACKEND, LIBGUESTFS_BACKEND_SETTINGS,
// LIBGUESTFS_CACHEDIR, SUPERMIN_KERNEL, ...). Tracing is turned off
// whatever LIBGUESTFS_TRACE says: a trace prints every call's arguments,
// file contents included.
func Create() (*Handle, error) {
	g := C.guestfs_create()
	if g == nil {
		return nil, errors.New("guestfs: cannot create a handle")
	}
	// Errors are read with last_error, not printed on stderr.
	C.guestfs_set_error_handler(g, nil, nil)
	C.guestfs_set_trace(g, 0)
	h := &Handle{g: g, log: (*C.struct_fp_log)(C.calloc(1, C.sizeof_struct_fp_log))}
	if C.fp_watch(g, h.log) < 0 {
		err := h.err("set_event_callback")
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *Handle) err(op string) error {
	msg := "unknown error"
	if m := C.guestfs_last_error(h.g); m != nil {
		msg = C.GoString(m)
	}
	return &Error{Op: op, Msg: msg, Errno: int(C.guestfs_last_errno(h.g))}
}

// Log returns the end of the appliance's and library's messages.
func (h *Handle) Log() string {
	if h.log == nil {
		return ""
	}
	return C.GoStringN(&h.log.buf[0], C.int(h.log.len))
}

// Close shuts the appliance down if it runs and frees the handle, removing
// its temporary files. Safe to call twice.
func (h *Handle) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	C.guestfs_close(h.g)
	C.free(unsafe.Pointer(h.log))
	h.log = nil
}

// Kill ends the appliance at once (from a signal handler's goroutine): the
// call in progress fails, and Close then cleans up.
func (h *Handle) Kill() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.killed = true
	if h.pid > 0 {
		killPid(h.pid)
	}
}

func cs(s string) *C.char { return C.CString(s) }

// AddDrive adds a disk image of the given format (never probed).
func (h *Handle) AddDrive(path, format string, readonly bool) error {
	p, f := cs(path), cs(format)
	defer C.free(unsafe.Pointer(p))
	defer C.free(unsafe.Pointer(f))
	ro := C.int(0)
	if readonly {
		ro = 1
	}
	if C.fp_add_drive(h.g, p, f, ro) < 0 {
		return h.err("add_drive " + path)
	}
	return nil
}

// Launch boots the appliance.
func (h *Handle) Launch() error {
	if C.guestfs_launch(h.g) < 0 {
		return h.err("launch")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pid = int(C.guestfs_get_pid(h.g))
	if h.killed {
		killPid(h.pid)
		return &Error{Op: "launch", Msg: "killed"}
	}
	return nil
}

func (h *Handle) strings(op string, s **C.char) ([]string, error) {
	if s == nil {
		return nil, h.err(op)
	}
	defer C.fp_free_strings(s)
	var out []string
	for p := s; *p != nil; p = (**C.char)(unsafe.Add(unsafe.Pointer(p), unsafe.Sizeof(*p))) {
		out = append(out, C.GoString(*p))
	}
	return out, nil
}

func (h *Handle) str(op string, s *C.char) (string, error) {
	if s == nil {
		return "", h.err(op)
	}
	defer C.free(unsafe.Pointer(s))
	return C.GoString(s), nil
}

// InspectOS returns the root filesystems of the operating systems found.
func (h *Handle) InspectOS() ([]string, error) {
	return h.strings("inspect_os", C.guestfs_inspect_os(h.g))
}

// InspectType returns the type of the OS at root: linux, windows, ...
func (h *Handle) InspectType(root string) (string, error) {
	r := cs(root)
	defer C.free(unsafe.Pointer(r))
	return h.str("inspect_get_type", C.guestfs_inspect_get_type(h.g, r))
}

// Mount mounts a filesystem read-write.
func (h *Handle) Mount(dev, at string) error {
	d, a := cs(dev), cs(at)
	defer C.free(unsafe.Pointer(d))
	defer C.free(unsafe.Pointer(a))
	if C.guestfs_mount(h.g, d, a) < 0 {
		return h.err("mount " + dev)
	}
	return nil
}

// IsSymlink reports whether path is a symbolic link.
func (h *Handle) IsSymlink(path string) (bool, error) {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	r := C.guestfs_is_symlink(h.g, p)
	if r < 0 {
		return false, h.err("is_symlink " + path)
	}
	return r == 1, nil
}

// Exists reports whether path exists (a dangling link does not).
func (h *Handle) Exists(path string) (bool, error) {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	r := C.guestfs_exists(h.g, p)
	if r < 0 {
		return false, h.err("exists " + path)
	}
	return r == 1, nil
}

// Filesize returns the size of a file.
func (h *Handle) Filesize(path string) (int64, error) {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	n := C.guestfs_filesize(h.g, p)
	if n < 0 {
		return 0, h.err("filesize " + path)
	}
	return int64(n), nil
}

// ReadFile returns a file's content.
func (h *Handle) ReadFile(path string) ([]byte, error) {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	var n C.size_t
	b := C.guestfs_read_file(h.g, p, &n)
	if b == nil {
		return nil, h.err("read_file " + path)
	}
	defer C.free(unsafe.Pointer(b))
	return C.GoBytes(unsafe.Pointer(b), C.int(n)), nil
}

// Write replaces a file's content, creating it if needed. The content
// travels to the appliance over libguestfs's own socket. The C copy is
// cleared before it is freed.
func (h *Handle) Write(path string, content []byte) error {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	var c unsafe.Pointer
	if len(content) > 0 {
		c = C.CBytes(content)
		defer func() {
			C.memset(c, 0, C.size_t(len(content)))
			C.free(c)
		}()
	}
	if C.guestfs_write(h.g, p, (*C.char)(c), C.size_t(len(content))) < 0 {
		return h.err("write " + path)
	}
	return nil
}

// CopyAttributes copies mode, owner and extended attributes (the SELinux
// label among them) from src to dst.
func (h *Handle) CopyAttributes(src, dst string) error {
	s, d := cs(src), cs(dst)
	defer C.free(unsafe.Pointer(s))
	defer C.free(unsafe.Pointer(d))
	if C.fp_copy_attributes(h.g, s, d) < 0 {
		return h.err("copy_attributes")
	}
	return nil
}

// Rename renames a file (atomically, within one filesystem).
func (h *Handle) Rename(from, to string) error {
	f, t := cs(from), cs(to)
	defer C.free(unsafe.Pointer(f))
	defer C.free(unsafe.Pointer(t))
	if C.guestfs_rename(h.g, f, t) < 0 {
		return h.err("rename")
	}
	return nil
}

// RmF removes a file if it exists.
func (h *Handle) RmF(path string) error {
	p := cs(path)
	defer C.free(unsafe.Pointer(p))
	if C.guestfs_rm_f(h.g, p) < 0 {
		return h.err("rm_f " + path)
	}
	return nil
}

// Sync flushes the filesystems to the disk.
func (h *Handle) Sync() error {
	if C.guestfs_sync(h.g) < 0 {
		return h.err("sync")
	}
	return nil
}

// UmountAll unmounts every filesystem.
func (h *Handle) UmountAll() error {
	if C.guestfs_umount_all(h.g) < 0 {
		return h.err("umount_all")
	}
	return nil
}

// Shutdown stops the appliance cleanly (it syncs its disks first).
func (h *Handle) Shutdown() error {
	if C.guestfs_shutdown(h.g) < 0 {
		return h.err("shutdown")
	}
	h.mu.Lock()
	h.pid = 0
	h.mu.Unlock()
	return nil
}

// Version returns libguestfs's version, e.g. "1.48.6".
func (h *Handle) Version() string {
	v := C.guestfs_version(h.g)
	if v == nil {
		return ""
	}
	defer C.guestfs_free_version(v)
	return fmt.Sprintf("%d.%d.%d%s", v.major, v.minor, v.release, C.GoString(v.extra))
}

// Backend returns the backend libguestfs will use (direct, libvirt, ...).
func (h *Handle) Backend() string {
	s, _ := h.str("get_backend", C.guestfs_get_backend(h.g))
	return s
}
