package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// BMC is a bare-metal instance's BMC credentials and what its last check
// found. The password is sealed; the store never sees it in clear.
type BMC struct {
	InstanceID     string
	User           string
	PasswordSealed []byte
	CipherSuite    int
	AcceptsSuite0  bool
	LastError      string
	CheckedAt      *time.Time
	UpdatedAt      time.Time
}

const bmcColumns = `instance_id, user_name, password_sealed, cipher_suite, accepts_suite0, last_error, checked_at, updated_at`

func scanBMC(sc interface{ Scan(...any) error }) (BMC, error) {
	var b BMC
	var suite0 int
	var checked sql.NullInt64
	var updated int64
	err := sc.Scan(&b.InstanceID, &b.User, &b.PasswordSealed, &b.CipherSuite, &suite0, &b.LastError, &checked, &updated)
	b.AcceptsSuite0 = suite0 == 1
	b.CheckedAt = fromNullMS(checked)
	b.UpdatedAt = fromMS(updated)
	return b, err
}

// PutBMC creates or replaces an instance's BMC record.
func (s *Store) PutBMC(ctx context.Context, q Querier, b BMC) error {
	var checked any
	if b.CheckedAt != nil {
		checked = ms(*b.CheckedAt)
	}
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO bmcs (`+bmcColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (instance_id) DO UPDATE SET user_name = excluded.user_name, password_sealed = excluded.password_sealed,
		cipher_suite = excluded.cipher_suite, accepts_suite0 = excluded.accepts_suite0, last_error = excluded.last_error,
		checked_at = excluded.checked_at, updated_at = excluded.updated_at`,
		b.InstanceID, b.User, b.PasswordSealed, b.CipherSuite, boolInt(b.AcceptsSuite0), b.LastError, checked, ms(s.now()))
	if err != nil {
		return fmt.Errorf("put bmc: %w", err)
	}
	return nil
}

// GetBMC reads an instance's BMC record; ErrNotFound when it has none.
func (s *Store) GetBMC(ctx context.Context, q Querier, instanceID string) (BMC, error) {
	b, err := scanBMC(s.c(q).QueryRowContext(ctx, `SELECT `+bmcColumns+` FROM bmcs WHERE instance_id = ?`, instanceID))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("bmc of %s: %w", instanceID, ErrNotFound)
	}
	if err != nil {
		return b, fmt.Errorf("get bmc: %w", err)
	}
	return b, nil
}

// GetBMCs reads the BMC records of the given instances (those that have
// one), by instance id.
func (s *Store) GetBMCs(ctx context.Context, q Querier, ids []string) (map[string]BMC, error) {
	out := make(map[string]BMC)
	for len(ids) > 0 {
		n := min(len(ids), 500)
		rows, err := s.c(q).QueryContext(ctx, `SELECT `+bmcColumns+` FROM bmcs WHERE instance_id IN (`+placeholders(n)+`)`,
			anys(ids[:n])...)
		if err != nil {
			return nil, fmt.Errorf("get bmcs: %w", err)
		}
		for rows.Next() {
			b, err := scanBMC(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("get bmcs: %w", err)
			}
			out[b.InstanceID] = b
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("get bmcs: %w", err)
		}
		ids = ids[n:]
	}
	return out, nil
}

// SetBMCCheck records what a check of a BMC found, reporting whether it
// changed.
func (s *Store) SetBMCCheck(ctx context.Context, q Querier, instanceID string, acceptsSuite0 *bool, lastError string) (bool, error) {
	now := ms(s.now())
	res, err := s.c(q).ExecContext(ctx, `UPDATE bmcs SET last_error = ?, checked_at = ?,
		accepts_suite0 = COALESCE(?, accepts_suite0) WHERE instance_id = ? AND (last_error <> ? OR accepts_suite0 <> COALESCE(?, accepts_suite0))`,
		lastError, now, nullBool(acceptsSuite0), instanceID, lastError, nullBool(acceptsSuite0))
	if err != nil {
		return false, fmt.Errorf("set bmc check: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

func nullBool(b *bool) any {
	if b == nil {
		return nil
	}
	return boolInt(*b)
}

// PowerLinkTaken reports whether an instance other than exceptID, of any
// tenant, has this power link.
func (s *Store) PowerLinkTaken(ctx context.Context, q Querier, powerDriver, address, exceptID string) (bool, error) {
	var n int
	err := s.c(q).QueryRowContext(ctx, `SELECT count(*) FROM instances WHERE power_driver = ? AND power_address = ? AND id <> ?`,
		powerDriver, address, exceptID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("power link: %w", err)
	}
	return n > 0, nil
}

// FindInstanceByName finds a tenant's instance of a power driver by name:
// the bare-metal server an agent enrolling with a token bound to that name
// joins.
func (s *Store) FindInstanceByName(ctx context.Context, q Querier, tenant, powerDriver, name string) (apiv1.Instance, error) {
	in, err := scanInstance(s.c(q).QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE tenant_id = ? AND power_driver = ? AND name = ? ORDER BY id LIMIT 1`, tenant, powerDriver, name))
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("instance %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return in, fmt.Errorf("find instance: %w", err)
	}
	return in, nil
}

// SetInstancePowerAddress moves an instance's power link to another
// address of the same driver (a BMC given a new address).
func (s *Store) SetInstancePowerAddress(ctx context.Context, q Querier, id, address string) error {
	_, err := s.c(q).ExecContext(ctx, `UPDATE instances SET power_address = ?, updated_at = ? WHERE id = ?`,
		address, ms(s.now()), id)
	if err != nil {
		return fmt.Errorf("set power address: %w", err)
	}
	return nil
}

// ListIdlePowerInstances lists the idle instances of a power driver after
// id, ordered by id (the BMC watcher's pass).
func (s *Store) ListIdlePowerInstances(ctx context.Context, powerDriver, afterID string, limit int) ([]apiv1.Instance, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE power_driver = ? AND active_operation_id IS NULL AND id > ? ORDER BY id LIMIT ?`, powerDriver, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list instances of %s: %w", powerDriver, err)
	}
	defer rows.Close()
	out := []apiv1.Instance{}
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("list instances of %s: %w", powerDriver, err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// CountFaultyBMCs counts the BMCs whose last check failed (for /metrics).
func (s *Store) CountFaultyBMCs(ctx context.Context) (int, error) {
	var n int
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT count(*) FROM bmcs WHERE last_error <> ''`).Scan(&n)
	return n, err
}
