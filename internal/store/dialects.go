package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// UseReplayKey records that a signed request identified by key was seen,
// remembering it until expires. It returns false if the key was already
// recorded and has not expired: the request is a replay. One statement: a
// key whose record expired is taken again in place. Expired keys of other
// requests are deleted by PruneReplayKeys, on one replica at a time, not
// by every signed request.
func (s *Store) UseReplayKey(ctx context.Context, key string, expires time.Time) (bool, error) {
	res, err := s.c(s.DB).ExecContext(ctx, `INSERT INTO replay_keys (key, expires_at) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay_keys.expires_at < ?`,
		key, ms(expires), ms(s.now()))
	if err != nil {
		return false, fmt.Errorf("record replay key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record replay key: %w", err)
	}
	return n == 1, nil
}

// PruneReplayKeys deletes the replay keys that have expired and returns
// how many.
func (s *Store) PruneReplayKeys(ctx context.Context) (int64, error) {
	res, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM replay_keys WHERE expires_at < ?`, ms(s.now()))
	if err != nil {
		return 0, fmt.Errorf("prune replay keys: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// NumberTask gives an operation the next bare-metal task id of tenant, in
// the transaction that creates it, so an accepted operation always has its
// number. Numbers count per tenant from 1 and are never reused.
func (s *Store) NumberTask(ctx context.Context, q Querier, tenant, opID string) (int64, error) {
	var n int64
	if err := s.c(q).QueryRowContext(ctx,
		`INSERT INTO baremetal_task_counters (tenant_id, last_id) VALUES (?, 1)
		 ON CONFLICT (tenant_id) DO UPDATE SET last_id = baremetal_task_counters.last_id + 1 RETURNING last_id`,
		tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("number task: %w", err)
	}
	if _, err := s.c(q).ExecContext(ctx,
		`INSERT INTO baremetal_tasks (tenant_id, task_id, operation_id, created_at) VALUES (?, ?, ?, ?)`,
		tenant, n, opID, ms(s.now())); err != nil {
		return 0, fmt.Errorf("number task: %w", err)
	}
	return n, nil
}

// TaskNumber returns the bare-metal task id of an operation; ErrNotFound
// if it was not created through that API.
func (s *Store) TaskNumber(ctx context.Context, opID string) (int64, error) {
	var n int64
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT task_id FROM baremetal_tasks WHERE operation_id = ?`, opID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("task of %s: %w", opID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("get task: %w", err)
	}
	return n, nil
}

// OperationOfTask returns the operation tenant's task id n stands for.
func (s *Store) OperationOfTask(ctx context.Context, tenant string, n int64) (string, error) {
	var opID string
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT operation_id FROM baremetal_tasks WHERE tenant_id = ? AND task_id = ?`,
		tenant, n).Scan(&opID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("task %d: %w", n, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("get task: %w", err)
	}
	return opID, nil
}

// InstanceSearch selects instances for the documented APIs' list calls,
// which page by number and report the total. Empty fields match
// everything.
type InstanceSearch struct {
	Tenant string
	IDs    []string
	States []string
	// NameContains matches a part of the name, case-sensitively.
	NameContains  string
	Offset, Limit int
}

// SearchInstances lists one page of the instances s selects, ordered by
// name then id, with the number of instances it selects in all.
func (s *Store) SearchInstances(ctx context.Context, f InstanceSearch) ([]apiv1.Instance, int, error) {
	var where []string
	var args []any
	if f.Tenant != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.Tenant)
	}
	if len(f.IDs) > 0 {
		where, args = append(where, "id IN ("+placeholders(len(f.IDs))+")"), append(args, anys(f.IDs)...)
	}
	if len(f.States) > 0 {
		where, args = append(where, "state IN ("+placeholders(len(f.States))+")"), append(args, anys(f.States)...)
	}
	if f.NameContains != "" {
		where, args = append(where, s.containsExpr("name")), append(args, f.NameContains)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	// One snapshot, so the total and the page agree.
	var out []apiv1.Instance
	var total int
	err := s.inSnapshot(ctx, func(tx *sql.Tx) error {
		if err := s.c(tx).QueryRowContext(ctx, `SELECT count(*) FROM instances`+cond, args...).Scan(&total); err != nil {
			return fmt.Errorf("count instances: %w", err)
		}
		rows, err := s.c(tx).QueryContext(ctx, `SELECT `+instanceColumns+` FROM instances`+cond+` ORDER BY name, id LIMIT ? OFFSET ?`,
			append(args, f.Limit, f.Offset)...)
		if err != nil {
			return fmt.Errorf("search instances: %w", err)
		}
		defer rows.Close()
		out = []apiv1.Instance{}
		for rows.Next() {
			in, err := scanInstance(rows)
			if err != nil {
				return fmt.Errorf("search instances: %w", err)
			}
			out = append(out, in)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	return out, total, nil
}
