package driver

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
)

// Scrub returns err unchanged unless its text holds password, plain or in
// base64 (as guest-set-user-password carries it); then it returns an error
// saying withheld instead, which keeps only what the engine classifies by:
// the sentinel errors above and transience. A guest's answer is the guest's
// text, and nothing stops a broken or hostile guest from echoing what it
// was sent.
func Scrub(err error, password []byte, withheld string) error {
	if err == nil || len(password) == 0 {
		return err
	}
	msg := []byte(fmt.Sprintf("%v %+v", err, err))
	defer clear(msg)
	b64 := make([]byte, base64.StdEncoding.EncodedLen(len(password)))
	defer clear(b64)
	base64.StdEncoding.Encode(b64, password)
	if !bytes.Contains(msg, password) && !bytes.Contains(msg, b64) {
		return err
	}
	out := errors.New(withheld)
	for _, sentinel := range []error{ErrUserNotFound, ErrGuestNotAlive, ErrNoGuestChannel, ErrMachineNotFound, ErrNotRunning} {
		if errors.Is(err, sentinel) {
			out = fmt.Errorf("%s: %w", withheld, sentinel)
			break
		}
	}
	if IsTransient(err) {
		return Transient(out)
	}
	return out
}
