package agent

import (
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

// What the Windows agent needs that does not need Windows: converting a
// password for NetUserSetInfo and reading its status. Kept here so it is
// tested on Linux too.

// Windows network management status codes (lmerr.h).
const (
	nerrSuccess          = 0
	nerrUserNotFound     = 2221
	nerrPasswordTooShort = 2245
	errorAccessDenied    = 5
)

// passwordUTF16 converts password to the NUL-terminated UTF-16 that
// NetUserSetInfo takes, without an intermediate string (which could not be
// wiped). It returns nil for invalid UTF-8 or an embedded NUL.
func passwordUTF16(password []byte) []uint16 {
	runes := make([]rune, 0, len(password))
	defer clear(runes)
	for i := 0; i < len(password); {
		r, size := utf8.DecodeRune(password[i:])
		if r == 0 || (r == utf8.RuneError && size == 1) {
			return nil
		}
		runes = append(runes, r)
		i += size
	}
	return append(utf16.Encode(runes), 0)
}

// netUserResult maps NetUserSetInfo's status to a result.
func netUserResult(name string, status uint32) Result {
	switch status {
	case nerrSuccess:
		return Result{Code: agentproto.ResultOK}
	case nerrUserNotFound:
		return Result{Code: agentproto.ResultUserNotFound, ExitCode: int(status), Message: fmt.Sprintf("user %q does not exist", name)}
	case nerrPasswordTooShort:
		return Result{Code: agentproto.ResultFailed, ExitCode: int(status),
			Message: "NetUserSetInfo: the password does not meet the machine's password policy (NERR_PasswordTooShort)"}
	case errorAccessDenied:
		return Result{Code: agentproto.ResultFailed, ExitCode: int(status),
			Message: "NetUserSetInfo: access denied (the agent must run as LocalSystem or an administrator)"}
	}
	return Result{Code: agentproto.ResultFailed, ExitCode: int(status), Message: fmt.Sprintf("NetUserSetInfo failed with status %d", status)}
}

// netUserArgs checks what SetPassword hands to NetUserSetInfo: the user
// name, and the password converted by passwordUTF16. When either cannot be
// passed it returns nil and the failed result to report; the caller wipes
// the returned password after the call.
func netUserArgs(name string, password []byte) ([]uint16, *Result) {
	if name == "" || strings.ContainsRune(name, 0) {
		return nil, &Result{Code: agentproto.ResultFailed, Message: "the user name is empty or holds NUL"}
	}
	pw := passwordUTF16(password)
	if pw == nil {
		return nil, &Result{Code: agentproto.ResultFailed, Message: "the password is not valid UTF-8 or holds NUL"}
	}
	return pw, nil
}
