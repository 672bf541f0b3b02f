package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetpass/fleetpass/internal/cluster"
	"github.com/fleetpass/fleetpass/internal/metrics"
)

// replica is this server's membership of the cluster of servers sharing
// its database, with the lifetime of its heartbeat loop: the heartbeat
// outlives the HTTP server and the engine at a graceful stop, so no other
// replica takes over executions still ending here.
type replica struct {
	members *cluster.Membership
	once    sync.Once
	cancel  context.CancelFunc
	done    chan struct{}
}

// openReplica makes the membership and the metrics labelled with the
// replica's id. The engine is fenced through s.engine, set later.
func (s *Server) openReplica() error {
	addr := s.cfg.PublicURL
	if addr == "" {
		addr = s.publicURL()
	}
	version := s.cfg.Version
	if version == "" {
		version = "devel"
	}
	m, err := cluster.New(s.store, cluster.Config{
		ID: s.cfg.ReplicaID, Address: addr, Version: version,
		Heartbeat: s.cfg.ReplicaHeartbeat, TTL: s.cfg.ReplicaTTL,
		// SQLite's data directory is locked to one process: any other
		// replica id in its database is a previous run's.
		Exclusive: s.cfg.DatabaseURL == "",
		OnFence: func(reason error) {
			if s.engine != nil {
				s.engine.Fence(reason)
			}
		},
		OnTrust: func() {
			if s.engine != nil {
				s.engine.Unfence()
			}
		},
		Log: s.log,
	})
	if err != nil {
		return err
	}
	s.replica = &replica{members: m}
	m.SetOwns(s.owns)
	s.log = s.log.With("replica", m.ID())
	s.cfg.Log = s.log
	s.log.Info("replica", "id", m.ID(), "address", addr)
	s.metrics = metrics.NewWithLabels(prometheus.Labels{"replica": m.ID()})
	s.cfg.Engine.Members = m
	return nil
}

// hostMembership is the cluster membership as host ownership asks for it.
type hostMembership struct{ m *cluster.Membership }

func (h hostMembership) ID() string { return h.m.ID() }

func (h hostMembership) Alive(ctx context.Context) ([]string, error) {
	live, err := h.m.Alive(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(live))
	for i, r := range live {
		ids[i] = r.ID
	}
	return ids, nil
}

// owns lists the leases replica id holds (host:<id> for the libvirt hosts
// it follows), for /v1/replicas.
func (s *Server) owns(ctx context.Context, id string) []string {
	leases, err := s.store.LeasesHeldBy(ctx, id)
	if err != nil {
		s.log.Warn("read a replica's leases", "replica", id, "err", err)
		return nil
	}
	names := make([]string, len(leases))
	for i, l := range leases {
		names[i] = l.Name
	}
	return names
}

// Members is the server's cluster membership.
func (s *Server) Members() *cluster.Membership { return s.replica.members }

// joinCluster writes the first heartbeat and starts the heartbeat loop,
// before the engine fetches any job.
func (s *Server) joinCluster(ctx context.Context) error {
	if err := s.replica.members.Join(ctx); err != nil {
		return err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.replica.cancel, s.replica.done = cancel, make(chan struct{})
	go func() {
		defer close(s.replica.done)
		s.replica.members.Run(hctx)
	}()
	return nil
}

// leaveCluster stops the heartbeat and marks the replica stopped, once the
// engine has stopped: the others take over at once whatever is left.
func (s *Server) leaveCluster() {
	if s.replica == nil || s.replica.cancel == nil {
		return
	}
	s.replica.once.Do(func() {
		s.replica.cancel()
		<-s.replica.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.replica.members.Leave(ctx); err != nil {
			s.log.Warn("mark this replica stopped", "err", err)
		}
	})
}

// errFenced is /readyz's answer while the replica cannot renew its
// heartbeat: a balancer should send requests elsewhere.
var errFenced = errors.New("self-fenced")

// clusterReady fails while this replica does not trust its own membership.
func (s *Server) clusterReady() error {
	if s.replica != nil && s.replica.cancel != nil && !s.replica.members.Trusted() {
		return errFenced
	}
	return nil
}

// readyStatus writes /readyz's refusal for err.
func readyRefusal(w http.ResponseWriter, err error) {
	http.Error(w, err.Error()+"\n", http.StatusServiceUnavailable)
}
