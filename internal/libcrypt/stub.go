//go:build !cgo || !linux

package libcrypt

// Hash fails: this build has no libcrypt.
func Hash(pw []byte, prefix string, rounds int) (string, error) { return "", ErrUnavailable }

// Verify fails: this build has no libcrypt.
func Verify(pw []byte, hash string) (bool, error) { return false, ErrUnavailable }
