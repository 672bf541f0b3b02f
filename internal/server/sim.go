package server

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fleetpass/fleetpass/internal/demo"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/store"
)

// openSim opens the simulated fleet of --demo, --sim and --sim-instances.
// On PostgreSQL it lives in the database, where every replica of the
// server sees one fleet; on SQLite in <data-dir>/sim-fleet.db, which is
// faster, and a server on SQLite is alone anyway.
func (s *Server) openSim(ctx context.Context, cfg Config) (err error) {
	opts := sim.Options{ActionTime: cfg.SimActionTime}
	if s.store.Dialect() == store.Postgres {
		s.sim, err = sim.OpenDB(ctx, s.store.DB, store.Postgres, opts)
	} else {
		path := filepath.Join(cfg.DataDir, "sim-fleet.db")
		if err := createPrivate(path); err != nil {
			return err
		}
		s.sim, err = sim.Open(ctx, path, opts)
	}
	if err != nil {
		return fmt.Errorf("simulated fleet: %w", err)
	}
	return nil
}

// seedSim seeds the demo and load fleets, under a database-wide lock so
// that of several replicas starting at once on an empty database one
// seeds and the others find the fleet seeded.
func (s *Server) seedSim(ctx context.Context, cfg Config) error {
	if !cfg.Demo && cfg.SimLoad <= 0 {
		return nil
	}
	return s.store.WithSessionLock(ctx, store.SeedLock, "simulated fleets", func(ctx context.Context) error {
		if cfg.Demo {
			n, err := demo.Seed(ctx, s.svc, s.sim, cfg.SimBoot, cfg.SimShutdown)
			if err != nil {
				return fmt.Errorf("demo fleet: %w", err)
			}
			if n > 0 {
				s.log.Info("seeded the demo fleet (simulated machines)", "tenant", demo.Tenant, "instances", n)
			}
		}
		if cfg.SimLoad > 0 {
			n, err := demo.SeedLoad(ctx, s.svc, s.sim, cfg.SimLoad, cfg.SimBoot, cfg.SimShutdown)
			if err != nil {
				return fmt.Errorf("load fleet: %w", err)
			}
			if n > 0 {
				s.log.Info("seeded the load-test fleet (simulated machines)", "tenant", demo.LoadTenant, "instances", n)
			}
		}
		return nil
	})
}
