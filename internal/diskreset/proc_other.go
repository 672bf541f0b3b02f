//go:build !linux

package diskreset

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
