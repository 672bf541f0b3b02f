package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// CreateTenant inserts a tenant; ErrConflict if the id is taken.
func (s *Store) CreateTenant(ctx context.Context, q Querier, id, name string) (apiv1.Tenant, error) {
	now := s.now()
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)
		ON CONFLICT (id) DO NOTHING`, id, name, ms(now))
	if err != nil {
		return apiv1.Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	t, err := s.GetTenant(ctx, q, id)
	if err != nil {
		return apiv1.Tenant{}, err
	}
	if !t.CreatedAt.Equal(fromMS(ms(now))) {
		return t, fmt.Errorf("tenant %q: %w", id, ErrConflict)
	}
	return t, nil
}

// GetTenant reads one tenant.
func (s *Store) GetTenant(ctx context.Context, q Querier, id string) (apiv1.Tenant, error) {
	var t apiv1.Tenant
	var created int64
	err := s.c(q).QueryRowContext(ctx, `SELECT id, name, created_at FROM tenants WHERE id = ?`, id).
		Scan(&t.ID, &t.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("tenant %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("get tenant: %w", err)
	}
	t.CreatedAt = fromMS(created)
	return t, nil
}

// ListTenants lists every tenant by id.
func (s *Store) ListTenants(ctx context.Context) ([]apiv1.Tenant, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT id, name, created_at FROM tenants ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Tenant{}
	for rows.Next() {
		var t apiv1.Tenant
		var created int64
		if err := rows.Scan(&t.ID, &t.Name, &created); err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		t.CreatedAt = fromMS(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

// KeyRecord is an API key with what authentication needs.
type KeyRecord struct {
	apiv1.Key
	SecretHash   []byte
	SecretSealed []byte
}

// CreateKey inserts an API key.
func (s *Store) CreateKey(ctx context.Context, q Querier, k KeyRecord) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO api_keys (id, tenant_id, name, admin, secret_hash, secret_sealed, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, k.ID, k.Tenant, k.Name, boolInt(k.Admin), k.SecretHash, k.SecretSealed, ms(k.CreatedAt))
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	return nil
}

const keyColumns = `id, tenant_id, name, admin, secret_hash, secret_sealed, created_at, revoked_at, last_used_at`

func scanKey(sc interface{ Scan(...any) error }) (KeyRecord, error) {
	var k KeyRecord
	var admin int
	var created int64
	var revoked, used sql.NullInt64
	if err := sc.Scan(&k.ID, &k.Tenant, &k.Name, &admin, &k.SecretHash, &k.SecretSealed, &created, &revoked, &used); err != nil {
		return k, err
	}
	k.Admin = admin == 1
	k.CreatedAt = fromMS(created)
	k.RevokedAt = fromNullMS(revoked)
	k.LastUsed = fromNullMS(used)
	return k, nil
}

// GetKey reads one key, revoked or not.
func (s *Store) GetKey(ctx context.Context, id string) (KeyRecord, error) {
	k, err := scanKey(s.c(s.DB).QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return k, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return k, fmt.Errorf("get key: %w", err)
	}
	return k, nil
}

// ListKeys lists keys of one tenant, or of all when tenant is empty.
func (s *Store) ListKeys(ctx context.Context, tenant string) ([]apiv1.Key, error) {
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE (? = '' OR tenant_id = ?) ORDER BY created_at, id`, tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	out := []apiv1.Key{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, k.Key)
	}
	return out, rows.Err()
}

// RevokeKey marks a key revoked. ErrNotFound if it does not exist in tenant
// (any tenant when tenant is empty) or is already revoked.
func (s *Store) RevokeKey(ctx context.Context, q Querier, tenant, id string) error {
	res, err := s.c(q).ExecContext(ctx, `UPDATE api_keys SET revoked_at = ?
		WHERE id = ? AND (? = '' OR tenant_id = ?) AND revoked_at IS NULL`, ms(s.now()), id, tenant, tenant)
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	return nil
}

// TouchKey records that a key was used. Callers throttle it.
func (s *Store) TouchKey(ctx context.Context, id string, at time.Time) error {
	_, err := s.c(s.DB).ExecContext(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ?`, ms(at), id)
	if err != nil {
		return fmt.Errorf("touch key: %w", err)
	}
	return nil
}

// CountKeys counts keys (bootstrap checks for an empty database).
func (s *Store) CountKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT count(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	return n, nil
}

// InsertAudit appends to the audit trail.
func (s *Store) InsertAudit(ctx context.Context, q Querier, e apiv1.AuditEntry) error {
	_, err := s.c(q).ExecContext(ctx, `INSERT INTO audit_log (at, tenant_id, actor_kind, actor_id, actor_addr, action, target, operation_id, request_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, ms(s.now()), e.Tenant, e.Actor.Kind, e.Actor.ID, e.Actor.Address,
		e.Action, e.Target, e.OperationID, e.RequestID)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// ListAudit lists the audit trail newest first; before is the id cursor (0:
// from the newest).
func (s *Store) ListAudit(ctx context.Context, tenant string, before int64, limit int) ([]apiv1.AuditEntry, error) {
	if before <= 0 {
		before = 1<<62 - 1
	}
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT id, at, tenant_id, actor_kind, actor_id, actor_addr, action, target, operation_id, request_id
		FROM audit_log WHERE (? = '' OR tenant_id = ?) AND id < ? ORDER BY id DESC LIMIT ?`, tenant, tenant, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []apiv1.AuditEntry{}
	for rows.Next() {
		var e apiv1.AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Tenant, &e.Actor.Kind, &e.Actor.ID, &e.Actor.Address, &e.Action,
			&e.Target, &e.OperationID, &e.RequestID); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		e.Time = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
