// Package sealer encrypts secrets at rest (docs/design.md#secrets): pending
// passwords and the HMAC secrets of API keys are kept only sealed with
// AES-256-GCM under a key stored in the data directory with mode 0600.
package sealer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// KeySize is the AES-256 key size.
const KeySize = 32

// Sealer seals and opens small secrets. Safe for concurrent use.
type Sealer struct {
	aead   cipher.AEAD
	macKey []byte
}

// New makes a Sealer from a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealer: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	// A separate key for MACs, derived so that one key file serves both.
	h := hmac.New(sha256.New, key)
	h.Write([]byte("fleetpass mac key"))
	return &Sealer{aead: aead, macKey: h.Sum(nil)}, nil
}

// MAC returns HMAC-SHA256 of data under a key derived from the sealing key:
// a fingerprint of a request that holds a password, which cannot be guessed
// back from a database dump without the key file.
func (s *Sealer) MAC(data ...[]byte) []byte {
	h := hmac.New(sha256.New, s.macKey)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// LoadOrCreate reads the key file at path, creating it (mode 0600) with a
// fresh random key if it does not exist. A key file readable by others is
// refused: anyone who can read it can open every pending password.
func LoadOrCreate(path string) (*Sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("sealer: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sealer: create key: %w", err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			return nil, fmt.Errorf("sealer: write key: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sealer: write key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("sealer: write key: %w", err)
		}
		return New(key)
	}
	if err != nil {
		return nil, fmt.Errorf("sealer: read key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sealer: key file %s has mode %v; it must be 0600", path, st.Mode().Perm())
	}
	return New(key)
}

// Load reads the key file at path, which must exist: a key given to the
// server (--secret-key-file) is never made up in its place. A key file
// readable by others is refused.
func Load(path string) (*Sealer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealer: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sealer: key file %s has mode %v; it must be 0600 (or 0400)", path, st.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealer: read key: %w", err)
	}
	return New(key)
}

// KeyCheck is a value that tells keys apart without revealing them: a
// MAC of a fixed text under the key. A database records the first one it
// meets, so a server with another key is refused at start.
func (s *Sealer) KeyCheck() []byte {
	return s.MAC([]byte("fleetpass sealing key check v1"))
}

// Seal encrypts plaintext bound to aad (the record it belongs to, so a sealed
// value copied to another record does not open).
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, aad), nil
}

// Open decrypts what Seal made with the same aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errors.New("open: sealed value too short")
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return out, nil
}

// Wipe overwrites b with zeros. Go may have copied the bytes elsewhere, but
// wiping the buffers we own keeps the window short.
func Wipe(b []byte) {
	clear(b)
}
