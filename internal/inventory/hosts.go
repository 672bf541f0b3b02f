package inventory

import (
	"context"
	"log/slog"
	"time"

	"github.com/fleetpass/fleetpass/internal/core"
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

// HostWatcher keeps the instances of hypervisor hosts in step with their
// machines. Every change leads to a full resync of its host after a short
// quiet period, so a burst of lifecycle events (a host booting fifty VMs)
// costs one listing, and a dropped event is repaired by the next one.
type HostWatcher struct {
	svc *core.Service
	src HostSource
	log *slog.Logger
	// settle is the quiet period before a resync.
	settle time.Duration
}

// NewHostWatcher makes a watcher over src.
func NewHostWatcher(svc *core.Service, src HostSource, log *slog.Logger) *HostWatcher {
	return &HostWatcher{svc: svc, src: src, log: log, settle: 150 * time.Millisecond}
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
				if err := w.svc.MarkHostUnreachable(ctx, c.HostID); err != nil && ctx.Err() == nil {
					w.log.Warn("inventory: mark host unreachable", "host_id", c.HostID, "err", err)
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

// Resync lists a host's machines and reconciles its instances with them.
func (w *HostWatcher) Resync(ctx context.Context, hostID string) {
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
	if err := w.svc.ReconcileHost(ctx, hostID, domains); err != nil && ctx.Err() == nil {
		w.log.Warn("inventory: reconcile host", "host_id", hostID, "err", err)
	}
}
