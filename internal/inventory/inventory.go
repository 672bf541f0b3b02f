// Package inventory keeps the recorded state of idle instances in step with
// their machines: it reads each instance's power state and guest liveness
// through its drivers, soon after registration and then periodically, and
// turns the machines of hypervisor hosts (libvirt domains) into instances,
// following the hosts' change events. Instances with an operation in
// progress are the engine's to update.
package inventory

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Syncer refreshes instance states.
type Syncer struct {
	svc      *core.Service
	store    *store.Store
	drivers  engine.Drivers
	log      *slog.Logger
	interval time.Duration
	// parallel bounds driver calls at once: real drivers answer slowly.
	parallel int
	// watched are power drivers whose state a watcher of their own keeps
	// (BMCWatcher): this syncer only checks their guests.
	watched map[string]bool
}

// LeavePower tells the syncer that another watcher keeps the power state of
// the instances of power driver name (a BMC driver's BMCWatcher), so that
// two loops do not record different readings of one fault.
func (y *Syncer) LeavePower(name string) {
	if y.watched == nil {
		y.watched = map[string]bool{}
	}
	y.watched[name] = true
}

// New makes a Syncer doing a full pass every interval.
func New(svc *core.Service, s *store.Store, d engine.Drivers, log *slog.Logger, interval time.Duration) *Syncer {
	return &Syncer{svc: svc, store: s, drivers: d, log: log, interval: interval, parallel: 16}
}

// Run syncs new (PENDING) instances every second and every idle instance
// every interval, until ctx ends.
func (y *Syncer) Run(ctx context.Context) {
	fast := time.NewTicker(time.Second)
	defer fast.Stop()
	full := time.NewTicker(y.interval)
	defer full.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-fast.C:
			y.syncPending(ctx)
		case <-full.C:
			y.SyncAll(ctx)
		}
	}
}

func (y *Syncer) syncPending(ctx context.Context) {
	list, err := y.store.ListInstances(ctx, store.InstanceFilter{State: apiv1.StatePending, Limit: 500})
	if err != nil {
		if ctx.Err() == nil {
			y.log.Warn("inventory: list pending instances", "err", err)
		}
		return
	}
	y.syncMany(ctx, list)
}

// SyncAll refreshes every idle instance once.
func (y *Syncer) SyncAll(ctx context.Context) {
	after := ""
	for ctx.Err() == nil {
		list, err := y.store.ListIdleInstances(ctx, after, 500)
		if err != nil {
			if ctx.Err() == nil {
				y.log.Warn("inventory: list instances", "err", err)
			}
			return
		}
		if len(list) == 0 {
			return
		}
		y.syncMany(ctx, list)
		after = list[len(list)-1].ID
	}
}

func (y *Syncer) syncMany(ctx context.Context, list []apiv1.Instance) {
	sem := make(chan struct{}, y.parallel)
	var wg sync.WaitGroup
	for _, in := range list {
		if in.Busy {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			y.SyncOne(ctx, in)
		}()
	}
	wg.Wait()
}

// SyncOne refreshes one instance.
func (y *Syncer) SyncOne(ctx context.Context, in apiv1.Instance) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	state := ""
	if p := y.drivers.Power[in.Power.Driver]; p != nil && !y.watched[in.Power.Driver] {
		ps, err := p.State(ctx, driver.Ref{InstanceID: in.ID, Host: in.Power.Host, Address: in.Power.Address})
		switch {
		case err == nil:
			state = engine.InstanceState(ps)
		case errors.Is(err, driver.ErrMachineNotFound):
			// Gone from its host: marked, never deleted with its history.
			state = apiv1.StateMissing
		case driver.IsTransient(err):
			// Keep the last known state; the next pass tries again.
		default:
			state = apiv1.StateError
		}
	}
	var alive *bool
	if g := y.drivers.Guest[in.Guest.Driver]; g != nil && (state == apiv1.StateRunning || state == "") {
		err := g.Ping(ctx, driver.Ref{InstanceID: in.ID, Host: in.Guest.Host, Address: in.Guest.Address})
		if err == nil || !driver.IsTransient(err) {
			ok := err == nil
			alive = &ok
		}
	} else if state != "" {
		no := false
		alive = &no
	}
	if err := y.svc.SetInstanceObserved(ctx, in.ID, state, alive); err != nil && ctx.Err() == nil {
		y.log.Warn("inventory: record state", "instance_id", in.ID, "err", err)
	}
}
