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
	"github.com/fleetpass/fleetpass/internal/tick"
)

// Syncer refreshes instance states. One tenant cannot slow another: each
// machine gets a deadline, the pass over new (PENDING) instances runs apart
// from the full pass and never waits for a machine that does not answer,
// and the full pass sweeps each tenant on its own with a bounded number of
// machines at once, so a tenant whose machines all hang holds only its own
// few slots, and its sweep, still running at the next pass, is not started
// twice while the other tenants' sweeps go on.
type Syncer struct {
	svc      *core.Service
	store    *store.Store
	drivers  engine.Drivers
	log      *slog.Logger
	interval time.Duration
	// perTenant bounds one tenant's driver calls at once; global (16)
	// bounds the full pass's: real drivers answer slowly.
	perTenant int
	// Deadline bounds one instance's refresh.
	Deadline time.Duration

	global  chan struct{} // full-pass slots
	pending chan struct{} // PENDING-pass slots, apart from the full pass

	mu       sync.Mutex
	sweeping map[string]bool // tenants whose full sweep runs
	inflight map[string]bool // instances being refreshed
	tenantN  map[string]int  // PENDING refreshes in flight per tenant
	// watched are power drivers whose state a watcher of their own keeps
	// (BMCWatcher): this syncer only checks their guests.
	watched map[string]bool
	// mine, when set, tells which instances this replica syncs: replicas
	// sharing a database split them rather than each sync them all.
	mine func(apiv1.Instance) bool
}

// Partition makes the syncer refresh only the instances mine accepts:
// with several replicas each takes its share (a brief overlap when
// replicas come and go is harmless, a refresh is idempotent).
func (y *Syncer) Partition(mine func(apiv1.Instance) bool) { y.mine = mine }

// skip tells whether an instance is not this pass's to refresh.
func (y *Syncer) skip(in apiv1.Instance) bool {
	return in.Busy || (y.mine != nil && !y.mine(in))
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
	return &Syncer{svc: svc, store: s, drivers: d, log: log, interval: interval, perTenant: 4,
		Deadline: 10 * time.Second, global: make(chan struct{}, 16), pending: make(chan struct{}, 8),
		sweeping: map[string]bool{}, inflight: map[string]bool{}, tenantN: map[string]int{}}
}

// Run syncs new (PENDING) instances every second and every idle instance
// every interval, until ctx ends. The two passes run independently.
func (y *Syncer) Run(ctx context.Context) {
	go tick.Every(ctx, time.Second, y.syncPending)
	tick.Every(ctx, y.interval, y.startSweeps)
}

// syncPending starts a refresh of each new instance not being refreshed,
// at most perTenant per tenant, and does not wait for them: a machine that
// hangs delays nobody's next tick.
func (y *Syncer) syncPending(ctx context.Context) {
	list, err := y.store.ListInstances(ctx, store.InstanceFilter{State: apiv1.StatePending, Limit: 500})
	if err != nil {
		if ctx.Err() == nil {
			y.log.Warn("inventory: list pending instances", "err", err)
		}
		return
	}
	for _, in := range list {
		if y.skip(in) {
			continue
		}
		y.mu.Lock()
		if y.inflight[in.ID] || y.tenantN[in.Tenant] >= y.perTenant {
			y.mu.Unlock()
			continue
		}
		select {
		case y.pending <- struct{}{}:
		default:
			y.mu.Unlock()
			return // all slots taken: the next tick goes on
		}
		y.inflight[in.ID] = true
		y.tenantN[in.Tenant]++
		y.mu.Unlock()
		go func() {
			defer func() {
				<-y.pending
				y.mu.Lock()
				delete(y.inflight, in.ID)
				y.tenantN[in.Tenant]--
				y.mu.Unlock()
			}()
			y.SyncOne(ctx, in)
		}()
	}
}

// startSweeps starts the full sweep of every tenant whose last one ended.
func (y *Syncer) startSweeps(ctx context.Context) {
	tenants, err := y.store.ListTenants(ctx)
	if err != nil {
		if ctx.Err() == nil {
			y.log.Warn("inventory: list tenants", "err", err)
		}
		return
	}
	for _, t := range tenants {
		y.mu.Lock()
		if y.sweeping[t.ID] {
			y.mu.Unlock()
			continue
		}
		y.sweeping[t.ID] = true
		y.mu.Unlock()
		go func() {
			defer func() {
				y.mu.Lock()
				delete(y.sweeping, t.ID)
				y.mu.Unlock()
			}()
			y.sweepTenant(ctx, t.ID)
		}()
	}
}

// SyncAll refreshes every idle instance once, tenant by tenant in
// parallel, and returns when all are done.
func (y *Syncer) SyncAll(ctx context.Context) {
	tenants, err := y.store.ListTenants(ctx)
	if err != nil {
		if ctx.Err() == nil {
			y.log.Warn("inventory: list tenants", "err", err)
		}
		return
	}
	var wg sync.WaitGroup
	for _, t := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			y.sweepTenant(ctx, t.ID)
		}()
	}
	wg.Wait()
}

// sweepTenant refreshes a tenant's idle instances, perTenant at once.
func (y *Syncer) sweepTenant(ctx context.Context, tenant string) {
	f := store.InstanceFilter{Tenant: tenant, Limit: 500}
	sem := make(chan struct{}, y.perTenant)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		list, err := y.store.ListInstances(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				y.log.Warn("inventory: list instances", "tenant", tenant, "err", err)
			}
			return
		}
		for _, in := range list {
			if y.skip(in) {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case y.global <- struct{}{}:
			case <-ctx.Done():
				<-sem
				return
			}
			y.mu.Lock()
			dup := y.inflight[in.ID]
			if !dup {
				y.inflight[in.ID] = true
			}
			y.mu.Unlock()
			if dup {
				<-y.global
				<-sem
				continue
			}
			wg.Add(1)
			go func() {
				defer func() {
					y.mu.Lock()
					delete(y.inflight, in.ID)
					y.mu.Unlock()
					<-y.global
					<-sem
					wg.Done()
				}()
				y.SyncOne(ctx, in)
			}()
		}
		if len(list) < f.Limit {
			return
		}
		last := list[len(list)-1]
		f.AfterName, f.AfterID = last.Name, last.ID
	}
}

// SyncOne refreshes one instance.
func (y *Syncer) SyncOne(ctx context.Context, in apiv1.Instance) {
	ctx, cancel := context.WithTimeout(ctx, y.Deadline)
	defer cancel()
	// Defence in depth: act only on links that are the instance's own.
	if problem, err := y.store.LinkOwnerProblem(ctx, y.store.DB, in, y.drivers.Links()); err != nil || problem != "" {
		if err == nil {
			y.log.Warn("inventory: skipping an instance whose links are not its own", "instance_id", in.ID, "problem", problem)
		}
		return
	}
	state := ""
	if p := y.drivers.Power[in.Power.Driver]; p != nil && !y.watched[in.Power.Driver] {
		ps, err := p.State(ctx, driver.Ref{InstanceID: in.ID, Host: in.Power.Host, Address: in.Power.Address, OSType: in.OSType})
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
		err := g.Ping(ctx, driver.Ref{InstanceID: in.ID, Host: in.Guest.Host, Address: in.Guest.Address, OSType: in.OSType})
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
