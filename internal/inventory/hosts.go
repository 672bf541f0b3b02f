package inventory

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/store"
)

// HostChange says that something changed on a host: its connection went up
// or down, or one of its machines changed.
type HostChange struct {
	HostID    string
	Connected bool
}

// HostSource is a hypervisor driver seen from the inventory: the full list
// of a host's machines, and a stream of changes.
type HostSource interface {
	HostDomains(ctx context.Context, hostID string) ([]core.HostDomain, error)
	HostChanges() <-chan HostChange
}

// HostLeases tells whether this replica owns a host, and its lease then.
type HostLeases interface {
	Lease(hostID string) (store.Lease, bool)
}

// HostWatcher keeps the instances of hypervisor hosts in step with their
// machines. Every change leads to a full resync of its host after a short
// quiet period, so a burst of lifecycle events (a host booting fifty VMs)
// costs one listing, and a dropped event is repaired by the next one. It
// acts only on the hosts this replica owns, fenced by their leases.
type HostWatcher struct {
	svc    *core.Service
	src    HostSource
	leases HostLeases
	log    *slog.Logger
	// settle is the quiet period before a resync.
	settle time.Duration
}

// NewHostWatcher makes a watcher over src for the hosts leases says this
// replica owns.
func NewHostWatcher(svc *core.Service, src HostSource, leases HostLeases, log *slog.Logger) *HostWatcher {
	return &HostWatcher{svc: svc, src: src, leases: leases, log: log, settle: 150 * time.Millisecond}
}

// Run follows the source's changes until ctx ends.
func (w *HostWatcher) Run(ctx context.Context) {
	pending := map[string]bool{} // host id → connected
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case c := <-w.src.HostChanges():
			if !c.Connected {
				// Say so at once: operators watch for this.
				delete(pending, c.HostID)
				lease, ok := w.leases.Lease(c.HostID)
				if !ok {
					continue // another replica owns it: its view counts
				}
				if err := w.svc.MarkHostUnreachable(ctx, c.HostID, lease); err != nil && ctx.Err() == nil {
					w.logFailure("inventory: mark host unreachable", c.HostID, err)
				}
				continue
			}
			if len(pending) == 0 {
				timer.Reset(w.settle)
			}
			pending[c.HostID] = true
		case <-timer.C:
			for id := range pending {
				w.Resync(ctx, id)
			}
			clear(pending)
		}
	}
}

// Resync lists a host's machines and reconciles its instances with them,
// if this replica owns the host.
func (w *HostWatcher) Resync(ctx context.Context, hostID string) {
	lease, ok := w.leases.Lease(hostID)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	domains, err := w.src.HostDomains(ctx, hostID)
	if err != nil {
		// The driver reports the lost connection as a change of its own.
		if ctx.Err() == nil {
			w.log.Warn("inventory: list host machines", "host_id", hostID, "err", err)
		}
		return
	}
	if err := w.svc.ReconcileHost(ctx, hostID, domains, lease); err != nil && ctx.Err() == nil {
		w.logFailure("inventory: reconcile host", hostID, err)
	}
}

// logFailure logs a failed change of a host's instances; one fenced off
// because the host passed to another replica is expected on a hand-over.
func (w *HostWatcher) logFailure(msg, hostID string, err error) {
	if errors.Is(err, store.ErrLeaseLost) {
		w.log.Info(msg+": the host passed to another replica", "host_id", hostID)
		return
	}
	w.log.Warn(msg, "host_id", hostID, "err", err)
}
