// Package libcrypt hashes passwords with the system's crypt(3) (libxcrypt):
// the library the guest's own pam_unix and chpasswd use, so every method
// they may ask for (yescrypt, SHA-512, ...) hashes exactly as they would.
// fleetpass-diskreset hashes with it for the shadow files it edits, and the
// qga package for the hashes it sends Linux guests' agents. Without cgo, or
// not for Linux, it builds to a stub whose Hash fails with ErrUnavailable:
// callers refuse then, rather than fall back to anything weaker.
package libcrypt

import "errors"

// ErrUnavailable is what Hash returns in a build without libcrypt.
var ErrUnavailable = errors.New("built without libcrypt (cgo disabled or not Linux)")
