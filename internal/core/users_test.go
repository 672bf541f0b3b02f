package core

import (
	"strings"
	"testing"
)

func TestConsolePasswordHash(t *testing.T) {
	pw := []byte("Correct-horse-42")
	h1, err := hashConsolePassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := hashConsolePassword(pw)
	if h1 == h2 {
		t.Errorf("two hashes of one password are equal: the salt is not random")
	}
	if !strings.HasPrefix(h1, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h1, string(pw)) {
		t.Errorf("unexpected encoding %q", h1)
	}
	if !verifyConsolePassword(h1, pw) {
		t.Errorf("the right password does not verify")
	}
	for _, bad := range []string{"", "Correct-horse-43", "correct-horse-42"} {
		if verifyConsolePassword(h1, []byte(bad)) {
			t.Errorf("%q verifies", bad)
		}
	}
	for _, enc := range []string{"", "$argon2i$v=19$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$garbage$AA$AA", dummyHash} {
		if verifyConsolePassword(enc, pw) {
			t.Errorf("hash %q verifies", enc)
		}
	}
}
