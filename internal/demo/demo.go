// Package demo seeds the demo fleet of `fleetpass serve --demo`: a tenant
// with simulated Linux and Windows instances, running and stopped, with the
// faults every path of the console and CLI needs (a dead guest agent, a
// shutdown that hangs), and optionally a larger zero-latency fleet for load
// tests. Everything it makes is simulated and named as such.
package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
)

// Tenant is the demo tenant; LoadTenant holds load-test instances.
const (
	Tenant     = "demo"
	LoadTenant = "load"
)

// Timeouts of the demo, used unless set explicitly: the simulated machines
// boot in 3 s and shut down in 2 s, so the production waits (minutes, for
// real machines) would only make the dead-agent machine's failure arrive
// minutes late. With these it fails within about 15 s.
const (
	GuestTimeout    = 10 * time.Second
	ShutdownTimeout = 15 * time.Second
	BootTimeout     = 30 * time.Second
)

type spec struct {
	name    string
	os      sim.OS
	running bool
	faults  sim.Faults
}

func fleet() []spec {
	var out []spec
	roles := []string{"web", "db", "cache", "build", "mail", "vpn"}
	for i := 0; i < 22; i++ {
		os := sim.Linux
		if i%4 == 3 {
			os = sim.Windows
		}
		name := fmt.Sprintf("%s-%02d", roles[i%len(roles)], i/len(roles)+1)
		if os == sim.Windows {
			name = "win-" + name
		}
		out = append(out, spec{name: name, os: os, running: i%3 != 2})
	}
	out = append(out,
		spec{name: "legacy-agent-dead", os: sim.Linux, running: true, faults: sim.Faults{AgentDead: true}},
		spec{name: "stuck-shutdown", os: sim.Linux, running: true, faults: sim.Faults{HangShutdown: true}},
	)
	return out
}

// Seed registers the demo fleet once: in the simulated fleet and as
// instances of the demo tenant. Calling it again on a seeded server does
// nothing. Servers sharing a database call it under a lock
// (store.SeedLock), so that one of them seeds.
func Seed(ctx context.Context, svc *core.Service, f *sim.Fleet, boot, shutdown time.Duration) (int, error) {
	return seed(ctx, svc, f, Tenant, "demo-", fleet(), boot, shutdown)
}

// SeedLoad registers n simulated running instances in the load tenant.
func SeedLoad(ctx context.Context, svc *core.Service, f *sim.Fleet, n int, boot, shutdown time.Duration) (int, error) {
	specs := make([]spec, n)
	for i := range specs {
		specs[i] = spec{name: fmt.Sprintf("load-%05d", i), os: sim.Linux, running: true}
	}
	return seed(ctx, svc, f, LoadTenant, "load-", specs, boot, shutdown)
}

func seed(ctx context.Context, svc *core.Service, f *sim.Fleet, tenant, prefix string, specs []spec,
	boot, shutdown time.Duration) (int, error) {
	admin := core.Principal{Kind: "system", ID: "demo-seed", Tenant: tenant, Admin: true, Address: "local"}
	if err := svc.EnsureTenant(ctx, tenant); err != nil {
		return 0, err
	}
	existing, err := svc.ListInstances(ctx, admin, core.InstanceQuery{Tenant: tenant, Limit: 1})
	if err != nil {
		return 0, err
	}
	if len(existing.Instances) > 0 {
		// Seeded before. The simulated machines may live elsewhere than
		// the instances (a fleet file left behind when the database moved
		// to PostgreSQL): bring them back if the first one is missing.
		if len(specs) > 0 {
			if _, err := f.Get(ctx, prefix+specs[0].name); errors.Is(err, driver.ErrMachineNotFound) {
				for _, s := range specs {
					if err := addMachine(ctx, f, prefix, s, boot, shutdown); err != nil {
						return 0, err
					}
				}
			}
		}
		return 0, nil
	}
	for _, s := range specs {
		if err := addMachine(ctx, f, prefix, s, boot, shutdown); err != nil {
			return 0, err
		}
		id := prefix + s.name
		in, err := svc.RegisterInstance(ctx, admin, apiv1.InstanceCreate{Name: s.name, Tenant: tenant, OSType: string(s.os),
			Power: apiv1.DriverLink{Driver: "sim", Host: "sim-host-1", Address: id},
			Guest: apiv1.DriverLink{Driver: "sim", Host: "sim-host-1", Address: id}})
		if err != nil {
			return 0, fmt.Errorf("demo instance %s: %w", s.name, err)
		}
		state := apiv1.StateStopped
		if s.running {
			state = apiv1.StateRunning
		}
		alive := s.running && !s.faults.AgentDead
		if err := svc.SetInstanceObserved(ctx, in.ID, state, &alive); err != nil {
			return 0, err
		}
	}
	return len(specs), nil
}

// addMachine adds the simulated machine of s, unless it exists.
func addMachine(ctx context.Context, f *sim.Fleet, prefix string, s spec, boot, shutdown time.Duration) error {
	id := prefix + s.name
	m := sim.Machine{ID: id, OS: s.os, Users: []string{s.os.DefaultUser(), "deploy"}, Running: s.running,
		BootTime: boot, ShutdownTime: shutdown, Faults: s.faults}
	if err := f.Add(ctx, m); err != nil && !errors.Is(err, sim.ErrMachineExists) {
		return fmt.Errorf("demo machine %s: %w", id, err)
	}
	return nil
}
