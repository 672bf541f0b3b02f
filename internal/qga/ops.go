package qga

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// Exec runs one command through d and decodes its return value into result
// (which may be nil). args may be nil.
func Exec(ctx context.Context, d Doer, execute string, args, result any) error {
	cmd, err := Command(execute, args)
	if err != nil {
		return err
	}
	if err := d.Do(ctx, cmd, result); err != nil {
		return fmt.Errorf("qga: %s: %w", execute, err)
	}
	return nil
}

// Ping runs guest-ping. Any failure wraps driver.ErrGuestNotAlive.
func Ping(ctx context.Context, d Doer) error {
	if err := Exec(ctx, d, "guest-ping", nil, nil); err != nil {
		return fmt.Errorf("%w: %w", driver.ErrGuestNotAlive, err)
	}
	return nil
}

// probeTimeout bounds the look-up of a user after a failed
// guest-set-user-password, so that a slow name service in the guest cannot
// turn a clear failure into a timeout.
const probeTimeout = 10 * time.Second

// SetUserPassword runs guest-set-user-password with secret, the clear-text
// password or with crypted its crypt(3) hash (see GuestSecret), and
// returns nil once the agent confirmed it. A missing user gives an error
// wrapping driver.ErrUserNotFound. The returned error never holds secret,
// nor its base64 form, whatever the agent answers.
//
// qemu-ga up to 9.0 answers a failed chpasswd with the same bare "child
// process has failed to set user password" whatever the reason; newer ones
// add chpasswd's message, and Windows agents NetUserSetInfo's. When the
// answer does not say, SetUserPassword asks the guest (guest-exec of getent
// passwd USER) and reports ErrUserNotFound only when the guest says so.
func SetUserPassword(ctx context.Context, d Doer, user string, secret []byte, crypted bool) error {
	cmd, err := SetUserPasswordCommand(user, secret, crypted)
	if err != nil {
		return err
	}
	defer clear(cmd)
	err = d.Do(ctx, cmd, nil)
	if err == nil {
		return nil
	}
	var agentErr *Error
	if errors.As(err, &agentErr) && agentErr.Class != "CommandNotFound" {
		if UserMissing(agentErr.Desc) || ProbeUserMissing(ctx, d, user) {
			err = fmt.Errorf("%w: %w", driver.ErrUserNotFound, err)
		}
	}
	return scrub(fmt.Errorf("qga: guest-set-user-password for user %q: %w", user, err), secret)
}

// UserMissing recognises the answers of agents that say why chpasswd or
// NetUserSetInfo failed.
func UserMissing(desc string) bool {
	desc = strings.ToLower(desc)
	for _, hint := range []string{
		"does not exist",               // chpasswd: line 1: user 'x' does not exist
		"user name could not be found", // Windows NERR_UserNotFound
		"unknown user",
		"no such user",
	} {
		if strings.Contains(desc, hint) {
			return true
		}
	}
	return false
}

// ProbeUserMissing reports whether the guest positively says user does not
// exist: getent exits with 2 for a missing key. Any other outcome (guest-exec
// blocked, as on RHEL by default; no getent, as on Windows; a timeout) means
// we do not know, and the caller keeps the agent's own error.
func ProbeUserMissing(ctx context.Context, d Doer, user string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var started struct {
		PID int64 `json:"pid"`
	}
	args := map[string]any{
		"path":           "getent",
		"arg":            []string{"passwd", user},
		"capture-output": true,
	}
	if err := Exec(ctx, d, "guest-exec", args, &started); err != nil {
		return false
	}
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		var st struct {
			Exited   bool `json:"exited"`
			ExitCode *int `json:"exitcode"`
		}
		if err := Exec(ctx, d, "guest-exec-status", map[string]int64{"pid": started.PID}, &st); err != nil {
			return false
		}
		if st.Exited {
			return st.ExitCode != nil && *st.ExitCode == 2
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// scrub withholds err when it shows the password or its hash (see
// driver.Scrub).
func scrub(err error, secrets ...[]byte) error {
	for _, s := range secrets {
		err = driver.Scrub(err, s, "qga: guest-set-user-password failed (the agent's answer is withheld: it contained the password)")
	}
	return err
}
