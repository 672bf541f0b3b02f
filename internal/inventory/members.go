package inventory

import (
	"context"
	"log/slog"
	"time"

	"github.com/fleetpass/fleetpass/internal/store"
)

// Solo is the membership of a replica alone on its database (SQLite).
type Solo string

// ID is the replica's id.
func (s Solo) ID() string { return string(s) }

// Alive is the replica itself.
func (s Solo) Alive(context.Context) ([]string, error) { return []string{string(s)}, nil }

// replicaLeasePrefix names the leases of LeaseMembership.
const replicaLeasePrefix = "replica:"

// LeaseMembership is a membership kept in leases: each replica holds the
// lease replica:<id> while it runs, and the live replicas are the holders
// of unexpired ones. It serves where no richer membership is wired.
type LeaseMembership struct {
	store *store.Store
	id    string
	log   *slog.Logger
	ttl   time.Duration
}

// NewLeaseMembership makes replica id's membership in s's leases.
func NewLeaseMembership(s *store.Store, id string, log *slog.Logger, ttl time.Duration) *LeaseMembership {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &LeaseMembership{store: s, id: id, log: log, ttl: ttl}
}

// ID is this replica's id.
func (m *LeaseMembership) ID() string { return m.id }

// Alive lists the replicas whose leases run.
func (m *LeaseMembership) Alive(ctx context.Context) ([]string, error) {
	return m.store.LiveHolders(ctx, replicaLeasePrefix)
}

// Run renews this replica's lease every renew until ctx ends, then gives
// it up, and prunes the leases of replicas gone for an hour.
func (m *LeaseMembership) Run(ctx context.Context, renew time.Duration) {
	name := replicaLeasePrefix + m.id
	t := time.NewTicker(renew)
	defer t.Stop()
	for n := 0; ; n++ {
		if _, _, err := m.store.AcquireLease(ctx, name, m.id, m.ttl); err != nil && ctx.Err() == nil {
			m.log.Warn("replica lease", "err", err)
		}
		if n%1000 == 0 {
			if err := m.store.PruneLeases(ctx, replicaLeasePrefix, time.Hour); err != nil && ctx.Err() == nil {
				m.log.Warn("prune replica leases", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = m.store.ReleaseLease(rctx, name, m.id)
			cancel()
			return
		case <-t.C:
		}
	}
}
