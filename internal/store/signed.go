package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SignedRequest is the record of a signature's first use (action API).
type SignedRequest struct {
	Key string
	// Scope is the path and action the signature was first used with.
	Scope    string
	Mutating bool
	// Answered is set once the first request's answer is recorded: Status,
	// RequestID and Answer (the body) are then the answer to repeat.
	Answered  bool
	Status    int
	RequestID string
	Answer    []byte
}

// ClaimSignedRequest records the first use of a signature until expires.
// It reports claimed when this call recorded it; otherwise it returns the
// record of the earlier use. Expired records are pruned in the same
// transaction.
func (s *Store) ClaimSignedRequest(ctx context.Context, r SignedRequest, expires time.Time) (SignedRequest, bool, error) {
	var prev SignedRequest
	claimed := false
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.c(tx).ExecContext(ctx, `DELETE FROM signed_requests WHERE expires_at < ?`, ms(s.now())); err != nil {
			return fmt.Errorf("prune signed requests: %w", err)
		}
		res, err := s.c(tx).ExecContext(ctx,
			`INSERT INTO signed_requests (key, scope, mutating, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`,
			r.Key, r.Scope, boolInt(r.Mutating), ms(expires))
		if err != nil {
			return fmt.Errorf("claim signed request: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("claim signed request: %w", err)
		}
		if n == 1 {
			claimed, prev = true, r
			return nil
		}
		prev, err = getSignedRequest(ctx, s.c(tx), r.Key)
		return err
	})
	return prev, claimed, err
}

// SignedRequestOf reads the record of a signature.
func (s *Store) SignedRequestOf(ctx context.Context, key string) (SignedRequest, error) {
	return getSignedRequest(ctx, s.c(s.DB), key)
}

func getSignedRequest(ctx context.Context, q cached, key string) (SignedRequest, error) {
	r := SignedRequest{Key: key}
	var mutating, answered int
	err := q.QueryRowContext(ctx,
		`SELECT scope, mutating, answered, status, request_id, answer FROM signed_requests WHERE key = ?`, key).
		Scan(&r.Scope, &mutating, &answered, &r.Status, &r.RequestID, &r.Answer)
	r.Mutating, r.Answered = mutating != 0, answered != 0
	if errors.Is(err, sql.ErrNoRows) {
		return SignedRequest{}, fmt.Errorf("signed request: %w", ErrNotFound)
	}
	if err != nil {
		return SignedRequest{}, fmt.Errorf("get signed request: %w", err)
	}
	return r, nil
}

// AnswerSignedRequest records the answer of a claimed signature's request.
func (s *Store) AnswerSignedRequest(ctx context.Context, key string, status int, requestID string, answer []byte) error {
	if _, err := s.c(s.DB).ExecContext(ctx,
		`UPDATE signed_requests SET answered = ?, status = ?, request_id = ?, answer = ? WHERE key = ?`,
		1, status, requestID, answer, key); err != nil {
		return fmt.Errorf("answer signed request: %w", err)
	}
	return nil
}

// ReleaseSignedRequest forgets a claimed signature whose request was
// refused before anything ran, so that it can be used again.
func (s *Store) ReleaseSignedRequest(ctx context.Context, key string) error {
	if _, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM signed_requests WHERE key = ? AND answered = 0`, key); err != nil {
		return fmt.Errorf("release signed request: %w", err)
	}
	return nil
}
