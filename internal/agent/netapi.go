package agent

import (
	"fmt"
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
