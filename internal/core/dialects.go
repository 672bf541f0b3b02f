package core

import (
	"context"
	"errors"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Codes of the services the documented API dialects need beyond the native
// API's.
const (
	// CodeReplayedRequest refuses a signed request whose signature (or
	// nonce) was already used.
	CodeReplayedRequest = "REPLAYED_REQUEST"
	// CodeTaskNotFound answers an integer task id that names no operation
	// the caller may see.
	CodeTaskNotFound = "TASK_NOT_FOUND"
)

// UseSignature records a verified request's replay key until it expires,
// refusing a key seen before. The record lives in the database, so a
// request replayed to another replica is refused as well (docs/design.md#storage-and-tasks).
func (s *Service) UseSignature(ctx context.Context, replayKey string, expires time.Time) error {
	fresh, err := s.store.UseReplayKey(ctx, replayKey, expires)
	if err != nil {
		return storeFailed(err)
	}
	if !fresh {
		return errorf(CodeReplayedRequest, "this signature was already used; sign every request anew")
	}
	return nil
}

// TaskNumber returns the integer task id of an operation p may see, for
// dialects whose clients poll tasks by number. Numbers increase with each
// new operation numbered and are never reused.
func (s *Service) TaskNumber(ctx context.Context, p Principal, opID string) (int64, error) {
	if _, err := s.GetOperation(ctx, p, opID); err != nil {
		return 0, err
	}
	n, err := s.store.TaskNumber(ctx, opID)
	if err != nil {
		return 0, storeFailed(err)
	}
	return n, nil
}

// OperationByTask reads the operation an integer task id stands for. A task
// of another tenant is answered exactly like a missing one.
func (s *Service) OperationByTask(ctx context.Context, p Principal, n int64) (apiv1.Operation, error) {
	opID, err := s.store.OperationOfTask(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return apiv1.Operation{}, errorf(CodeTaskNotFound, "task %d not found", n)
	}
	if err != nil {
		return apiv1.Operation{}, storeFailed(err)
	}
	op, err := s.GetOperation(ctx, p, opID)
	if CodeOf(err) == CodeOperationNotFound {
		return apiv1.Operation{}, errorf(CodeTaskNotFound, "task %d not found", n)
	}
	return op, err
}

// SearchQuery selects instances for the documented APIs' list calls, which
// page by number rather than by cursor and report the total.
type SearchQuery struct {
	IDs []string
	// States are core states (apiv1.State*); any of them matches.
	States       []string
	NameContains string
	Offset       int
	Limit        int
}

// MaxPageSize bounds one page of SearchInstances.
const MaxPageSize = 1000

// SearchInstances lists one page of the instances p may see that q
// selects, with their total number.
func (s *Service) SearchInstances(ctx context.Context, p Principal, q SearchQuery) ([]apiv1.Instance, int, error) {
	if q.Offset < 0 || q.Limit < 0 {
		return nil, 0, errorf(CodeInvalidArgument, "offset and limit must not be negative")
	}
	if q.Limit == 0 || q.Limit > MaxPageSize {
		q.Limit = clampLimit(q.Limit)
	}
	if len(q.IDs) > MaxBatch {
		return nil, 0, errorf(CodeTooManyInstances, "instanceIds: at most %d instances a request, got %d", MaxBatch, len(q.IDs))
	}
	list, total, err := s.store.SearchInstances(ctx, store.InstanceSearch{Tenant: p.scope(), IDs: q.IDs, States: q.States,
		NameContains: q.NameContains, Offset: q.Offset, Limit: q.Limit})
	if err != nil {
		return nil, 0, storeFailed(err)
	}
	return list, total, nil
}

// InstancesByID reads the named instances p may see; the others (deleted
// since, or another tenant's) are simply absent.
func (s *Service) InstancesByID(ctx context.Context, p Principal, ids []string) (map[string]apiv1.Instance, error) {
	found, err := s.store.GetInstances(ctx, s.store.DB, ids)
	if err != nil {
		return nil, storeFailed(err)
	}
	for id, in := range found {
		if !p.Sees(in.Tenant) {
			delete(found, id)
		}
	}
	return found, nil
}
