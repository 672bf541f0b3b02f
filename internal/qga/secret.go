package qga

import (
	"errors"
	"fmt"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
)

// cryptPrefix is SHA-512 crypt: every glibc and musl guest verifies it
// (yescrypt, the newer default, is glibc-with-libxcrypt only), and
// chpasswd -e stores it as it comes, so it is what ends up in the guest's
// /etc/shadow.
const cryptPrefix = "$6$"

// cryptRounds is the hash's cost. The hash is what someone who reads it on
// the way (a debug log of libvirtd or qemu-ga) or in the guest's shadow
// file gets, and a password a person chose may be guessable, so it costs
// 20 times SHA-512's default of 5,000 rounds, at which one GPU tries
// millions of guesses a second. The price is paid once per reset by the
// server and at every password login by the guest: about 30 ms on one
// x86 core (measured on the test machines), unnoticeable next to an SSH
// handshake.
// musl accepts up to 9,999,999 rounds.
const cryptRounds = 100_000

// GuestSecret returns what guest-set-user-password should carry to a guest
// of osType (driver.Ref.OSType): for Linux a fresh crypt(3) SHA-512 hash of
// password, with crypted true, so that the password itself never crosses
// libvirtd, QEMU, the channel or the agent; for any other guest (Windows,
// whose agent refuses hashes) a copy of password. The caller wipes secret
// once it was sent. Without libcrypt (a build without cgo, or not for
// Linux) a Linux guest gets an error, never the plain password.
func GuestSecret(osType string, password []byte) (secret []byte, crypted bool, err error) {
	if len(password) == 0 {
		return nil, false, errors.New("qga: empty password")
	}
	if osType != driver.OSLinux {
		return append([]byte(nil), password...), false, nil
	}
	h, err := libcrypt.Hash(password, cryptPrefix, cryptRounds)
	if errors.Is(err, libcrypt.ErrUnavailable) {
		return nil, false, fmt.Errorf("qga: a Linux guest is sent a hash of the password, and this fleetpass cannot make one: "+
			"rebuild it with cgo (CGO_ENABLED=1, on Linux, with libcrypt-dev): %w", err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("qga: hash the password for a Linux guest: %w", err)
	}
	return []byte(h), true, nil
}
