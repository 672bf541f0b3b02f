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

// BMCWatcher keeps the recorded power state of idle bare-metal servers in
// step with their BMCs' chassis status, polled every interval (a BMC sends
// no events fleetpass could follow), and records each BMC's fault (does
// not answer, refuses the credentials) on its instance. A server whose BMC
// cannot be read reads UNKNOWN, as a libvirt host's machines do when the
// host is unreachable.
type BMCWatcher struct {
	svc        *core.Service
	store      *store.Store
	power      driver.Power
	driverName string
	interval   time.Duration
	log        *slog.Logger
	parallel   int
}

// NewBMCWatcher makes a watcher of the instances of one BMC power driver.
func NewBMCWatcher(svc *core.Service, s *store.Store, driverName string, p driver.Power, interval time.Duration, log *slog.Logger) *BMCWatcher {
	return &BMCWatcher{svc: svc, store: s, power: p, driverName: driverName, interval: interval, log: log, parallel: 16}
}

// Run polls until ctx ends.
func (w *BMCWatcher) Run(ctx context.Context) { tick.Every(ctx, w.interval, w.SyncAll) }

// SyncAll reads every idle instance's BMC once.
func (w *BMCWatcher) SyncAll(ctx context.Context) {
	after := ""
	for ctx.Err() == nil {
		list, err := w.store.ListIdlePowerInstances(ctx, w.driverName, after, 500)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("bmc watcher: list instances", "err", err)
			}
			return
		}
		if len(list) == 0 {
			return
		}
		sem := make(chan struct{}, w.parallel)
		var wg sync.WaitGroup
		for _, in := range list {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				w.SyncOne(ctx, in)
			}()
		}
		wg.Wait()
		after = list[len(list)-1].ID
	}
}

// SyncOne reads one instance's BMC and records what it found.
func (w *BMCWatcher) SyncOne(ctx context.Context, in apiv1.Instance) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ps, err := w.power.State(ctx, driver.Ref{InstanceID: in.ID, Host: in.Power.Host, Address: in.Power.Address, OSType: in.OSType})
	state, fault := "", ""
	switch {
	case err == nil:
		state = engine.InstanceState(ps)
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return
	case errors.Is(err, driver.ErrMachineNotFound):
		state = apiv1.StateMissing
		fault = err.Error()
	default:
		state, fault = apiv1.StateUnknown, err.Error()
		var te *driver.TransientError
		if errors.As(err, &te) {
			fault = te.Err.Error()
		}
	}
	if err := w.svc.SetBMCObserved(ctx, in.ID, state, fault); err != nil && ctx.Err() == nil {
		w.log.Warn("bmc watcher: record state", "instance_id", in.ID, "err", err)
	}
}
