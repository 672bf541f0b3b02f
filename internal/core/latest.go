package core

import (
	"context"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/store"
)

// LatestOperationDetail is what clouds show of an instance's latest
// operation beyond its kind and state (Tencent's LatestOperationRequestId
// and LatestOperationErrorMsg).
type LatestOperationDetail struct {
	// RequestID is the request id of the call that started the operation.
	RequestID string
	// ErrorCode and Message are the instance's item's, once it failed.
	ErrorCode string
	Message   string
}

// LatestOperationDetails returns, by instance id, the details of the latest
// operation of each of insts that has one. insts are instances p was
// allowed to read; an operation always belongs to its instances' tenant.
func (s *Service) LatestOperationDetails(ctx context.Context, p Principal, insts []apiv1.Instance) (map[string]LatestOperationDetail, error) {
	var refs []store.OperationRef
	for _, in := range insts {
		if in.LatestOperation != nil && (p.Admin || in.Tenant == p.Tenant) {
			refs = append(refs, store.OperationRef{OperationID: in.LatestOperation.ID, InstanceID: in.ID})
		}
	}
	origins, err := s.store.ItemOrigins(ctx, refs)
	if err != nil {
		return nil, storeFailed(err)
	}
	out := make(map[string]LatestOperationDetail, len(origins))
	for r, o := range origins {
		out[r.InstanceID] = LatestOperationDetail{RequestID: o.RequestID, ErrorCode: o.ErrorCode, Message: o.Message}
	}
	return out, nil
}
