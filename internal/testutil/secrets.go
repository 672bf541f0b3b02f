package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

// NewPassword returns a fresh 14-character password that every rule
// fleetpass enforces accepts: the Linux and Windows rules, the action
// API's and the bare-metal API's.
func NewPassword() string {
	const alnum = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := []byte("Fp")
	for range 10 {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		if err != nil {
			panic(err)
		}
		b = append(b, alnum[n.Int64()])
	}
	return string(b) + "9!"
}

// Forms are the byte strings a leaked secret would show as: itself and its
// base64 forms, padded (as guest-set-user-password carries it) and not.
func Forms(secret string) [][]byte {
	return [][]byte{[]byte(secret), []byte(base64.StdEncoding.EncodeToString([]byte(secret))),
		[]byte(base64.RawStdEncoding.EncodeToString([]byte(secret)))}
}

// ContainsSecret reports whether data holds secret in any of its Forms.
func ContainsSecret(data []byte, secret string) bool {
	for _, f := range Forms(secret) {
		if bytes.Contains(data, f) {
			return true
		}
	}
	return false
}

// AssertNotInDir fails t if secret is in any file below dir, or if a file
// cannot be read: a scan that skips what it cannot open proves nothing.
// Files that vanish during the scan (a WAL checkpointed away) are fine.
func AssertNotInDir(t testing.TB, dir, secret string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path != dir {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		files++
		if ContainsSecret(data, secret) {
			t.Errorf("the secret is in %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s for the secret: %v", dir, err)
	}
	if files == 0 {
		t.Fatalf("scan %s for the secret: no file to scan", dir)
	}
}
