package sealer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenRoundTripBoundToAAD(t *testing.T) {
	s, err := LoadOrCreate(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("Secret-pw-1"), []byte("op-1/ins-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("Secret-pw-1")) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := s.Open(sealed, []byte("op-1/ins-1"))
	if err != nil || string(got) != "Secret-pw-1" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := s.Open(sealed, []byte("op-1/ins-2")); err == nil {
		t.Fatal("a sealed value opened under another record's aad")
	}
}

func TestKeyFileIsCreatedPrivateAndReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	s1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	sealed, _ := s1.Seal([]byte("x"), nil)
	s2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Open(sealed, nil); err != nil {
		t.Fatalf("reloaded key cannot open: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil {
		t.Fatal("a world-readable key file was accepted")
	}
}
