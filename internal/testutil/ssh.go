package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrAuthFailed is what SSH returns (wrapped) when sshd refused the
// password, as opposed to being unreachable: the one answer that proves an
// old password no longer works.
var ErrAuthFailed = errors.New("ssh: authentication failed")

// SSHLogin describes one password login.
type SSHLogin struct {
	Addr, User, Password string
	// HostKey is checked when set; throwaway guests on loopback may leave
	// it nil.
	HostKey ssh.PublicKey
	// Timeout bounds the dial and the login (default 30s); the command is
	// bounded by the context only.
	Timeout time.Duration
}

// SSH logs in and runs cmd, returning its combined output. The error wraps
// ErrAuthFailed when sshd refused the password.
func SSH(ctx context.Context, l SSHLogin, cmd string) (string, error) {
	if l.Timeout <= 0 {
		l.Timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", l.Addr)
	if err != nil {
		return "", fmt.Errorf("ssh to %s: %w", l.Addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(l.Timeout))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	hostKey := ssh.InsecureIgnoreHostKey()
	if l.HostKey != nil {
		hostKey = ssh.FixedHostKey(l.HostKey)
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, l.Addr, &ssh.ClientConfig{User: l.User,
		Auth: []ssh.AuthMethod{ssh.Password(l.Password)}, HostKeyCallback: hostKey})
	if err != nil {
		// x/crypto/ssh has no error type for a refused login, only this
		// message (client_auth.go).
		if strings.Contains(err.Error(), "unable to authenticate") {
			return "", fmt.Errorf("ssh login as %s to %s: %w", l.User, l.Addr, ErrAuthFailed)
		}
		return "", fmt.Errorf("ssh login as %s to %s: %w", l.User, l.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh session as %s: %w", l.User, err)
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	if err != nil {
		return string(out), fmt.Errorf("ssh as %s: %q: %w", l.User, cmd, err)
	}
	return string(out), nil
}
