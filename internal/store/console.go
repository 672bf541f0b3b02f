package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ConsoleUser is a web console user as stored.
type ConsoleUser struct {
	Name              string
	Tenant            string
	Admin             bool
	PasswordHash      string
	MustChange        bool
	CreatedAt         time.Time
	PasswordChangedAt time.Time
}

// CreateConsoleUser inserts a user; ErrConflict if the name is taken.
func (s *Store) CreateConsoleUser(ctx context.Context, q Querier, u ConsoleUser) error {
	res, err := s.c(q).ExecContext(ctx, `INSERT INTO console_users
		(name, tenant_id, admin, password_hash, must_change, created_at, password_changed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
		u.Name, u.Tenant, boolInt(u.Admin), u.PasswordHash, boolInt(u.MustChange), ms(u.CreatedAt), ms(u.PasswordChangedAt))
	if err != nil {
		return fmt.Errorf("create console user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("console user %q: %w", u.Name, ErrConflict)
	}
	return nil
}

// GetConsoleUser reads one user by name.
func (s *Store) GetConsoleUser(ctx context.Context, q Querier, name string) (ConsoleUser, error) {
	var u ConsoleUser
	var admin, must int
	var created, changed int64
	err := s.c(q).QueryRowContext(ctx, `SELECT name, tenant_id, admin, password_hash, must_change, created_at, password_changed_at
		FROM console_users WHERE name = ?`, name).Scan(&u.Name, &u.Tenant, &admin, &u.PasswordHash, &must, &created, &changed)
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("console user %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("get console user: %w", err)
	}
	u.Admin, u.MustChange = admin != 0, must != 0
	u.CreatedAt, u.PasswordChangedAt = fromMS(created), fromMS(changed)
	return u, nil
}

// ListConsoleUsers lists the users of tenant (all tenants if empty), by name.
func (s *Store) ListConsoleUsers(ctx context.Context, tenant string) ([]ConsoleUser, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT name, tenant_id, admin, must_change, created_at, password_changed_at
		FROM console_users WHERE (? = '' OR tenant_id = ?) ORDER BY name`, tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("list console users: %w", err)
	}
	defer rows.Close()
	out := []ConsoleUser{}
	for rows.Next() {
		var u ConsoleUser
		var admin, must int
		var created, changed int64
		if err := rows.Scan(&u.Name, &u.Tenant, &admin, &must, &created, &changed); err != nil {
			return nil, fmt.Errorf("list console users: %w", err)
		}
		u.Admin, u.MustChange = admin != 0, must != 0
		u.CreatedAt, u.PasswordChangedAt = fromMS(created), fromMS(changed)
		out = append(out, u)
	}
	return out, rows.Err()
}

// CountConsoleUsers counts every console user.
func (s *Store) CountConsoleUsers(ctx context.Context) (int, error) {
	var n int
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT COUNT(*) FROM console_users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count console users: %w", err)
	}
	return n, nil
}

// SetConsolePassword replaces a user's password hash and must-change flag.
func (s *Store) SetConsolePassword(ctx context.Context, q Querier, name, hash string, mustChange bool) error {
	res, err := s.c(q).ExecContext(ctx, `UPDATE console_users SET password_hash = ?, must_change = ?, password_changed_at = ?
		WHERE name = ?`, hash, boolInt(mustChange), ms(s.now()), name)
	if err != nil {
		return fmt.Errorf("set console password: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("console user %q: %w", name, ErrNotFound)
	}
	return nil
}

// ConsoleSession is a signed-in session.
type ConsoleSession struct {
	TokenHash  []byte
	User       string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

// CreateConsoleSession inserts a session.
func (s *Store) CreateConsoleSession(ctx context.Context, q Querier, sess ConsoleSession) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO console_sessions (token_hash, user_name, created_at, last_seen_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, sess.TokenHash, sess.User, ms(sess.CreatedAt), ms(sess.LastSeenAt), ms(sess.ExpiresAt))
	if err != nil {
		return fmt.Errorf("create console session: %w", err)
	}
	return nil
}

// GetConsoleSession reads a session by its token's hash.
func (s *Store) GetConsoleSession(ctx context.Context, tokenHash []byte) (ConsoleSession, error) {
	var sess ConsoleSession
	var created, seen, expires int64
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT token_hash, user_name, created_at, last_seen_at, expires_at
		FROM console_sessions WHERE token_hash = ?`, tokenHash).Scan(&sess.TokenHash, &sess.User, &created, &seen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return sess, fmt.Errorf("console session: %w", ErrNotFound)
	}
	if err != nil {
		return sess, fmt.Errorf("get console session: %w", err)
	}
	sess.CreatedAt, sess.LastSeenAt, sess.ExpiresAt = fromMS(created), fromMS(seen), fromMS(expires)
	return sess, nil
}

// TouchConsoleSession records a session's use.
func (s *Store) TouchConsoleSession(ctx context.Context, tokenHash []byte, at time.Time) error {
	_, err := s.c(s.DB).ExecContext(ctx, `UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?`, ms(at), tokenHash)
	if err != nil {
		return fmt.Errorf("touch console session: %w", err)
	}
	return nil
}

// DeleteConsoleSession ends one session.
func (s *Store) DeleteConsoleSession(ctx context.Context, q Querier, tokenHash []byte) error {
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM console_sessions WHERE token_hash = ?`, tokenHash); err != nil {
		return fmt.Errorf("delete console session: %w", err)
	}
	return nil
}

// DeleteConsoleSessionsOf ends every session of user but keep (a password
// change signs the user out everywhere else).
func (s *Store) DeleteConsoleSessionsOf(ctx context.Context, q Querier, user string, keep []byte) error {
	if keep == nil {
		keep = []byte{}
	}
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM console_sessions WHERE user_name = ? AND token_hash <> ?`, user, keep); err != nil {
		return fmt.Errorf("delete console sessions: %w", err)
	}
	return nil
}

// PruneConsoleSessions deletes the sessions that expired before now.
func (s *Store) PruneConsoleSessions(ctx context.Context, q Querier, now time.Time) error {
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_at < ?`, ms(now)); err != nil {
		return fmt.Errorf("prune console sessions: %w", err)
	}
	return nil
}

// PruneSignInFailures deletes failure counts whose window began before
// windowStart and whose lock, if any, has ended.
func (s *Store) PruneSignInFailures(ctx context.Context, q Querier, windowStart time.Time) error {
	_, err := s.c(q).ExecContext(ctx, `DELETE FROM console_signin_failures WHERE window_start < ? AND locked_until < ?`,
		ms(windowStart), ms(s.now()))
	if err != nil {
		return fmt.Errorf("prune sign-in failures: %w", err)
	}
	return nil
}

// SignInFailures is the failure count of one subject.
type SignInFailures struct {
	Failures    int
	WindowStart time.Time
	LockedUntil time.Time
}

// GetSignInFailures reads a subject's failures; zero if none.
func (s *Store) GetSignInFailures(ctx context.Context, q Querier, subject string) (SignInFailures, error) {
	var f SignInFailures
	var start, locked int64
	err := s.c(q).QueryRowContext(ctx, `SELECT failures, window_start, locked_until FROM console_signin_failures
		WHERE subject = ?`, subject).Scan(&f.Failures, &start, &locked)
	if errors.Is(err, sql.ErrNoRows) {
		return SignInFailures{}, nil
	}
	if err != nil {
		return f, fmt.Errorf("get sign-in failures: %w", err)
	}
	f.WindowStart, f.LockedUntil = fromMS(start), fromMS(locked)
	return f, nil
}

// PutSignInFailures writes a subject's failures.
func (s *Store) PutSignInFailures(ctx context.Context, q Querier, subject string, f SignInFailures) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO console_signin_failures (subject, failures, window_start, locked_until)
		VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET failures = excluded.failures,
		window_start = excluded.window_start, locked_until = excluded.locked_until`,
		subject, f.Failures, ms(f.WindowStart), ms(f.LockedUntil))
	if err != nil {
		return fmt.Errorf("put sign-in failures: %w", err)
	}
	return nil
}

// CountSignInFailure counts one failed sign-in of subject at now, in one
// statement so that failures counted at once by concurrent transactions
// (other replicas) all count: a window older than window starts afresh,
// and reaching limit locks the subject until now+lock. It returns the
// subject's count after this failure.
func (s *Store) CountSignInFailure(ctx context.Context, q Querier, subject string, now time.Time,
	window time.Duration, limit int, lock time.Duration) (SignInFailures, error) {
	at, stale, until := ms(now), ms(now.Add(-window)), ms(now.Add(lock))
	lockedAtFirst := int64(0)
	if limit <= 1 {
		lockedAtFirst = until
	}
	const t = "console_signin_failures"
	var f SignInFailures
	var start, locked int64
	err := s.c(q).QueryRowContext(ctx, `INSERT INTO `+t+` (subject, failures, window_start, locked_until)
		VALUES (?, 1, ?, ?) ON CONFLICT (subject) DO UPDATE SET
		failures = CASE WHEN `+t+`.window_start < ? THEN 1 ELSE `+t+`.failures + 1 END,
		window_start = CASE WHEN `+t+`.window_start < ? THEN ? ELSE `+t+`.window_start END,
		locked_until = CASE WHEN (CASE WHEN `+t+`.window_start < ? THEN 1 ELSE `+t+`.failures + 1 END) >= ? THEN ?
			WHEN `+t+`.window_start < ? THEN 0 ELSE `+t+`.locked_until END
		RETURNING failures, window_start, locked_until`,
		subject, at, lockedAtFirst, stale, stale, at, stale, limit, until, stale).Scan(&f.Failures, &start, &locked)
	if err != nil {
		return f, fmt.Errorf("count sign-in failure: %w", err)
	}
	f.WindowStart, f.LockedUntil = fromMS(start), fromMS(locked)
	return f, nil
}

// ClearSignInFailures forgets a subject's failures.
func (s *Store) ClearSignInFailures(ctx context.Context, q Querier, subject string) error {
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM console_signin_failures WHERE subject = ?`, subject); err != nil {
		return fmt.Errorf("clear sign-in failures: %w", err)
	}
	return nil
}
