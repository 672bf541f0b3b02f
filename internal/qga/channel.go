package qga

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// Defaults for Channel's zero fields.
const (
	// DefaultTimeout bounds a whole call. chpasswd in a busy guest can take
	// seconds; a minute of silence means something is wrong.
	DefaultTimeout = 30 * time.Second
	// DefaultSyncTimeout bounds connecting and resynchronising. It is
	// shorter than DefaultTimeout so that a socket nobody answers on (a VM
	// whose agent has not started) is reported quickly as not alive, and
	// long enough to wait for another client: the agent serves one at a
	// time.
	DefaultSyncTimeout = 10 * time.Second
)

// Channel is a driver.Guest for a qemu-ga reachable through a unix socket,
// whose path is driver.Ref.Address: the socket of `qemu-ga -m unix-listen`,
// or a QEMU virtio-serial chardev socket on a host. It connects for each
// call, because such a socket serves one client at a time, and
// resynchronises every new connection, because a chardev keeps whatever an
// interrupted client left in it. The zero Channel is ready to use.
//
// Errors: a socket that cannot be reached or does not answer the sync
// gives driver.ErrGuestNotAlive (also a driver.TransientError when the
// agent was busy with other clients all along); an agent that synchronised
// and then went silent or hung up during SetPassword gives a
// driver.TransientError that also wraps ErrGuestNotAlive (the password may
// or may not be set; setting it again is harmless); a missing user gives
// driver.ErrUserNotFound; an agent's refusal is an *Error. A cancelled
// context gives an error wrapping context.Canceled and nothing else.
type Channel struct {
	// Timeout bounds each call; zero means DefaultTimeout. The caller's
	// context may end it sooner.
	Timeout time.Duration
	// SyncTimeout bounds connecting and resynchronising within a call;
	// zero means DefaultSyncTimeout.
	SyncTimeout time.Duration
	// SocketDirs, if not nil, are the only directories whose sockets the
	// channel dials (the operator's --qga-socket-dir): an instance's
	// guest address is a path anyone registering it could choose, and a
	// socket elsewhere may be another tenant's machine or a system
	// service. An empty, non-nil list dials none.
	SocketDirs []string
}

// CheckAddress refuses a socket path outside SocketDirs: not absolute, not
// clean, or under none of them (also after resolving symbolic links).
func (c *Channel) CheckAddress(ref driver.Ref) error {
	if c.SocketDirs == nil {
		return nil
	}
	p := ref.Address
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("qga socket %q: must be an absolute, clean path", p)
	}
	if !underAny(p, c.SocketDirs) {
		return fmt.Errorf("qga socket %q: not under a directory this server may dial (--qga-socket-dir)", p)
	}
	// A link inside an allowed directory must not lead out of it (the
	// socket itself may not exist yet: its directory is what counts).
	real, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err == nil {
		real = filepath.Join(real, filepath.Base(p))
	}
	if err == nil && real != p {
		dirs := make([]string, 0, len(c.SocketDirs))
		for _, d := range c.SocketDirs {
			if rd, err := filepath.EvalSymlinks(d); err == nil {
				dirs = append(dirs, rd)
			}
		}
		if !underAny(real, dirs) {
			return fmt.Errorf("qga socket %q: leads out of the directories this server may dial", p)
		}
	}
	return nil
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		d = filepath.Clean(d)
		if rel, err := filepath.Rel(d, p); err == nil && filepath.IsAbs(d) && rel != "." && rel != ".." &&
			!strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

var _ driver.Guest = (*Channel)(nil)

// Ping connects, resynchronises and runs guest-ping.
func (c *Channel) Ping(ctx context.Context, ref driver.Ref) error {
	return c.call(ctx, ref, "ping", func(ctx context.Context, conn *Conn) error {
		return Ping(ctx, conn)
	})
}

// SetPassword sets user's password with guest-set-user-password and returns
// nil once the agent confirmed it. A Linux guest (ref.OSType) is sent a
// crypt(3) hash of the password, any other the password (see GuestSecret).
// It keeps no reference to password.
func (c *Channel) SetPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	// Refuse bad input before touching the guest.
	if err := CheckUser(user); err != nil {
		return err
	}
	if len(password) == 0 {
		return errors.New("qga: empty password")
	}
	secret, crypted, err := GuestSecret(ref.OSType, password)
	if err != nil {
		return err
	}
	defer clear(secret)
	err = c.call(ctx, ref, "set password", func(ctx context.Context, conn *Conn) error {
		return SetUserPassword(ctx, conn, user, secret, crypted)
	})
	var lost *transportError
	if errors.As(err, &lost) && !errors.Is(err, driver.ErrGuestNotAlive) && !errors.Is(err, context.Canceled) {
		// Synchronised, then the answer never came: the command may or
		// may not have run.
		err = driver.Transient(fmt.Errorf("%w: %w", driver.ErrGuestNotAlive, err))
	}
	// SetUserPassword withheld an answer that showed what it sent; when
	// that was a hash, the password itself is looked for too.
	return scrub(err, password)
}

func (c *Channel) call(ctx context.Context, ref driver.Ref, what string, fn func(context.Context, *Conn) error) error {
	name := ref.InstanceID
	if name == "" {
		name = ref.Address
	}
	if ref.Address == "" {
		return fmt.Errorf("qga: %s: %s: no agent socket path: %w", name, what, driver.ErrMachineNotFound)
	}
	if err := c.CheckAddress(ref); err != nil {
		return fmt.Errorf("qga: %s: %s: %w", name, what, err)
	}
	timeout, syncTimeout := c.Timeout, c.SyncTimeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if syncTimeout <= 0 {
		syncTimeout = DefaultSyncTimeout
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	syncCtx, cancelSync := context.WithTimeout(callCtx, syncTimeout)
	defer cancelSync()

	// notAlive keeps a cancellation by the caller apart from a guest that
	// does not answer.
	notAlive := func(err error) error {
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("qga: %s: %s: %w (%v)", name, what, ctx.Err(), err)
		}
		return fmt.Errorf("qga: %s: %s: %w: %w", name, what, driver.ErrGuestNotAlive, err)
	}
	nc, err := dial(syncCtx, ref.Address)
	if errors.Is(err, errBusy) && !errors.Is(ctx.Err(), context.Canceled) {
		// Alive, maybe, but never free: worth another try later.
		return driver.Transient(notAlive(err))
	}
	if err != nil {
		return notAlive(err)
	}
	failed := true
	defer func() {
		if failed {
			hangUp(nc)
		} else {
			nc.Close()
		}
	}()
	conn := NewConn(nc)
	if err := conn.Sync(syncCtx); err != nil {
		return notAlive(err)
	}
	err = fn(callCtx, conn)
	failed = err != nil
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// Not the guest's fault, whatever the operation made of it.
			return fmt.Errorf("qga: %s: %s: %w (%v)", name, what, ctx.Err(), err)
		}
		return fmt.Errorf("qga: %s: %s: %w", name, what, err)
	}
	return nil
}

var errBusy = errors.New("the agent kept serving other clients")

// dial connects to the agent's socket, waiting for its turn: qemu-ga
// serves one client at a time and listens with a backlog of one, so
// further clients get EAGAIN (a unix socket's "backlog full") rather than
// a queued connection.
func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	var busy error
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		c, err := d.DialContext(ctx, "unix", path)
		if busy != nil && ctx.Err() != nil {
			// The deadline fell inside a dial that followed a full
			// backlog: the agent is still busy, not gone.
			if c != nil {
				c.Close()
			}
			return nil, fmt.Errorf("%w: %w (%w)", errBusy, busy, ctx.Err())
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return c, err
		}
		busy = err
		// Jitter, so that waiting clients do not knock in step.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w (%w)", errBusy, err, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
	}
}

// drainTimeout bounds hangUp's wait for the agent to close its side.
const drainTimeout = time.Second

// hangUp closes a connection after a failed call, when an answer may still
// be on its way. Closing a unix socket with unread data resets the peer,
// and qemu-ga 7.2 in unix-listen mode quits on that reset (ECONNRESET on
// its next read). So hangUp shuts down its side first and reads until the
// agent, having answered all it was sent, closes its own.
func hangUp(nc net.Conn) {
	if uc, ok := nc.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
		_ = uc.SetReadDeadline(time.Now().Add(drainTimeout))
		_, _ = io.Copy(io.Discard, io.LimitReader(uc, 4*maxAnswer))
	}
	_ = nc.Close()
}
