package qga

import (
	"errors"
	"fmt"

	"github.com/tredoe/osutil/user/crypt/sha512_crypt"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// The hash is SHA-512 crypt ("$6$"): every glibc and musl guest verifies
// it (yescrypt, the newer default, is glibc-with-libxcrypt only), and
// chpasswd -e stores it as it comes, so it is what ends up in the guest's
// /etc/shadow. It is computed in Go (tredoe/osutil's sha512_crypt), so
// the server stays pure Go; the tests check it against the system's
// crypt(3).

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
// of osType (driver.Ref.OSType): for Linux a fresh SHA-512 crypt hash of
// password, with crypted true, so that the password itself never crosses
// libvirtd, QEMU, the channel or the agent; for any other guest (Windows,
// whose agent refuses hashes) a copy of password. The caller wipes secret
// once it was sent.
func GuestSecret(osType string, password []byte) (secret []byte, crypted bool, err error) {
	if len(password) == 0 {
		return nil, false, errors.New("qga: empty password")
	}
	if osType != driver.OSLinux {
		return append([]byte(nil), password...), false, nil
	}
	gen := sha512_crypt.GetSalt()
	salt := gen.GenerateWRounds(sha512_crypt.SaltLenMax, cryptRounds)
	h, err := sha512_crypt.New().Generate(password, salt)
	if err != nil {
		return nil, false, fmt.Errorf("qga: hash the password for a Linux guest: %w", err)
	}
	return []byte(h), true, nil
}
