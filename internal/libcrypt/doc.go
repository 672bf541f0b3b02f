// Package libcrypt hashes passwords with the system's crypt(3) (libxcrypt):
// the library the guest's own pam_unix and chpasswd use, so every method
// they may ask for (yescrypt, SHA-512, ...) hashes exactly as they would.
// Only fleetpass-diskreset imports it; without cgo it builds to a stub whose
// Hash fails.
package libcrypt

import "errors"

// ErrUnavailable is what Hash returns in a build without libcrypt.
var ErrUnavailable = errors.New("built without libcrypt (cgo disabled or not Linux)")
