package core

import (
	"context"
	"errors"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/cluster"
)

// Error codes of the replica listing.
const (
	CodeReplicaNotFound = "REPLICA_NOT_FOUND"
	CodeReplicaAlive    = "REPLICA_ALIVE"
)

// Replicas is the cluster membership the service reports (package
// cluster's Membership).
type Replicas interface {
	ID() string
	Members(ctx context.Context) ([]cluster.Member, error)
	Owns(ctx context.Context, replicaID string) []string
	Forget(ctx context.Context, id string) error
}

// SetReplicas gives the service the cluster membership to report.
func (s *Service) SetReplicas(r Replicas) { s.replicas = r }

// ListReplicas lists every replica of the installation, alive or dead
// (admin keys only).
func (s *Service) ListReplicas(ctx context.Context, p Principal) ([]apiv1.Replica, error) {
	if !p.Admin {
		return nil, errorf(CodeForbidden, "only an admin key may list the replicas")
	}
	if s.replicas == nil {
		return []apiv1.Replica{}, nil
	}
	members, err := s.replicas.Members(ctx)
	if err != nil {
		return nil, storeFailed(err)
	}
	out := make([]apiv1.Replica, 0, len(members))
	for _, m := range members {
		out = append(out, apiv1.Replica{ID: m.ID, Address: m.Address, Version: m.Version, StartedAt: m.StartedAt,
			LastHeartbeat: m.LastHeartbeat, StoppedAt: m.StoppedAt, Alive: m.Alive, Self: m.ID == s.replicas.ID(),
			Owns: append([]string{}, s.replicas.Owns(ctx, m.ID)...)}) // [] when none, never null
	}
	return out, nil
}

// ForgetReplica drops a dead replica from the listing (admin keys only); a
// live one is REPLICA_ALIVE.
func (s *Service) ForgetReplica(ctx context.Context, p Principal, id string) error {
	if !p.Admin {
		return errorf(CodeForbidden, "only an admin key may forget replicas")
	}
	if s.replicas == nil {
		return errorf(CodeReplicaNotFound, "no replica %q", id)
	}
	switch err := s.replicas.Forget(ctx, id); {
	case errors.Is(err, cluster.ErrUnknown):
		return errorf(CodeReplicaNotFound, "no replica %q", id)
	case errors.Is(err, cluster.ErrAlive):
		return errorf(CodeReplicaAlive, "replica %q is alive: only a dead replica can be forgotten", id)
	case err != nil:
		return storeFailed(err)
	}
	if err := s.audit(ctx, s.store.DB, p, AdminTenant, "replica.forget", id, ""); err != nil {
		s.log.Warn("audit replica.forget", "err", err)
	}
	return nil
}
