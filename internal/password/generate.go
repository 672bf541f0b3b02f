package password

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf8"
)

// generatedLength is the length Generate aims for, within the policy's
// limits: 20 characters from the 84 easy ones of the host rules give about
// 127 bits (at least 100 is the aim), and the 8-16 character dialects get
// their maximum, 16.
const generatedLength = 20

// HardToType are the characters Generate leaves out although a policy may
// allow them: awkward to type in a VM's console (space, quotes and the
// backtick move on foreign keyboard layouts) or to quote in a shell
// (backslash, ; | $ & < >). A password a person typed may hold them; a
// generated one, which people copy into consoles and scripts, does not.
const HardToType = " '\"`\\;|$&<>"

// typeable is allowed without HardToType, or allowed itself if that leaves
// nothing.
func typeable(allowed string) string {
	out := strings.Map(func(r rune) rune {
		if strings.ContainsRune(HardToType, r) {
			return -1
		}
		return r
	}, allowed)
	if out == "" {
		return allowed
	}
	return out
}

// A random draw fails the policy only by bad luck (a class left out, or the
// user name spelled out by chance), so a few attempts are nearly always
// enough; the limit only stops a policy that cannot be met.
const maxAttempts = 1000

// ErrUnsatisfiable is returned by Generate when the policy cannot be met.
var ErrUnsatisfiable = errors.New("password: policy cannot be satisfied")

// Generate returns a random password, from crypto/rand, that Check accepts
// under p for any user name shorter than MinUserNameLength. It has a
// character of every class of p, even where p does not ask for it, and
// none of HardToType. The caller owns the slice and should clear it once
// the password is handed on.
func Generate(p Policy) ([]byte, error) {
	return GenerateForUser(p, "")
}

// GenerateForUser is Generate for a known user name: the password also
// passes the contains_user rule for that user.
func GenerateForUser(p Policy, user string) ([]byte, error) {
	easy := typeable(p.Allowed)
	alphabet := []rune(easy)
	if len(alphabet) == 0 {
		return nil, fmt.Errorf("%w: %s allows no characters", ErrUnsatisfiable, p.Name)
	}
	n := max(generatedLength, p.MinLength)
	if p.MaxLength > 0 {
		n = min(n, p.MaxLength)
	}
	if n <= 0 || n < p.MinLength {
		return nil, fmt.Errorf("%w: %s has no valid length", ErrUnsatisfiable, p.Name)
	}
	size := big.NewInt(int64(len(alphabet)))
	for range maxAttempts {
		pw := make([]byte, 0, n*utf8.UTFMax)
		for range n {
			i, err := rand.Int(rand.Reader, size)
			if err != nil {
				clear(pw)
				return nil, fmt.Errorf("password: reading random numbers: %w", err)
			}
			pw = utf8.AppendRune(pw, alphabet[i.Int64()])
		}
		if Check(p, pw, user) == nil && hasEveryClass(pw, p, easy) {
			return pw, nil
		}
		clear(pw)
	}
	return nil, fmt.Errorf("%w: no %s password found in %d attempts", ErrUnsatisfiable, p.Name, maxAttempts)
}

// hasEveryClass skips classes with no character in alphabet, which no
// password drawn from it could contain.
func hasEveryClass(pw []byte, p Policy, alphabet string) bool {
	for _, c := range p.Classes {
		if strings.ContainsAny(alphabet, c.Chars) && !bytes.ContainsAny(pw, c.Chars) {
			return false
		}
	}
	return true
}
