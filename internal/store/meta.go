package store

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
)

// ErrKeyMismatch is returned by CheckKey when the database was sealed
// under another key.
var ErrKeyMismatch = errors.New("the sealing key is not the one this database was sealed with")

// CheckKey compares check, a value derived from the server's sealing key,
// with the one the database recorded when it first met a key, recording
// check if there is none yet. Two servers starting at once on an empty
// database record one value: the second sees the first's.
func (s *Store) CheckKey(ctx context.Context, check []byte) error {
	if _, err := s.c(s.DB).ExecContext(ctx,
		`INSERT INTO fleetpass_meta (name, value) VALUES ('key_check', ?) ON CONFLICT (name) DO NOTHING`, check); err != nil {
		return fmt.Errorf("key check: %w", err)
	}
	var have []byte
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT value FROM fleetpass_meta WHERE name = 'key_check'`).Scan(&have); err != nil {
		return fmt.Errorf("key check: %w", err)
	}
	if subtle.ConstantTimeCompare(have, check) != 1 {
		return ErrKeyMismatch
	}
	return nil
}
