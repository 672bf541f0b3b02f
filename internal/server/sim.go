package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
	path := filepath.Join(cfg.DataDir, "sim-fleet.db")
	if s.store.Dialect() != store.Postgres {
		if err := createPrivate(path); err != nil {
			return err
		}
		if s.sim, err = sim.Open(ctx, path, opts); err != nil {
			return fmt.Errorf("simulated fleet: %w", err)
		}
		return nil
	}
	if s.sim, err = sim.OpenDB(ctx, s.store.DB, store.Postgres, opts); err != nil {
		return fmt.Errorf("simulated fleet: %w", err)
	}
	if err := s.importSimFile(ctx, path); err != nil {
		s.sim.Close()
		return fmt.Errorf("simulated fleet: %w", err)
	}
	return nil
}

// importSimFile moves the machines of a fleet file left in the data
// directory by the server's SQLite days (`fleetpass db copy`) into a
// database that has none, so that the copied instances find their
// machines as they were.
func (s *Server) importSimFile(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return s.store.WithSessionLock(ctx, store.SeedLock, "simulated fleets", func(ctx context.Context) error {
		have, err := s.sim.List(ctx)
		if err != nil || len(have) > 0 {
			return err
		}
		file, err := sim.Open(ctx, path, sim.Options{})
		if err != nil {
			return err
		}
		defer file.Close()
		n, err := s.sim.Import(ctx, file)
		if n > 0 {
			s.log.Info("moved the simulated machines of the fleet file into the database", "file", path, "machines", n)
		}
		return err
	})
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
