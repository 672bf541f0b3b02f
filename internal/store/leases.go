package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Lease is a duty one replica at a time may do, such as following a libvirt
// host (HostLease). Its Epoch grows with every new term, so that work
// stamped with an epoch (CheckLease) is refused once another term began.
type Lease struct {
	Name, Holder string
	Epoch        int64
	// ExpiresAt is on the database's clock.
	ExpiresAt time.Time
}

// ErrLeaseLost is returned by CheckLease (and work fenced by it) when the
// lease is no longer the caller's, or is in another term.
var ErrLeaseLost = errors.New("lease lost")

// HostLease is the name of the lease of a libvirt host's owner.
func HostLease(hostID string) string { return "host:" + hostID }

// dbNow is the database's clock in unix milliseconds, as an SQL
// expression. Leases use it rather than each replica's own clock: two
// replicas whose clocks disagree still agree on whether a lease expired.
func (s *Store) dbNow() string {
	if s.dialect == Postgres {
		return `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)`
	}
	return `CAST(unixepoch('subsec') * 1000 AS INTEGER)`
}

func (s *Store) withNow(q string) string { return strings.ReplaceAll(q, "{now}", s.dbNow()) }

// AcquireLease takes lease name for holder for ttl, or renews it when
// holder has it already. It reports false, with no error, while another
// holder's term runs. A lease taken by another holder, or taken again after
// it lapsed, starts a new term with a greater epoch.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, bool, error) {
	return s.acquire(ctx, name, holder, ttl, `WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}`)
}

// TakeLease takes lease name for holder whoever holds it, in a new term
// unless holder has it already. Only for a database one process at a time
// may use (SQLite, whose data directory is locked): another holder there is
// a process that is gone.
func (s *Store) TakeLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	l, _, err := s.acquire(ctx, name, holder, ttl, ``)
	return l, err
}

func (s *Store) acquire(ctx context.Context, name, holder string, ttl time.Duration, where string) (Lease, bool, error) {
	if name == "" || holder == "" {
		return Lease{}, false, fmt.Errorf("acquire lease: empty name or holder")
	}
	var epoch, expires int64
	err := s.c(s.DB).QueryRowContext(ctx, s.withNow(`INSERT INTO leases (name, holder, epoch, expires_at)
		VALUES (?, ?, 1, {now} + ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
			epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > {now}
				THEN leases.epoch ELSE leases.epoch + 1 END
		`+where+`
		RETURNING epoch, expires_at`), name, holder, ttl.Milliseconds()).Scan(&epoch, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return Lease{Name: name, Holder: holder, Epoch: epoch, ExpiresAt: fromMS(expires)}, true, nil
}

// RenewLeases extends by ttl, in one statement, those of the leases names
// that holder holds in a term still running, and returns them. A lease left
// out has lapsed or passed to another holder: its duty is no longer
// holder's.
func (s *Store) RenewLeases(ctx context.Context, holder string, names []string, ttl time.Duration) ([]Lease, error) {
	if len(names) == 0 {
		return nil, nil
	}
	args := append([]any{ttl.Milliseconds(), holder}, anys(names)...)
	rows, err := s.c(s.DB).QueryContext(ctx, s.withNow(`UPDATE leases SET expires_at = {now} + ?
		WHERE holder = ? AND name IN (`+placeholders(len(names))+`) AND expires_at > {now}
		RETURNING name, epoch, expires_at`), args...)
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	return scanLeases(rows, holder)
}

// ReleaseLease ends holder's term of lease name at once, so that another
// holder need not wait for it to expire. The row stays, with its epoch.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := s.c(s.DB).ExecContext(ctx, s.withNow(`UPDATE leases SET expires_at = {now}
		WHERE name = ? AND holder = ? AND expires_at > {now}`), name, holder)
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// LeasesHeldBy lists the leases holder holds now (what a replica owns), by
// name.
func (s *Store) LeasesHeldBy(ctx context.Context, holder string) ([]Lease, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, s.withNow(`SELECT name, epoch, expires_at FROM leases
		WHERE holder = ? AND expires_at > {now} ORDER BY name`), holder)
	if err != nil {
		return nil, fmt.Errorf("leases held by %s: %w", holder, err)
	}
	return scanLeases(rows, holder)
}

// GetLease reads lease name, expired or not; ErrNotFound if it was never
// taken.
func (s *Store) GetLease(ctx context.Context, name string) (Lease, error) {
	l := Lease{Name: name}
	var expires int64
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT holder, epoch, expires_at FROM leases WHERE name = ?`, name).
		Scan(&l.Holder, &l.Epoch, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("lease %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return l, fmt.Errorf("get lease %s: %w", name, err)
	}
	l.ExpiresAt = fromMS(expires)
	return l, nil
}

// CheckLease fails with ErrLeaseLost unless l is still its holder's, in the
// same term, and unexpired. Called in the transaction of work only the
// lease's holder may do, it fences that work: on PostgreSQL the row is read
// FOR SHARE, so the lease cannot pass to another holder before the
// transaction ends.
func (s *Store) CheckLease(ctx context.Context, tx *sql.Tx, l Lease) error {
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR SHARE"
	}
	var one int
	err := s.c(tx).QueryRowContext(ctx, s.withNow(`SELECT 1 FROM leases
		WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > {now}`+lock), l.Name, l.Holder, l.Epoch).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s (holder %s, epoch %d): %w", l.Name, l.Holder, l.Epoch, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("check lease %s: %w", l.Name, err)
	}
	return nil
}

func scanLeases(rows *sql.Rows, holder string) ([]Lease, error) {
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l := Lease{Holder: holder}
		var expires int64
		if err := rows.Scan(&l.Name, &l.Epoch, &expires); err != nil {
			return nil, fmt.Errorf("scan lease: %w", err)
		}
		l.ExpiresAt = fromMS(expires)
		out = append(out, l)
	}
	return out, rows.Err()
}
