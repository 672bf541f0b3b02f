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
// recorded and has not expired: the request is a replay. Expired keys are
// pruned in the same transaction, so the table stays as small as the
// traffic of the clock-skew window.
func (s *Store) UseReplayKey(ctx context.Context, key string, expires time.Time) (bool, error) {
	fresh := false
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		now := ms(s.now())
		if _, err := s.c(tx).ExecContext(ctx, `DELETE FROM replay_keys WHERE expires_at < ?`, now); err != nil {
			return fmt.Errorf("prune replay keys: %w", err)
		}
		res, err := s.c(tx).ExecContext(ctx,
			`INSERT INTO replay_keys (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, ms(expires))
		if err != nil {
			return fmt.Errorf("record replay key: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("record replay key: %w", err)
		}
		fresh = n == 1
		return nil
	})
	return fresh, err
}

// NumberTask gives an operation the next integer task id, in the
// transaction that creates it, so an accepted operation always has its
// number. Numbering an operation again does nothing.
func (s *Store) NumberTask(ctx context.Context, q Querier, opID string) error {
	if _, err := s.c(q).ExecContext(ctx,
		`INSERT INTO dialect_tasks (operation_id, created_at) VALUES (?, ?) ON CONFLICT (operation_id) DO NOTHING`,
		opID, ms(s.now())); err != nil {
		return fmt.Errorf("number task: %w", err)
	}
	return nil
}

// TaskNumber returns the integer task id of an operation, making one (the
// next in sequence) for an operation older than numbering at creation.
func (s *Store) TaskNumber(ctx context.Context, opID string) (int64, error) {
	var n int64
	err := s.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.NumberTask(ctx, tx, opID); err != nil {
			return err
		}
		if err := s.c(tx).QueryRowContext(ctx, `SELECT id FROM dialect_tasks WHERE operation_id = ?`, opID).Scan(&n); err != nil {
			return fmt.Errorf("number task: %w", err)
		}
		return nil
	})
	return n, err
}

// OperationOfTask returns the operation id an integer task id stands for.
func (s *Store) OperationOfTask(ctx context.Context, n int64) (string, error) {
	var opID string
	err := s.c(s.DB).QueryRowContext(ctx, `SELECT operation_id FROM dialect_tasks WHERE id = ?`, n).Scan(&opID)
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
