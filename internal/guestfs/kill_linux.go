//go:build cgo && linux

package guestfs

import "syscall"

func killPid(pid int) { syscall.Kill(pid, syscall.SIGKILL) }
