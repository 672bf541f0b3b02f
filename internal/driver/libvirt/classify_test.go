package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/qga"
)

func TestMapState(t *testing.T) {
	tests := []struct {
		state  lv.DomainState
		reason int32
		want   driver.PowerState
	}{
		{lv.DomainRunning, 1, driver.PowerRunning},
		{lv.DomainBlocked, 0, driver.PowerRunning},
		{lv.DomainPaused, int32(lv.DomainPausedUser), driver.PowerRunning},
		{lv.DomainPaused, int32(lv.DomainPausedIoerror), driver.PowerRunning},
		{lv.DomainPaused, int32(lv.DomainPausedStartingUp), driver.PowerStarting},
		{lv.DomainPaused, int32(lv.DomainPausedShuttingDown), driver.PowerStopping},
		{lv.DomainShutdown, 1, driver.PowerStopping},
		{lv.DomainShutoff, int32(lv.DomainShutoffShutdown), driver.PowerStopped},
		{lv.DomainShutoff, int32(lv.DomainShutoffDestroyed), driver.PowerStopped},
		{lv.DomainCrashed, int32(lv.DomainCrashedPanicked), driver.PowerStopped},
		{lv.DomainPmsuspended, 0, driver.PowerStopped},
		{lv.DomainNostate, 0, driver.PowerUnknown},
		{lv.DomainState(42), 0, driver.PowerUnknown},
	}
	for _, tt := range tests {
		if got := mapState(tt.state, tt.reason); got != tt.want {
			t.Errorf("mapState(%d, %d) = %s, want %s", tt.state, tt.reason, got, tt.want)
		}
	}
}

func TestUUID(t *testing.T) {
	const s = "6695eb01-f6a4-8304-79aa-97f2502e193f"
	u, err := parseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := formatUUID(u); got != s {
		t.Errorf("formatUUID(parseUUID(%q)) = %q", s, got)
	}
	if u2, err := parseUUID("6695EB01-F6A4-8304-79AA-97F2502E193F"); err != nil || u2 != u {
		t.Errorf("upper case: %v, %v", u2, err)
	}
	for _, bad := range []string{"", "drivertest-no-such-machine", "6695eb01f6a4830479aa97f2502e193f", "6695eb01-f6a4-8304-79aa-97f2502e193", "6695eb01-f6a4-8304-79aa-97f2502e193g", "6695eb01-f6a4-8304-79aa_97f2502e193f", "6695eb01--f6a4-8304-79aa97f2502e193f"} {
		if _, err := parseUUID(bad); err == nil {
			t.Errorf("parseUUID(%q) succeeded", bad)
		}
	}
}

// lvErr builds an error as go-libvirt returns it for an error answer of
// libvirtd (rpc.go decodeError).
func lvErr(code lv.ErrorNumber, msg string) error {
	return lv.Error{Code: uint32(code), Message: msg}
}

func TestClassify(t *testing.T) {
	type want struct {
		is        error // nil: none of the driver's sentinels
		transient bool
	}
	tests := []struct {
		name  string
		err   error
		agent bool // classifyAgent, else classify
		want  want
	}{
		{"no domain", lvErr(lv.ErrNoDomain, "Domain not found: no domain with matching uuid '6695eb01-f6a4-8304-79aa-97f2502e193f'"), false, want{driver.ErrMachineNotFound, false}},
		{"no domain via agent call", lvErr(lv.ErrNoDomain, "Domain not found"), true, want{driver.ErrMachineNotFound, false}},
		{"interrupted", lv.ErrInterrupted, false, want{nil, true}},
		{"socket closed", syscall.EINVAL, false, want{nil, true}},
		{"wrapped EOF", fmt.Errorf("read: %w", io.EOF), false, want{nil, true}},
		{"net error", &net.OpError{Op: "write", Net: "unix", Err: syscall.EPIPE}, false, want{nil, true}},
		{"disconnected", errDisconnected, false, want{nil, true}},
		{"state change lock", lvErr(lv.ErrOperationTimeout, "Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainCreate)"), false, want{nil, true}},
		{"state change lock via agent call", lvErr(lv.ErrOperationTimeout, "Timed out during operation: cannot acquire state change lock (held by agent=remoteDispatchDomainSetUserPassword)"), true, want{nil, true}},
		{"rpc", lvErr(lv.ErrRPC, "Cannot write data: Broken pipe"), false, want{nil, true}},
		{"already running", lvErr(lv.ErrOperationInvalid, "Requested operation is not valid: domain is already running"), false, want{nil, false}},
		{"unsupported flags", lvErr(lv.ErrInvalidArg, "unsupported flags (0x1) in function testDomainShutdownFlags"), false, want{nil, false}},
		{"canceled", context.Canceled, false, want{nil, false}},

		{"agent not configured", lvErr(lv.ErrArgumentUnsupported, "argument unsupported: QEMU guest agent is not configured"), true, want{driver.ErrNoGuestChannel, false}},
		{"agent passthrough unsupported", lvErr(lv.ErrNoSupport, "this function is not supported by the connection driver: virDomainQemuAgentCommand"), true, want{driver.ErrNoGuestChannel, false}},
		{"domain not running", lvErr(lv.ErrOperationInvalid, "Requested operation is not valid: domain is not running"), true, want{driver.ErrGuestNotAlive, false}},
		{"agent not connected", lvErr(lv.ErrAgentUnresponsive, "Guest agent is not responding: QEMU guest agent is not connected"), true, want{driver.ErrGuestNotAlive, false}},
		{"agent not responding", lvErr(lv.ErrAgentUnresponsive, "Guest agent is not responding: Guest agent not available for now"), true, want{driver.ErrGuestNotAlive, false}},
		{"agent error state", lvErr(lv.ErrAgentUnresponsive, "Guest agent is not responding: QEMU guest agent is not available due to an error"), true, want{driver.ErrGuestNotAlive, false}},
		{"agent command timeout", lvErr(lv.ErrAgentCommandTimeout, "guest agent command timed out"), true, want{driver.ErrGuestNotAlive, false}},
		{"not configured, other number", lvErr(lv.ErrInternalError, "internal error: QEMU guest agent is not configured"), true, want{driver.ErrNoGuestChannel, false}},
		{"not responding, other number", lvErr(lv.ErrInternalError, "internal error: Guest agent is not responding"), true, want{driver.ErrGuestNotAlive, false}},
		{"agent refused", lvErr(lv.ErrInternalError, "internal error: unable to execute QEMU agent command 'guest-set-user-password': child process has failed to set user password"), true, want{nil, false}},
		{"agent refused (new number)", lvErr(lv.ErrAgentCommandFailed, "guest agent command failed: unable to execute QEMU agent command 'guest-set-user-password': chpasswd: line 1: user 'x' does not exist"), true, want{nil, false}},
		{"connection lost during agent call", lv.ErrInterrupted, true, want{nil, true}},
	}
	sentinels := []error{driver.ErrMachineNotFound, driver.ErrGuestNotAlive, driver.ErrNoGuestChannel, driver.ErrUserNotFound, driver.ErrNotRunning}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got error
			if tt.agent {
				got = classifyAgent("op", tt.err)
			} else {
				got = classify("op", tt.err)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap the original error", got)
			}
			for _, s := range sentinels {
				if errors.Is(got, s) != (s == tt.want.is) {
					t.Errorf("errors.Is(%v, %q) = %v", got, s, !(s == tt.want.is))
				}
			}
			if driver.IsTransient(got) != tt.want.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", got, !tt.want.transient, tt.want.transient)
			}
		})
	}
}

func TestUserMissing(t *testing.T) {
	for msg, want := range map[string]bool{
		"unable to execute QEMU agent command 'guest-set-user-password': chpasswd: line 1: user 'x' does not exist": true,
		"NetUserSetInfo failed: The user name could not be found.":                                                  true,
		"child process has failed to set user password":                                                             false,
	} {
		if got := qga.UserMissing(msg); got != want {
			t.Errorf("qga.UserMissing(%q) = %v, want %v", msg, got, want)
		}
	}
}
