// Package guestfs is a minimal cgo binding of libguestfs: just the calls
// fleetpass-diskreset makes to open a disk, find and mount its root
// filesystem and edit a file in it.
//
// It is not the generated binding Debian ships (golang-guestfs-dev, import
// path libguestfs.org/guestfs), which is on no module proxy and has no
// go.mod: a dozen calls do not justify vendoring 15,000 generated lines.
// Only the helper binary imports this package, so the fleetpass server
// stays free of cgo. Without cgo (CGO_ENABLED=0, or another OS) the package
// builds to a stub whose Create fails.
package guestfs

import "errors"

// ErrUnavailable is what Create returns in a build without libguestfs.
var ErrUnavailable = errors.New("built without libguestfs (cgo disabled or not Linux)")
