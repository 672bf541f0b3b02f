package diskreset

import "syscall"

// sysProcAttr makes the kernel kill the helper when the server dies (a
// SIGKILL, a crash): its libguestfs then stops the appliance, and the item,
// resumed by the next server, edits the disk again.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
