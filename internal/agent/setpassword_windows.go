//go:build windows

package agent

import (
	"context"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

var procNetUserSetInfo = windows.NewLazySystemDLL("netapi32.dll").NewProc("NetUserSetInfo")

// userInfo1003 is USER_INFO_1003: just the new password.
type userInfo1003 struct {
	password *uint16
}

// SetPassword sets a local user's password with NetUserSetInfo level
// 1003, the call `net user NAME *` makes. The UTF-16 copy of the password
// is wiped after the call.
func SetPassword(ctx context.Context, name string, password []byte) Result {
	pw, refused := netUserArgs(name, password)
	if refused != nil {
		return *refused
	}
	defer clear(pw)
	uname, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return Result{Code: agentproto.ResultFailed, Message: "the user name holds NUL"}
	}
	if err := procNetUserSetInfo.Find(); err != nil {
		return Result{Code: agentproto.ResultFailed, Message: "NetUserSetInfo is not available: " + err.Error()}
	}
	info := userInfo1003{password: &pw[0]}
	var parmErr uint32
	r, _, _ := procNetUserSetInfo.Call(0, uintptr(unsafe.Pointer(uname)), 1003,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&parmErr)))
	return netUserResult(name, uint32(r))
}
