package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// errDisconnected is what calls give while a host has no connection.
var errDisconnected = errors.New("not connected to libvirtd")

// libvirtCode returns the libvirt error number of err, if err is (or
// wraps) an error libvirtd sent.
func libvirtCode(err error) (lv.ErrorNumber, bool) {
	// go-libvirt returns its Error by value.
	var e lv.Error
	if errors.As(err, &e) {
		return lv.ErrorNumber(e.Code), true
	}
	return 0, false
}

// connectionLost reports whether err means the connection to libvirtd
// broke (as opposed to libvirtd answering no): go-libvirt reports a call
// interrupted by a disconnect as ErrInterrupted, and a call on a closed
// socket as EINVAL.
func connectionLost(err error) bool {
	if _, ok := libvirtCode(err); ok {
		return false
	}
	var ne net.Error
	return errors.Is(err, lv.ErrInterrupted) ||
		errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne)
}

// classify maps an error of a libvirt call that is not about the guest
// agent to the driver package's errors. what names the operation for the
// message.
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if connectionLost(err) || errors.Is(err, errDisconnected) {
		// The engine retries; the driver reconnects meanwhile.
		return driver.Transientf("%s: %w", what, err)
	}
	code, ok := libvirtCode(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch code {
	case lv.ErrNoDomain:
		return fmt.Errorf("%s: %w: %w", what, driver.ErrMachineNotFound, err)
	case lv.ErrOperationTimeout, // "cannot acquire state change lock": another job holds the domain
		lv.ErrRPC,          // the RPC layer failed mid-call
		lv.ErrNoConnect,    // libvirtd lost its hypervisor connection
		lv.ErrSystemError,  // an I/O error in libvirtd
		lv.ErrResourceBusy: // a resource another job holds
		return driver.Transientf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// classifyAgent maps an error of a call that goes to the guest agent
// (QEMUDomainAgentCommand, DomainSetUserPassword, DomainShutdownFlags in
// agent mode) to the driver package's errors. The libvirt error numbers and
// messages are those of qemuDomainAgentAvailable and qemuAgentCommand in
// libvirt's QEMU driver:
//
//	VIR_ERR_OPERATION_INVALID    "domain is not running"
//	VIR_ERR_AGENT_UNRESPONSIVE   "QEMU guest agent is not connected"
//	VIR_ERR_AGENT_UNRESPONSIVE   "Guest agent is not responding: ..."
//	VIR_ERR_AGENT_UNRESPONSIVE   "QEMU guest agent is not available due to an error"
//	VIR_ERR_ARGUMENT_UNSUPPORTED "QEMU guest agent is not configured"
//	VIR_ERR_AGENT_COMMAND_TIMEOUT (a command that timed out)
//
// VIR_ERR_OPERATION_TIMEOUT is not the agent's: it is "cannot acquire state
// change lock", another job on the domain, and is transient.
//
// Messages are matched only when the number is ambiguous, and as a fallback
// for daemons that report another number.
func classifyAgent(what string, err error) error {
	if err == nil {
		return nil
	}
	code, ok := libvirtCode(err)
	if !ok {
		return classify(what, err)
	}
	msg := strings.ToLower(err.Error())
	switch {
	case code == lv.ErrArgumentUnsupported && strings.Contains(msg, "not configured"),
		strings.Contains(msg, "guest agent is not configured"):
		return fmt.Errorf("%s: %w: %w", what, driver.ErrNoGuestChannel, err)
	case code == lv.ErrNoSupport:
		// The hypervisor driver has no guest agent passthrough at all
		// (libvirt's test and Xen drivers): no password will ever get
		// through, as with a domain that has no channel.
		return fmt.Errorf("%s: %w: %w", what, driver.ErrNoGuestChannel, err)
	case code == lv.ErrOperationInvalid,
		code == lv.ErrAgentUnresponsive,
		code == lv.ErrAgentCommandTimeout,
		strings.Contains(msg, "domain is not running"),
		strings.Contains(msg, "agent is not responding"),
		strings.Contains(msg, "agent is not connected"),
		strings.Contains(msg, "agent not available"):
		// A channel cannot tell an agent that is dead from one whose
		// machine is off or still booting: both are "not alive".
		return fmt.Errorf("%s: %w: %w", what, driver.ErrGuestNotAlive, err)
	}
	return classify(what, err)
}
