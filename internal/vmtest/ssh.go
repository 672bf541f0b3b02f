package vmtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

// ErrAuthFailed is what CanLogin and SSH return (wrapped) when the guest's
// sshd refused the password, as opposed to not being reachable: the test
// kit's one sentinel (testutil.ErrAuthFailed), which guesttest returns too.
var ErrAuthFailed = testutil.ErrAuthFailed

// SSH runs cmd in the guest as user, logging in with password over the
// forwarded port, and returns its combined output. The host key is not
// checked: the guest is a throwaway VM reached over loopback.
func (v *VM) SSH(user, password, cmd string) (string, error) {
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(v.SSHPort))
	out, err := testutil.SSH(context.Background(), testutil.SSHLogin{Addr: addr, User: user, Password: password,
		Timeout: 45 * time.Second}, cmd)
	if err != nil {
		return out, fmt.Errorf("vmtest %s: %w", v.Name, err)
	}
	return out, nil
}

// CanLogin reports whether user can log in with password over SSH: nil when
// the login works, an error satisfying errors.Is(err, ErrAuthFailed) when
// sshd refuses the password, another error when sshd cannot be reached.
//
// sshd that answers may still be too slow to finish a handshake in time: a
// guest under software emulation on a loaded host took more than 15 s to
// check a yescrypt password (measured at load average 18). So an answer
// other than a refusal is retried for a while; a refusal is final.
func (v *VM) CanLogin(user, password string) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		_, err := v.SSH(user, password, "true")
		if err == nil || errors.Is(err, ErrAuthFailed) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Second)
	}
}
