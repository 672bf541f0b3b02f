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
	// CodeSignatureReused refuses a signature presented with another path
	// or action than the one it was first used with.
	CodeSignatureReused = "SIGNATURE_REUSED"
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

// SignedUse is one use of a request signature that covers neither the
// path nor the action (ZC2): Scope names them, so that a signature cannot
// be carried from one to the other.
type SignedUse struct {
	Key      string
	Scope    string
	Mutating bool
	// Expires is when the signature's timestamp stops passing the
	// clock-skew check; the record is kept until then.
	Expires time.Time
}

// SignedAnswer is the first answer to a mutating signed request, which an
// identical request gets again.
type SignedAnswer struct {
	Status    int
	RequestID string
	Body      []byte
}

// signedWait bounds how long an identical request waits for the first one's
// answer; the first is a database transaction, so this is generous.
const signedWait = 30 * time.Second

// UseSignedRequest applies the replay rules of signatures that sign neither
// path nor action (docs/design.md#storage-and-tasks):
//   - the first use claims the signature for its scope: nil, nil, and the
//     caller runs the request, then calls AnswerSignedRequest (a mutating
//     request that ran) or ReleaseSignedRequest (one refused before
//     anything ran, so the signature stays unused);
//   - the same signature with another scope is refused (CodeSignatureReused);
//   - an identical read runs again (nil, nil; nothing to record);
//   - an identical mutating request gets the first one's answer, waiting
//     for it if the first is still running: it never runs twice.
//
// The records are rows, so every replica applies the same rules.
func (s *Service) UseSignedRequest(ctx context.Context, u SignedUse) (*SignedAnswer, error) {
	deadline := time.Now().Add(signedWait)
	for {
		prev, claimed, err := s.store.ClaimSignedRequest(ctx, store.SignedRequest{Key: u.Key, Scope: u.Scope, Mutating: u.Mutating}, u.Expires)
		if err != nil {
			return nil, storeFailed(err)
		}
		switch {
		case claimed:
			return nil, nil
		case prev.Scope != u.Scope:
			return nil, errorf(CodeSignatureReused, "this signature was made for another action or path; sign every request anew")
		case !u.Mutating:
			return nil, nil
		case prev.Answered:
			return &SignedAnswer{Status: prev.Status, RequestID: prev.RequestID, Body: prev.Answer}, nil
		}
		// The first request is still running (or was refused and is
		// releasing its claim): look again shortly.
		if time.Now().After(deadline) {
			return nil, errorf(CodeReplayedRequest, "an identical request is still being answered; sign a new request to retry")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AnswerSignedRequest records the answer of a mutating signed request that
// ran, for identical requests in its window.
func (s *Service) AnswerSignedRequest(ctx context.Context, key string, a SignedAnswer) error {
	if err := s.store.AnswerSignedRequest(ctx, key, a.Status, a.RequestID, a.Body); err != nil {
		return storeFailed(err)
	}
	return nil
}

// ReleaseSignedRequest forgets the claim of a signed request refused before
// anything ran: the same signature may then be used again (a VM-path reset
// of a running instance refused, then the same body on the ZEC path).
func (s *Service) ReleaseSignedRequest(ctx context.Context, key string) error {
	if err := s.store.ReleaseSignedRequest(ctx, key); err != nil {
		return storeFailed(err)
	}
	return nil
}

// TaskNumber returns the bare-metal task id of an operation p may see,
// made through that API (ResetRequest.NumberTask).
func (s *Service) TaskNumber(ctx context.Context, p Principal, opID string) (int64, error) {
	if _, err := s.GetOperation(ctx, p, opID); err != nil {
		return 0, err
	}
	n, err := s.store.TaskNumber(ctx, opID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, errorf(CodeTaskNotFound, "operation %s has no task id", opID)
	}
	if err != nil {
		return 0, storeFailed(err)
	}
	return n, nil
}

// OperationByTask reads the operation task id n of p's tenant stands for.
// Task ids count per tenant, so another tenant's number names nothing.
func (s *Service) OperationByTask(ctx context.Context, p Principal, n int64) (apiv1.Operation, error) {
	opID, err := s.store.OperationOfTask(ctx, p.Tenant, n)
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
		return nil, 0, fieldErrorf(CodeTooManyInstances, "instanceIds", "at most %d instances a request, got %d", MaxBatch, len(q.IDs))
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
