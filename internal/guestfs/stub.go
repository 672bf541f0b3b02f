//go:build !cgo || !linux

package guestfs

// Handle is a stub: Create always fails.
type Handle struct{}

// Create fails: this build has no libguestfs.
func Create() (*Handle, error) { return nil, ErrUnavailable }
