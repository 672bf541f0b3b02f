package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

const hostColumns = `id, tenant_id, name, driver, uri, max_concurrency, default_os_type, created_at`

func scanHost(sc interface{ Scan(...any) error }) (apiv1.Host, error) {
	var h apiv1.Host
	var created int64
	err := sc.Scan(&h.ID, &h.Tenant, &h.Name, &h.Driver, &h.URI, &h.MaxConcurrency, &h.DefaultOSType, &created)
	h.CreatedAt = fromMS(created)
	return h, err
}

// CreateHost inserts a host; ErrConflict when its URI is registered already.
func (s *Store) CreateHost(ctx context.Context, q Querier, h *apiv1.Host) error {
	now := s.now()
	h.CreatedAt = fromMS(ms(now))
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO hosts (`+hostColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		h.ID, h.Tenant, h.Name, h.Driver, h.URI, h.MaxConcurrency, h.DefaultOSType, ms(now))
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("host %q: %w", h.URI, ErrConflict)
		}
		return fmt.Errorf("create host: %w", err)
	}
	return s.notifyHosts(ctx, q, h.ID)
}

// LockHost serialises the transactions that change a host's instances
// (reconciles) until they end: on PostgreSQL two of them at once would
// each see a new domain as missing and both add it.
func (s *Store) LockHost(ctx context.Context, tx *sql.Tx, hostID string) error {
	if err := s.lockKey(ctx, tx, lockHost, hostID); err != nil {
		return fmt.Errorf("lock host %s: %w", hostID, err)
	}
	return nil
}

// GetHost reads one host.
func (s *Store) GetHost(ctx context.Context, q Querier, id string) (apiv1.Host, error) {
	h, err := scanHost(s.c(q).QueryRowContext(ctx, `SELECT `+hostColumns+` FROM hosts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("host %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return h, fmt.Errorf("get host: %w", err)
	}
	return h, nil
}

// ListHosts lists the hosts of a tenant (all when empty), by name, with
// the number of instances each has.
func (s *Store) ListHosts(ctx context.Context, tenant string) ([]apiv1.Host, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT `+hostColumns+`,
		(SELECT count(*) FROM instances i WHERE i.power_driver = hosts.driver AND i.power_host = hosts.id)
		FROM hosts WHERE (? = '' OR tenant_id = ?) ORDER BY name, id`, tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Host{}
	for rows.Next() {
		var h apiv1.Host
		var created int64
		if err := rows.Scan(&h.ID, &h.Tenant, &h.Name, &h.Driver, &h.URI, &h.MaxConcurrency, &h.DefaultOSType,
			&created, &h.Instances); err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		h.CreatedAt = fromMS(created)
		out = append(out, h)
	}
	return out, rows.Err()
}

// DeleteHost removes a host and its instances (their operations stay as
// history). ErrConflict while an operation holds one of them.
func (s *Store) DeleteHost(ctx context.Context, q Querier, h apiv1.Host) error {
	var busy int
	if err := s.c(q).QueryRowContext(ctx, `SELECT count(*) FROM instances WHERE power_driver = ? AND power_host = ?
		AND active_operation_id IS NOT NULL`, h.Driver, h.ID).Scan(&busy); err != nil {
		return fmt.Errorf("delete host: %w", err)
	}
	if busy > 0 {
		return fmt.Errorf("host %q has %d busy instances: %w", h.ID, busy, ErrConflict)
	}
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM instances WHERE power_driver = ? AND power_host = ?`, h.Driver, h.ID); err != nil {
		return fmt.Errorf("delete host's instances: %w", err)
	}
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM host_status WHERE host_id = ?`, h.ID); err != nil {
		return fmt.Errorf("delete host's status: %w", err)
	}
	// Host ids are never reused: the lease's epoch has nothing left to fence.
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM leases WHERE name = ?`, HostLease(h.ID)); err != nil {
		return fmt.Errorf("delete host's lease: %w", err)
	}
	if _, err := s.c(q).ExecContext(ctx, `DELETE FROM hosts WHERE id = ?`, h.ID); err != nil {
		return fmt.Errorf("delete host: %w", err)
	}
	return s.notifyHosts(ctx, q, h.ID)
}

// HostInstances lists the instances whose power link is on a host.
func (s *Store) HostInstances(ctx context.Context, q Querier, powerDriver, hostID string) ([]apiv1.Instance, error) {
	rows, err := s.c(q).QueryContext(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE power_driver = ? AND power_host = ? ORDER BY id`, powerDriver, hostID)
	if err != nil {
		return nil, fmt.Errorf("host instances: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Instance{}
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("host instances: %w", err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// FindInstanceByPowerAddress finds a tenant's instance by its power link's
// driver and address on any host (an agent enrolling from inside a VM finds
// its VM's instance by the machine UUID).
func (s *Store) FindInstanceByPowerAddress(ctx context.Context, q Querier, tenant, powerDriver, address string) (apiv1.Instance, error) {
	in, err := scanInstance(s.c(q).QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE tenant_id = ? AND power_driver = ? AND power_address = ? ORDER BY id LIMIT 1`, tenant, powerDriver, address))
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("instance at %s %q: %w", powerDriver, address, ErrNotFound)
	}
	if err != nil {
		return in, fmt.Errorf("find instance: %w", err)
	}
	return in, nil
}

// UpdateInstanceInventory records what a host's inventory says of an
// instance: its name, OS type, and whether it has a guest agent channel.
// It reports whether anything changed.
func (s *Store) UpdateInstanceInventory(ctx context.Context, q Querier, id, name, osType string, channel bool) (bool, error) {
	res, err := s.c(q).ExecContext(ctx, `UPDATE instances SET name = ?, os_type = ?, guest_channel = ?, updated_at = ?
		WHERE id = ? AND (name <> ? OR os_type <> ? OR guest_channel IS NULL OR guest_channel <> ?)`,
		name, osType, boolInt(channel), ms(s.now()), id, name, osType, boolInt(channel))
	if err != nil {
		return false, fmt.Errorf("update instance inventory: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// SetInstanceGuest points an instance's guest link elsewhere (an agent
// enrolled inside a VM takes over the VM's guest channel).
func (s *Store) SetInstanceGuest(ctx context.Context, q Querier, id string, guest apiv1.DriverLink) error {
	_, err := s.c(q).ExecContext(ctx, `UPDATE instances SET guest_driver = ?, guest_host = ?, guest_address = ?,
		updated_at = ? WHERE id = ?`, guest.Driver, guest.Host, guest.Address, ms(s.now()), id)
	if err != nil {
		if lc := linkConflict(err); lc != nil {
			return fmt.Errorf("instance %q: %w", id, lc)
		}
		return fmt.Errorf("set instance guest: %w", err)
	}
	return nil
}
