package vmtest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrAuthFailed is what CanLogin and SSH return (wrapped) when the guest's
// sshd refused the password, as opposed to not being reachable.
var ErrAuthFailed = errors.New("vmtest: ssh: authentication failed")

// SSH runs cmd in the guest as user, logging in with password over the
// forwarded port, and returns its combined output. The host key is not
// checked: the guest is a throwaway VM reached over loopback.
func (v *VM) SSH(user, password, cmd string) (string, error) {
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         15 * time.Second,
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(v.SSHPort))
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		// x/crypto/ssh has no error type for a refused login, only this
		// message (client_auth.go).
		if strings.Contains(err.Error(), "unable to authenticate") {
			return "", fmt.Errorf("%w: %s@%s: %v", ErrAuthFailed, user, v.Name, err)
		}
		return "", fmt.Errorf("ssh %s@%s: %w", user, v.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh %s@%s: session: %w", user, v.Name, err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		return string(out), fmt.Errorf("ssh %s@%s: %q: %w", user, v.Name, cmd, err)
	}
	return string(out), nil
}

// CanLogin reports whether user can log in with password over SSH: nil when
// the login works, an error satisfying errors.Is(err, ErrAuthFailed) when
// sshd refuses the password, another error when sshd cannot be reached.
func (v *VM) CanLogin(user, password string) error {
	_, err := v.SSH(user, password, "true")
	return err
}
