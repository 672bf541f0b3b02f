// Package driver defines the two small interfaces that connect fleetpass to
// machines: Power (switch a machine on and off and read its power state) and
// Guest (reach the operating system inside it to change a password).
//
// Implementations live in sub-packages (sim, libvirt, ipmi; the guest
// channels in qga and agentserver).
// Every implementation must pass the shared conformance suite in
// package drivertest, so the engine can treat them all alike.
package driver

import (
	"context"
	"errors"
	"fmt"
)

// PowerState is a machine's power state as its power driver reads it.
type PowerState string

// Power states. Transitional states exist because real shutdowns and boots
// take time; the engine polls State until a stable state is reached.
const (
	PowerRunning  PowerState = "running"
	PowerStopped  PowerState = "stopped"
	PowerStopping PowerState = "stopping"
	PowerStarting PowerState = "starting"
	PowerUnknown  PowerState = "unknown"
)

// Ref tells a driver which machine an operation is for.
type Ref struct {
	// InstanceID is fleetpass's id of the instance (for logs and errors).
	InstanceID string
	// Host groups machines that share a physical or virtual host; the engine
	// bounds concurrency per host. Empty means the driver's default host.
	Host string
	// Address is the driver's own address of the machine: a sim machine id,
	// a libvirt domain UUID, a guest agent socket path.
	Address string
	// OSType is the instance's operating system as fleetpass records it:
	// OSLinux, "windows", or empty when the caller does not know. Guest
	// channels that reach a QEMU guest agent hand a Linux guest a crypt(3)
	// hash instead of the password, which a Windows agent refuses.
	OSType string
}

// OSLinux is the OSType of a Linux instance.
const OSLinux = "linux"

// Power controls a machine's power. All methods return once the request was
// accepted by the machine or its host; they do not wait for the transition to
// end (the engine polls State for that, durably, so a restart of fleetpass in
// the middle of a long shutdown loses nothing).
type Power interface {
	// State reads the current power state.
	State(ctx context.Context, ref Ref) (PowerState, error)
	// Shutdown asks the operating system to shut down gracefully. The guest
	// may ignore it. Calling it on a stopped or stopping machine is a no-op.
	Shutdown(ctx context.Context, ref Ref) error
	// Stop cuts the power (forced stop). Calling it on a stopped machine is a
	// no-op.
	Stop(ctx context.Context, ref Ref) error
	// Start powers the machine on. Calling it on a running or starting
	// machine is a no-op.
	Start(ctx context.Context, ref Ref) error
}

// Guest reaches the operating system inside a running machine.
type Guest interface {
	// Ping reports whether the guest channel is alive: nil when it is,
	// an error wrapping ErrGuestNotAlive when it is not.
	Ping(ctx context.Context, ref Ref) error
	// SetPassword sets user's password and returns nil only once the guest
	// confirmed the change. Setting the same password twice is harmless, so
	// the engine may call it again after a crash. The caller wipes password
	// after the call; implementations must not keep a reference to it.
	SetPassword(ctx context.Context, ref Ref, user string, password []byte) error
}

// Stager is implemented by guest channels that can hand a password to a
// machine that is not running, to be applied while it boots (the fleetpass
// agent applies staged passwords at start-up before it reports ready). The
// engine stages the password while the machine is stopped and calls
// SetPassword once the guest is up, which then confirms the staged change,
// unless the channel is a StagedChecker that already has the guest's word.
type Stager interface {
	Stage(ctx context.Context, ref Ref, user string, password []byte) error
}

// StagedChecker is implemented by Stagers whose guest reports the result of
// each staged password (the fleetpass agent acknowledges it at boot, before
// it reports ready). The engine stages under a key of its own and, once the
// guest is alive, asks whether that very staging was applied: if it was,
// the guest's acknowledgement is the confirmation and SetPassword is not
// called. In every other case (a failure, no answer yet, nothing found)
// the engine calls SetPassword as for any Stager.
type StagedChecker interface {
	Stager
	// StageAs is Stage under key: the caller's name for this one password,
	// the same when it stages it again (after a crash), never reused for
	// another password. Staging again under a key whose staging the guest
	// already applied leaves that staging as it is.
	StageAs(ctx context.Context, ref Ref, user string, password []byte, key string) error
	// StagedApplied reports whether the guest acknowledged that it applied
	// the password staged for user under key. It is false for a staging
	// that failed, is not acknowledged yet, was never made (or made for
	// another machine or user), or cannot be read now.
	StagedApplied(ctx context.Context, ref Ref, user, key string) bool
}

// Errors drivers return, wrapped with %w and a message of their own. The
// engine maps them to item error codes.
var (
	// ErrGuestNotAlive: the guest channel (agent) does not answer.
	ErrGuestNotAlive = errors.New("guest agent is not alive")
	// ErrUserNotFound: the user whose password should change does not exist.
	ErrUserNotFound = errors.New("user does not exist")
	// ErrMachineNotFound: the driver does not know the machine.
	ErrMachineNotFound = errors.New("machine not found")
	// ErrNotRunning: the operation needs a running machine.
	ErrNotRunning = errors.New("machine is not running")
	// ErrNoGuestChannel: the machine has no guest channel at all (a libvirt
	// domain defined without a guest-agent channel), so no password can
	// reach it however long one waits.
	ErrNoGuestChannel = errors.New("machine has no guest agent channel")

	// Errors of power controllers reached over the network (a server's
	// BMC), so that every such driver (IPMI, later Redfish) gives an
	// operator the same item error codes.

	// ErrControllerUnreachable: the power controller does not answer.
	ErrControllerUnreachable = errors.New("the power controller (BMC) does not answer")
	// ErrControllerAuth: the power controller refused the credentials.
	ErrControllerAuth = errors.New("the power controller (BMC) refused the user name or password")
	// ErrControllerCipher: the power controller does not accept the
	// configured cipher suite (or the suite is one fleetpass refuses).
	ErrControllerCipher = errors.New("the power controller (BMC) does not accept the cipher suite")
	// ErrPowerCommandFailed: the power controller refused or failed a
	// power command.
	ErrPowerCommandFailed = errors.New("the power controller (BMC) refused or failed the command")
	// ErrPowerOutcomeUnknown: a command that must not be sent twice got no
	// answer, so whether it ran is unknown.
	ErrPowerOutcomeUnknown = errors.New("the outcome of the power command is unknown")
	// ErrDiskUnsupported: the machine's disk cannot be edited offline (a
	// format, encryption, layout or remote host the disk editor cannot
	// open, or a Windows guest).
	ErrDiskUnsupported = errors.New("the machine's disk cannot be edited")
	// ErrDiskInUse: another process holds the stopped machine's disk.
	ErrDiskInUse = errors.New("the machine's disk is in use by another process")
	// ErrDiskResetUnavailable: this server cannot edit disks at all (its
	// helper or libguestfs is missing).
	ErrDiskResetUnavailable = errors.New("disk resets are not available on this server")
)

// DiskEditor is implemented by guest channels that can set a password
// without any agent in the guest, by editing a stopped machine's disk (its
// /etc/shadow). The engine uses it in an offline reset whose method is
// disk: it asks CheckDisk before the first power action and EditDisk once
// the machine is stopped.
type DiskEditor interface {
	// DiskResets reports whether this server can edit disks at all (its
	// helper and libguestfs are there), and why not.
	DiskResets() (available bool, why string)
	// CheckDisk tells whether EditDisk can work on the machine, as far as
	// can be known without opening its disk: nil, or an error wrapping
	// ErrDiskUnsupported, ErrDiskInUse or ErrDiskResetUnavailable.
	CheckDisk(ctx context.Context, ref Ref) error
	// EditDisk sets user's password in the stopped machine's disk and
	// returns nil only once the new hash was read back from it. Editing
	// twice is harmless (the engine does after a crash). A running machine
	// gives an error wrapping ErrDiskInUse, a missing user one wrapping
	// ErrUserNotFound. The caller wipes password after the call.
	EditDisk(ctx context.Context, ref Ref, user string, password []byte) error
}

// Preflighter is implemented by guest channels that can tell, before the
// engine touches a machine's power, that a password will never reach it
// (ErrNoGuestChannel). The engine asks before the first power action, so an
// offline reset of such a machine fails without shutting it down.
type Preflighter interface {
	Preflight(ctx context.Context, ref Ref) error
}

// TransientError marks a failure worth retrying (a dropped connection, a busy
// host). The engine retries transient errors with backoff and fails the item
// on any other error.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return "transient: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient wraps err as a TransientError.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err}
}

// Transientf formats a TransientError.
func Transientf(format string, args ...any) error {
	return &TransientError{Err: fmt.Errorf(format, args...)}
}

// IsTransient reports whether err is or wraps a TransientError.
func IsTransient(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// AddressChecker is implemented by drivers that can tell, when a link is
// registered, that an address is not one they would ever act on (the qga
// channel dials only sockets under the operator's directories).
type AddressChecker interface {
	CheckAddress(ref Ref) error
}
