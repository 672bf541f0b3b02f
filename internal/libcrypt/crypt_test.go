//go:build cgo && linux

package libcrypt

import (
	"strings"
	"testing"
)

func TestHashVerifiesAndSaltsEachTime(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"$y$", "$y$"},
		{"$6$", "$6$"},
		{"$5$", "$5$"},
		{"$2b$", "$2b$"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			pw := []byte("Correct-Horse-9")
			h1, err := Hash(pw, tc.prefix, 0)
			if err != nil {
				t.Fatal(err)
			}
			h2, _ := Hash(pw, tc.prefix, 0)
			if !strings.HasPrefix(h1, tc.want) || h1 == h2 {
				t.Fatalf("hashes %q and %q: want prefix %q and distinct salts", h1, h2, tc.want)
			}
			if strings.Contains(h1, string(pw)) {
				t.Fatal("the hash holds the password")
			}
			if ok, err := Verify(pw, h1); !ok || err != nil {
				t.Fatalf("Verify(right password) = %v, %v", ok, err)
			}
			if ok, _ := Verify([]byte("wrong-password"), h1); ok {
				t.Fatal("Verify accepted a wrong password")
			}
		})
	}
}

func TestHashRoundsAreHonoured(t *testing.T) {
	h, err := Hash([]byte("pw-with-rounds"), "$6$", 5000)
	if err != nil {
		t.Fatal(err)
	}
	// SHA-512 spells non-default costs only; 5000 is its default.
	h2, err := Hash([]byte("pw-with-rounds"), "$6$", 10000)
	if err != nil || !strings.HasPrefix(h2, "$6$rounds=10000$") {
		t.Fatalf("Hash(rounds 10000) = %q, %v (and %q)", h2, err, h)
	}
}

func TestHashRefusesNULAndUnknownMethods(t *testing.T) {
	if _, err := Hash([]byte("a\x00b"), "$6$", 0); err == nil {
		t.Fatal("a password with a NUL byte was hashed")
	}
	if _, err := Hash([]byte("pw"), "$nope$", 0); err == nil {
		t.Fatal("an unknown method hashed")
	}
}
