package store

import (
	"context"
	"fmt"
)

// OperationRef names one instance's item of an operation.
type OperationRef struct {
	OperationID string
	InstanceID  string
}

// ItemOrigin is what some API dialects show of an instance's latest
// operation beyond its kind and state: the request id of the call that
// started it, and the instance's item's error, once it failed.
type ItemOrigin struct {
	RequestID string
	ErrorCode string
	Message   string
}

// ItemOrigins reads the origin of each referenced item that exists.
func (s *Store) ItemOrigins(ctx context.Context, refs []OperationRef) (map[OperationRef]ItemOrigin, error) {
	out := make(map[OperationRef]ItemOrigin, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	// Two IN lists select a superset of the pairs (each is indexed); the
	// pairs asked for are kept below. Row values would be exact but are
	// spelled differently across databases.
	var ops, insts []string
	want := make(map[OperationRef]bool, len(refs))
	seenOp, seenInst := map[string]bool{}, map[string]bool{}
	for _, r := range refs {
		want[r] = true
		if !seenOp[r.OperationID] {
			seenOp[r.OperationID] = true
			ops = append(ops, r.OperationID)
		}
		if !seenInst[r.InstanceID] {
			seenInst[r.InstanceID] = true
			insts = append(insts, r.InstanceID)
		}
	}
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT i.operation_id, i.instance_id, o.request_id, i.error_code, i.message
		FROM items i JOIN operations o ON o.id = i.operation_id
		WHERE i.operation_id IN (`+placeholders(len(ops))+`) AND i.instance_id IN (`+placeholders(len(insts))+`)`,
		append(anys(ops), anys(insts)...)...)
	if err != nil {
		return nil, fmt.Errorf("item origins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r OperationRef
		var o ItemOrigin
		if err := rows.Scan(&r.OperationID, &r.InstanceID, &o.RequestID, &o.ErrorCode, &o.Message); err != nil {
			return nil, fmt.Errorf("item origins: %w", err)
		}
		if want[r] {
			out[r] = o
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("item origins: %w", err)
	}
	return out, nil
}
