package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// TakeRate is one step of a GCRA (generic cell rate algorithm) on key's
// row of rate_limits, the budget every replica shares: the request is
// admitted when the key's theoretical arrival time (tat), advanced by
// interval, is at most burst intervals ahead of now, and tat then moves
// by interval. A refused request changes nothing, and retryAfter says
// when one would be admitted. One statement when admitted.
func (s *Store) TakeRate(ctx context.Context, key string, interval time.Duration, burst int) (retryAfter time.Duration, ok bool, err error) {
	now := s.now().UnixMicro()
	t := max(interval.Microseconds(), 1)
	limit := int64(max(burst, 1)) * t
	next := s.greatest("rate_limits.tat", "?") + " + ?"
	var tat int64
	err = s.c(s.DB).QueryRowContext(ctx, `INSERT INTO rate_limits (key, tat) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET tat = `+next+`
		WHERE `+next+` - ? <= ?
		RETURNING tat`, key, now+t, now, t, now, t, now, limit).Scan(&tat)
	if err == nil {
		return 0, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("rate limit: %w", err)
	}
	// Refused: the wait is how far the next arrival overshoots the burst.
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT tat FROM rate_limits WHERE key = ?`, key).Scan(&tat); err != nil {
		return 0, false, fmt.Errorf("rate limit: %w", err)
	}
	wait := max(tat, now) + t - now - limit
	return time.Duration(max(wait, 1)) * time.Microsecond, false, nil
}

// PruneRateLimits deletes the rows of keys whose budget has been full
// since before: they hold nothing a fresh row would not.
func (s *Store) PruneRateLimits(ctx context.Context, before time.Time) error {
	if _, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM rate_limits WHERE tat < ?`, before.UnixMicro()); err != nil {
		return fmt.Errorf("prune rate limits: %w", err)
	}
	return nil
}

// greatest is the larger of two SQL expressions.
func (s *Store) greatest(a, b string) string {
	if s.dialect == Postgres {
		return "GREATEST(" + a + ", " + b + ")"
	}
	return "MAX(" + a + ", " + b + ")"
}
