package engine

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/fleetpass/fleetpass/internal/store"
)

// Shared slots: on PostgreSQL, the slots of a registered host (libvirt)
// are rows every replica counts, so a host's max_concurrency bounds the
// whole cluster's work on it, not each replica's. An execution that finds
// no free slot snoozes instead of holding a worker while it waits.
const (
	// slotTTL is how long a slot outlives its last renewal: a replica
	// that died holding slots frees them this long after.
	slotTTL = 15 * time.Second
	// slotWait is about how long an item waits for a free slot before
	// asking again.
	slotWait = time.Second
)

// sharedSlots names this engine to the slots it holds.
type sharedSlots struct {
	once    sync.Once
	replica string
}

func (s *sharedSlots) owner(m Members) string {
	if m != nil {
		return m.ID() // the replica's id, as /v1/replicas lists it
	}
	s.once.Do(func() {
		b := make([]byte, 8)
		_, _ = cryptorand.Read(b)
		s.replica = "engine-" + hex.EncodeToString(b)
	})
	return s.replica
}

// hostSlot bounds concurrent work per host: in the database for the
// registered hosts of a PostgreSQL installation, else with this
// process's semaphore (one process on SQLite; simulated and agent-only
// machines, which have no host to protect). holder names the item.
func (e *Engine) hostSlot(ctx context.Context, drv, host, holder string) (release func(), err error) {
	key := drv + "/" + host
	if drv == "" || drv != e.drivers.HostDriver || e.store.Dialect() != store.Postgres {
		return e.localSlot(ctx, key)
	}
	return e.sharedSlot(ctx, key, host, holder)
}

func (e *Engine) localSlot(ctx context.Context, key string) (release func(), err error) {
	e.hostMu.Lock()
	ch, ok := e.hosts[key]
	if !ok {
		ch = make(chan struct{}, e.cfg.PerHostLimit)
		e.hosts[key] = ch
	}
	e.hostMu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *Engine) sharedSlot(ctx context.Context, key, hostID, holder string) (release func(), err error) {
	replica := e.slots.owner(e.cfg.Members)
	got, err := e.store.AcquireHostSlot(ctx, store.SlotRequest{HostKey: key, HostID: hostID,
		DefaultLimit: e.cfg.PerHostLimit, Holder: holder, Replica: replica, TTL: slotTTL})
	if err != nil {
		return nil, err // database trouble: River retries the job
	}
	if !got {
		// Jittered, so items waiting for one host do not ask in lockstep.
		return nil, river.JobSnooze(slotWait/2 + rand.N(slotWait))
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(slotTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			held, err := e.store.RenewHostSlot(rctx, key, holder, replica, slotTTL)
			switch {
			case rctx.Err() != nil:
				return
			case err != nil:
				e.log.Warn("renew host slot", "host", key, "holder", holder, "err", err)
			case !held:
				e.log.Warn("host slot lost (expired or taken over by a newer execution of the item)", "host", key, "holder", holder)
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer dcancel()
		if err := e.store.ReleaseHostSlot(dctx, key, holder, replica); err != nil {
			// It expires by itself within slotTTL.
			e.log.Warn("release host slot", "host", key, "holder", holder, "err", err)
		}
	}, nil
}
