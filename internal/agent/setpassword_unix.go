//go:build !windows

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/sealer"
)

// SetPassword sets user's password with chpasswd, which gets
// "user:password\n" on its standard input: never in its arguments (which
// every process can read in /proc) nor in a file. The line is wiped once
// chpasswd has read it.
func SetPassword(ctx context.Context, name string, password []byte) Result {
	return chpasswd(ctx, lookPaths{getent: "getent", chpasswd: "chpasswd"}, name, password)
}

type lookPaths struct{ getent, chpasswd string }

func chpasswd(ctx context.Context, p lookPaths, name string, password []byte) Result {
	if name == "" || strings.ContainsAny(name, ":\n\r\x00") {
		return Result{Code: agentproto.ResultFailed, Message: "the user name is not one chpasswd can take"}
	}
	if bytes.ContainsAny(password, "\n\r\x00") {
		return Result{Code: agentproto.ResultFailed, Message: "the password holds a line break or NUL, which chpasswd cannot take"}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	line := make([]byte, 0, len(name)+len(password)+2)
	line = append(line, name...)
	line = append(line, ':')
	line = append(line, password...)
	line = append(line, '\n')
	defer sealer.Wipe(line)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p.chpasswd)
	cmd.Stdin = bytes.NewReader(line)
	cmd.Stderr = &stderr
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	err := cmd.Run()
	msg := scrub(stderr.Bytes(), password)
	sealer.Wipe(stderr.Bytes())
	if err == nil {
		return Result{Code: agentproto.ResultOK}
	}
	var ee *exec.ExitError
	code := -1
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	// Only a failure pays for the look-up (a process of its own): chpasswd's
	// own wording for a missing user differs between PAM stacks, getent's
	// exit status does not.
	if strings.Contains(msg, "does not exist") || strings.Contains(msg, "unknown user") {
		return Result{Code: agentproto.ResultUserNotFound, ExitCode: code, Message: msg}
	}
	switch exists, lerr := userExists(ctx, p.getent, name); {
	case lerr == nil && !exists:
		return Result{Code: agentproto.ResultUserNotFound, ExitCode: code, Message: fmt.Sprintf("user %q does not exist", name)}
	}
	if msg == "" {
		msg = err.Error()
	}
	return Result{Code: agentproto.ResultFailed, ExitCode: code, Message: "chpasswd failed: " + msg}
}

// userExists asks getent (which sees NSS users: LDAP, SSSD), and falls
// back on the user database Go reads itself when getent is missing.
func userExists(ctx context.Context, getent, name string) (bool, error) {
	err := exec.CommandContext(ctx, getent, "passwd", "--", name).Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return false, nil // getent: key not found
	case errors.Is(err, exec.ErrNotFound):
		_, lerr := user.Lookup(name)
		var unknown user.UnknownUserError
		if errors.As(lerr, &unknown) {
			return false, nil
		}
		return lerr == nil, lerr
	}
	return false, fmt.Errorf("getent: %w", err)
}

// scrub makes chpasswd's error output safe to report: the password never
// appears in it, even if some PAM module echoed it, and it stays short.
func scrub(out, password []byte) string {
	if len(password) > 0 {
		out = bytes.ReplaceAll(out, password, []byte("[redacted]"))
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(out), "?"))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return s
}
