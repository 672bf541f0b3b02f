package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetpass/fleetpass/internal/ratelimit"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/tick"
)

// What the replicas of one PostgreSQL database share beyond its rows:
// wake-ups (the store's LISTEN/NOTIFY listener, which the event bus and
// the agent channel follow) and the per-key rate limits. On SQLite there
// is one process: the in-process wake-ups and the in-memory limiter.

// rateLimiter is the per-principal limiter of every front door.
func (s *Server) rateLimiter() ratelimit.Limiter {
	limited := func(door string) { s.metrics.RateLimited.WithLabelValues(door).Inc() }
	if s.store.Dialect() != store.Postgres {
		return ratelimit.NewMemory(s.cfg.API.RateLimit, s.cfg.API.Burst, limited)
	}
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "fleetpass_rate_limiter_errors_total",
		Help: "Requests let through unlimited because the shared rate limiter could not reach the database."})
	s.metrics.Registerer.MustRegister(failures)
	return ratelimit.NewDatabase(s.store, s.cfg.API.RateLimit, s.cfg.API.Burst, limited, failures.Inc, s.log)
}

// registerWakeupMetrics exposes the listener's state.
func (s *Server) registerWakeupMetrics() {
	if s.store.Dialect() != store.Postgres {
		return
	}
	s.metrics.GaugeFunc("fleetpass_db_notifications_listening", "1 while this replica listens to the database's wake-up notifications.",
		func() float64 {
			if s.store.NotifyStats().Listening {
				return 1
			}
			return 0
		})
	s.metrics.Registerer.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetpass_db_notifications_received_total",
		Help: "Wake-up notifications received from the database (every replica's)."},
		func() float64 { return float64(s.store.NotifyStats().Received) }))
	s.metrics.Registerer.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetpass_db_notifications_sent_total",
		Help: "Event notifications this replica sent after its commits (at most one per 10 ms)."},
		func() float64 { return float64(s.store.NotifyStats().Sent) }))
	s.metrics.Registerer.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetpass_db_notifications_failed_total",
		Help: "Event notifications this replica could not send: other replicas' readers see those events only at their next poll."},
		func() float64 { return float64(s.store.NotifyStats().Failed) }))
}

// startShared starts the listener and the pruning of idle rate budgets.
func (s *Server) startShared(ctx context.Context) {
	if s.store.Dialect() != store.Postgres {
		return
	}
	go s.store.Listen(ctx, s.log)
	go tick.Every(ctx, time.Hour, func(ctx context.Context) {
		// A budget full for an hour holds nothing a new row would not.
		if err := s.store.PruneRateLimits(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
			s.log.Warn("prune rate limits", "err", err)
		}
	})
}
