package password

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestSecurity_GeneratedPasswordsAvoidHardToTypeCharactersWithAtLeast100Bits
// pins issue 10 item 21: generated passwords are typed into VM consoles and
// pasted into shells, so they hold no space, quote, backtick, backslash,
// ; | $ & < or >, and still carry at least 100 bits.
func TestSecurity_GeneratedPasswordsAvoidHardToTypeCharactersWithAtLeast100Bits(t *testing.T) {
	for _, p := range []Policy{Linux(), Windows(), Strictest(OSLinux, OSWindows)} {
		t.Run(p.Name, func(t *testing.T) {
			alphabet := typeable(p.Allowed)
			if strings.ContainsAny(alphabet, HardToType) {
				t.Fatalf("alphabet %q holds a hard character", alphabet)
			}
			seen := map[rune]bool{}
			var length int
			for range 2000 {
				pw, err := GenerateForUser(p, "Administrator")
				if err != nil {
					t.Fatal(err)
				}
				if strings.ContainsAny(string(pw), HardToType) {
					t.Fatalf("generated %q", pw)
				}
				for _, r := range string(pw) {
					seen[r] = true
				}
				length = utf8.RuneCount(pw)
			}
			// Every easy character is drawn, so the entropy is the
			// length times log2 of the alphabet (less a fraction of a bit
			// for the draws the class rules reject).
			if len(seen) != utf8.RuneCountInString(alphabet) {
				t.Fatalf("%d distinct characters drawn of %d", len(seen), utf8.RuneCountInString(alphabet))
			}
			if bits := float64(length) * math.Log2(float64(len(seen))); bits < 101 {
				t.Fatalf("%d characters of %d: %.1f bits, want at least 100 (and a bit of margin for the class rules)", length, len(seen), bits)
			}
		})
	}
}
