package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

const instanceColumns = `id, tenant_id, name, os_type, admin_user, state, power_driver, power_host, power_address,
	guest_driver, guest_host, guest_address, guest_alive, guest_seen_at, active_operation_id,
	latest_op_id, latest_op_kind, latest_op_state, created_at, updated_at, guest_channel`

func scanInstance(sc interface{ Scan(...any) error }) (apiv1.Instance, error) {
	var in apiv1.Instance
	var alive int
	var seen sql.NullInt64
	var active, opID, opKind, opState sql.NullString
	var created, updated int64
	var channel sql.NullInt64
	err := sc.Scan(&in.ID, &in.Tenant, &in.Name, &in.OSType, &in.AdminUser, &in.State,
		&in.Power.Driver, &in.Power.Host, &in.Power.Address, &in.Guest.Driver, &in.Guest.Host, &in.Guest.Address,
		&alive, &seen, &active, &opID, &opKind, &opState, &created, &updated, &channel)
	if err != nil {
		return in, err
	}
	in.NoGuestChannel = channel.Valid && channel.Int64 == 0
	in.GuestAlive = alive == 1
	in.GuestSeenAt = fromNullMS(seen)
	in.Busy = active.Valid
	if opID.Valid {
		in.LatestOperation = &apiv1.LatestOperation{ID: opID.String, Kind: opKind.String, State: opState.String}
	}
	in.CreatedAt = fromMS(created)
	in.UpdatedAt = fromMS(updated)
	return in, nil
}

// CreateInstance inserts an instance. CreatedAt and UpdatedAt are set here.
func (s *Store) CreateInstance(ctx context.Context, q Querier, in *apiv1.Instance) error {
	now := s.now()
	in.CreatedAt, in.UpdatedAt = fromMS(ms(now)), fromMS(ms(now))
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO instances (id, tenant_id, name, os_type, admin_user, state,
		power_driver, power_host, power_address, guest_driver, guest_host, guest_address, guest_alive, guest_seen_at,
		created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		in.ID, in.Tenant, in.Name, in.OSType, in.AdminUser, in.State, in.Power.Driver, in.Power.Host, in.Power.Address,
		in.Guest.Driver, in.Guest.Host, in.Guest.Address, boolInt(in.GuestAlive), nullMS(in.GuestSeenAt), ms(now), ms(now))
	if err != nil {
		if lc := linkConflict(err); lc != nil {
			return fmt.Errorf("instance %q: %w", in.ID, lc)
		}
		if isUniqueViolation(err) {
			return fmt.Errorf("instance %q: %w", in.ID, ErrConflict)
		}
		return fmt.Errorf("create instance: %w", err)
	}
	return nil
}

// GetInstance reads one instance.
func (s *Store) GetInstance(ctx context.Context, q Querier, id string) (apiv1.Instance, error) {
	in, err := scanInstance(s.c(q).QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM instances WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("instance %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return in, fmt.Errorf("get instance: %w", err)
	}
	return in, nil
}

// GetInstances reads the named instances; missing ids are simply absent.
func (s *Store) GetInstances(ctx context.Context, q Querier, ids []string) (map[string]apiv1.Instance, error) {
	out := make(map[string]apiv1.Instance, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.c(q).QueryContext(ctx, `SELECT `+instanceColumns+` FROM instances WHERE id IN (`+placeholders(len(ids))+`)`, anys(ids)...)
	if err != nil {
		return nil, fmt.Errorf("get instances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("get instances: %w", err)
		}
		out[in.ID] = in
	}
	return out, rows.Err()
}

// InstanceFilter selects instances. Empty fields match everything.
type InstanceFilter struct {
	Tenant     string
	State      string
	OSType     string
	NamePrefix string
	// After is the position after which the page starts (name, id): the
	// order is by name then id, stable under inserts and deletes.
	AfterName, AfterID string
	Limit              int
}

// ListInstances lists a page of instances ordered by name then id.
func (s *Store) ListInstances(ctx context.Context, f InstanceFilter) ([]apiv1.Instance, error) {
	var where []string
	var args []any
	if f.Tenant != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.Tenant)
	}
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.OSType != "" {
		where, args = append(where, "os_type = ?"), append(args, f.OSType)
	}
	if f.NamePrefix != "" {
		// substr counts characters, in SQLite and PostgreSQL alike; a
		// prefix compared by equality needs no LIKE escaping.
		where, args = append(where, "substr(name, 1, ?) = ?"), append(args, utf8.RuneCountInString(f.NamePrefix), f.NamePrefix)
	}
	if f.AfterID != "" {
		where, args = append(where, "(name > ? OR (name = ? AND id > ?))"), append(args, f.AfterName, f.AfterName, f.AfterID)
	}
	query := `SELECT ` + instanceColumns + ` FROM instances`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY name, id LIMIT ?"
	args = append(args, f.Limit)
	rows, err := s.c(s.DB).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Instance{}
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// ListIdleInstances lists instances without an active operation after id
// (for the background state sync), ordered by id.
func (s *Store) ListIdleInstances(ctx context.Context, afterID string, limit int) ([]apiv1.Instance, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT `+instanceColumns+` FROM instances
		WHERE active_operation_id IS NULL AND id > ? ORDER BY id LIMIT ?`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list idle instances: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Instance{}
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("list idle instances: %w", err)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// DeleteInstance removes an idle instance; ErrConflict while an operation
// holds it. Its operations and items stay as history.
func (s *Store) DeleteInstance(ctx context.Context, q Querier, id string) error {
	res, err := s.c(q).ExecContext(ctx, `DELETE FROM instances WHERE id = ? AND active_operation_id IS NULL`, id)
	if err != nil {
		return fmt.Errorf("delete instance: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.GetInstance(ctx, q, id); err != nil {
			return err
		}
		return fmt.Errorf("instance %q is busy: %w", id, ErrConflict)
	}
	return nil
}

// SetInstanceState records an instance's state. It reports whether anything
// changed, so callers emit an event only for real changes. With onlyIdle,
// an instance an operation holds is left alone: the engine owns its state.
func (s *Store) SetInstanceState(ctx context.Context, q Querier, id, state string, onlyIdle bool) (bool, error) {
	res, err := s.c(q).ExecContext(ctx, `UPDATE instances SET state = ?, updated_at = ? WHERE id = ? AND state <> ?
		AND (? = 0 OR active_operation_id IS NULL)`, state, ms(s.now()), id, state, boolInt(onlyIdle))
	if err != nil {
		return false, fmt.Errorf("set instance state: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// SetGuestAlive records the guest channel's liveness. It reports whether
// liveness changed.
func (s *Store) SetGuestAlive(ctx context.Context, q Querier, id string, alive bool, seen *time.Time) (bool, error) {
	res, err := s.c(q).ExecContext(ctx, `UPDATE instances SET guest_alive = ?, guest_seen_at = COALESCE(?, guest_seen_at), updated_at = ?
		WHERE id = ? AND guest_alive <> ?`, boolInt(alive), nullMS(seen), ms(s.now()), id, boolInt(alive))
	if err != nil {
		return false, fmt.Errorf("set guest alive: %w", err)
	}
	n, _ := res.RowsAffected()
	if n == 0 && seen != nil {
		_, err = s.c(q).ExecContext(ctx, `UPDATE instances SET guest_seen_at = ? WHERE id = ?`, nullMS(seen), id)
	}
	return n > 0, err
}

// LockInstances takes the per-instance lock of every id for operation opID
// and marks the operation as their latest. It returns the instances as
// locked, in the order of ids, or the ids that another operation holds;
// if any, it changed nothing the caller's transaction will keep (the
// caller rolls back). An instance that no longer exists is ErrNotFound.
func (s *Store) LockInstances(ctx context.Context, tx *sql.Tx, opID, kind string, ids []string) (locked []apiv1.Instance, busy []string, err error) {
	args := append([]any{opID, opID, kind, apiv1.OpStateOperating, ms(s.now())}, anys(ids)...)
	rows, err := s.c(tx).QueryContext(ctx, `UPDATE instances SET active_operation_id = ?, latest_op_id = ?, latest_op_kind = ?,
		latest_op_state = ?, updated_at = ? WHERE active_operation_id IS NULL AND id IN (`+placeholders(len(ids))+`)
		RETURNING `+instanceColumns, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("lock instances: %w", err)
	}
	byID := make(map[string]apiv1.Instance, len(ids))
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("lock instances: %w", err)
		}
		byID[in.ID] = in
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("lock instances: %w", err)
	}
	if len(byID) == len(ids) {
		locked = make([]apiv1.Instance, len(ids))
		for i, id := range ids {
			locked[i] = byID[id]
		}
		return locked, nil, nil
	}
	rows, err = s.c(tx).QueryContext(ctx, `SELECT id FROM instances WHERE active_operation_id IS NOT NULL
		AND active_operation_id <> ? AND id IN (`+placeholders(len(ids))+`) ORDER BY id`, append([]any{opID}, anys(ids)...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("lock instances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, nil, fmt.Errorf("lock instances: %w", err)
		}
		busy = append(busy, id)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("lock instances: %w", err)
	}
	if len(busy) == 0 {
		// Neither locked nor held: gone since the caller read them.
		for _, id := range ids {
			if _, ok := byID[id]; !ok {
				return nil, nil, fmt.Errorf("lock instances: instance %q: %w", id, ErrNotFound)
			}
		}
	}
	return nil, busy, nil
}

// ReleaseInstance clears the per-instance lock held by opID and records the
// instance's latest operation state and, if state is not empty, its state.
func (s *Store) ReleaseInstance(ctx context.Context, q Querier, id, opID, latestState, state string) error {
	_, err := s.c(q).ExecContext(ctx, `UPDATE instances SET active_operation_id = NULL,
		latest_op_state = CASE WHEN latest_op_id = ? THEN ? ELSE latest_op_state END,
		state = CASE WHEN ? = '' THEN state ELSE ? END, updated_at = ?
		WHERE id = ? AND active_operation_id = ?`, opID, latestState, state, state, ms(s.now()), id, opID)
	if err != nil {
		return fmt.Errorf("release instance: %w", err)
	}
	return nil
}

// CountInstances counts instances of a tenant (all when empty).
func (s *Store) CountInstances(ctx context.Context, tenant string) (int, error) {
	var n int
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT count(*) FROM instances WHERE (? = '' OR tenant_id = ?)`, tenant, tenant).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count instances: %w", err)
	}
	return n, nil
}
