package inventory

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/rendezvous"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Membership is what host ownership needs of the cluster of replicas
// sharing one database: this replica's id and the ids of the live ones.
type Membership interface {
	ID() string
	Alive(ctx context.Context) ([]string, error)
}

// HostConnections is the hypervisor driver seen from host ownership: a
// connection per host of the hosts table, followed (lifecycle events,
// changes, resyncs) on the host's owner only, on demand elsewhere.
type HostConnections interface {
	// SetHost adds or updates a host's connection: followed when follow,
	// else connected only while calls need it. Setting what is set
	// already changes nothing.
	SetHost(h apiv1.Host, follow bool) error
	RemoveHost(id string)
	// HostIDs lists the hosts that have a connection.
	HostIDs() []string
	// ConnState is this replica's own view of its connection to a host.
	ConnState(id string) store.HostStatus
}

// Ownership timings (OwnerConfig's defaults).
const (
	DefaultLeaseTTL   = 10 * time.Second
	DefaultLeaseRenew = 2 * time.Second
)

// OwnerConfig tunes HostOwners; zero fields take defaults.
type OwnerConfig struct {
	// TTL is a host lease's time to live, Renew the period of the pass
	// that renews leases, takes and hands over hosts and follows the
	// hosts table. A dead owner's hosts are taken over within about TTL +
	// Renew (plus the membership's own delay in noticing the death).
	TTL, Renew time.Duration
	// Exclusive says that one process at a time uses the database
	// (SQLite, whose data directory is locked): a lease another holder
	// has is a gone process's, taken at once.
	Exclusive bool
}

// HostOwners decides which replica follows each libvirt host: the one
// rendezvous hashing picks among the live replicas, holding the host's
// lease (store.HostLease). The owner alone follows the host's events,
// reconciles its domains, marks its instances UNKNOWN when the connection
// drops and records the connection's state for every replica to read; the
// others connect on demand when the engine acts on the host. A lease is
// trusted until its renewal attempt's start + TTL - 1 s: a replica that
// cannot renew stops following before another can take over, and the
// owner's writes are fenced by the lease's epoch besides.
type HostOwners struct {
	store   *store.Store
	members Membership
	conns   HostConnections
	log     *slog.Logger
	cfg     OwnerConfig
	wake    chan struct{}

	mu    sync.Mutex
	held  map[string]*heldHost // by host id
	alive []string
}

type heldHost struct {
	host       apiv1.Host
	lease      store.Lease
	trustUntil time.Time
	// written is the connection state last recorded in this term.
	written *store.HostStatus
}

// NewHostOwners makes the ownership of the hosts of s for the replica
// members names.
func NewHostOwners(s *store.Store, members Membership, conns HostConnections, log *slog.Logger, cfg OwnerConfig) *HostOwners {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.Renew <= 0 {
		cfg.Renew = DefaultLeaseRenew
	}
	return &HostOwners{store: s, members: members, conns: conns, log: log, cfg: cfg, wake: make(chan struct{}, 1),
		held: map[string]*heldHost{}, alive: []string{members.ID()}}
}

// ID is this replica's id, the holder of its leases.
func (o *HostOwners) ID() string { return o.members.ID() }

// Lease is this replica's lease on a host, while it owns the host and
// trusts the lease.
func (o *HostOwners) Lease(hostID string) (store.Lease, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.held[hostID]
	if !ok || !time.Now().Before(h.trustUntil) {
		return store.Lease{}, false
	}
	return h.lease, true
}

// Owns tells whether this replica follows a host now.
func (o *HostOwners) Owns(hostID string) bool {
	_, ok := o.Lease(hostID)
	return ok
}

// Mine tells whether key falls to this replica by rendezvous hashing over
// the live replicas it saw last: how work with no lease of its own (the
// sync of instances that are not on a host) is split.
func (o *HostOwners) Mine(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return rendezvous.Pick(key, o.alive) == o.members.ID()
}

// Alive lists the live replicas this replica saw at its last pass, itself
// included.
func (o *HostOwners) Alive() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := slices.Clone(o.alive)
	slices.Sort(out)
	return out
}

// Owned lists the hosts this replica owns now, by id.
func (o *HostOwners) Owned() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.held))
}

// Poke runs a pass soon: the hosts table changed.
func (o *HostOwners) Poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run keeps ownership until ctx ends, then hands the hosts it owns over
// at once (a stopping replica's hosts need not wait for their leases to
// expire).
func (o *HostOwners) Run(ctx context.Context) {
	t := time.NewTicker(o.cfg.Renew)
	defer t.Stop()
	for {
		var soon <-chan time.Time
		if o.Pass(ctx) {
			// A host just taken is connecting: record its state as soon
			// as it is known rather than a whole period later.
			soon = time.After(o.cfg.Renew / 8)
		}
		select {
		case <-ctx.Done():
			o.releaseAll()
			return
		case <-t.C:
		case <-soon:
		case <-o.wake:
		}
	}
}

// Pass renews the leases held, takes the hosts that fall to this replica
// and hands over those that no longer do, follows the hosts table (new
// hosts connected, removed ones disconnected, limits updated) and records
// the state of the owned hosts' connections. It reports whether it took
// a host.
func (o *HostOwners) Pass(ctx context.Context) (took bool) {
	start := time.Now()
	// A database that hangs must not hold the pass past the leases'
	// trust: Lease stops vouching for them on its own, and the next pass
	// tries again.
	ctx, cancel := context.WithTimeout(ctx, o.cfg.TTL/2)
	defer cancel()
	me := o.members.ID()
	o.renew(ctx, start)

	if alive, err := o.members.Alive(ctx); err != nil {
		if ctx.Err() == nil {
			o.log.Warn("hosts: read live replicas", "err", err)
		}
	} else {
		if !slices.Contains(alive, me) {
			alive = append(alive, me) // live, since it is running this
		}
		o.mu.Lock()
		o.alive = alive
		o.mu.Unlock()
	}
	hosts, err := o.store.ListHosts(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			o.log.Warn("hosts: list hosts", "err", err)
		}
		return
	}
	o.mu.Lock()
	alive := o.alive
	o.mu.Unlock()
	inTable := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		inTable[h.ID] = true
		want := rendezvous.Pick(store.HostLease(h.ID), alive) == me
		o.mu.Lock()
		held := o.held[h.ID]
		if held != nil {
			held.host = h
		}
		o.mu.Unlock()
		switch {
		case want && held == nil:
			took = o.take(ctx, h, start) || took
		case !want && held != nil:
			o.handOver(ctx, h.ID, "another replica is to own it")
		}
		if err := o.conns.SetHost(h, o.Owns(h.ID)); err != nil {
			// AddHost validated the URI; a newer fleetpass may know URIs
			// this one does not.
			o.log.Warn("hosts: cannot connect", "host_id", h.ID, "err", err)
		}
	}
	for _, id := range o.conns.HostIDs() {
		if !inTable[id] {
			o.mu.Lock()
			delete(o.held, id)
			o.mu.Unlock()
			o.conns.RemoveHost(id)
			o.log.Info("hosts: host removed", "host_id", id)
		}
	}
	o.record(ctx)
	return took
}

// renew extends every lease held in one statement; those the database no
// longer gives are dropped, and so are all once their trust runs out
// while the database does not answer.
func (o *HostOwners) renew(ctx context.Context, start time.Time) {
	o.mu.Lock()
	names := make([]string, 0, len(o.held))
	for _, h := range o.held {
		names = append(names, h.lease.Name)
	}
	o.mu.Unlock()
	if len(names) == 0 {
		return
	}
	renewed, err := o.store.RenewLeases(ctx, o.members.ID(), names, o.cfg.TTL)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		for id, h := range o.held {
			if !start.Before(h.trustUntil) {
				o.dropLocked(id, "its lease could not be renewed in time")
			}
		}
		if ctx.Err() == nil {
			o.log.Warn("hosts: renew leases", "err", err)
		}
		return
	}
	got := make(map[string]store.Lease, len(renewed))
	for _, l := range renewed {
		got[l.Name] = l
	}
	for id, h := range o.held {
		l, ok := got[h.lease.Name]
		if !ok || l.Epoch != h.lease.Epoch {
			o.dropLocked(id, "its lease passed to another replica or lapsed")
			continue
		}
		h.lease, h.trustUntil = l, start.Add(o.cfg.TTL-time.Second)
	}
}

// take acquires a host's lease and, having it, follows the host: the
// driver connects, and its connect leads to a full resync.
func (o *HostOwners) take(ctx context.Context, h apiv1.Host, start time.Time) bool {
	name, me := store.HostLease(h.ID), o.members.ID()
	var l store.Lease
	var ok bool
	var err error
	if o.cfg.Exclusive {
		l, err = o.store.TakeLease(ctx, name, me, o.cfg.TTL)
		ok = err == nil
	} else {
		l, ok, err = o.store.AcquireLease(ctx, name, me, o.cfg.TTL)
	}
	if err != nil {
		if ctx.Err() == nil {
			o.log.Warn("hosts: acquire a host's lease", "host_id", h.ID, "err", err)
		}
		return false
	}
	if !ok {
		return false // its owner's term still runs: it hands over, or lapses
	}
	o.mu.Lock()
	o.held[h.ID] = &heldHost{host: h, lease: l, trustUntil: start.Add(o.cfg.TTL - time.Second)}
	o.mu.Unlock()
	o.log.Info("hosts: following the host", "host_id", h.ID, "uri", h.URI, "epoch", l.Epoch)
	return true
}

// handOver releases a host's lease so that the replica it falls to takes
// it at its next pass.
func (o *HostOwners) handOver(ctx context.Context, hostID, why string) {
	o.mu.Lock()
	h := o.held[hostID]
	if h != nil {
		o.dropLocked(hostID, why)
	}
	o.mu.Unlock()
	if h == nil {
		return
	}
	if err := o.store.ReleaseLease(ctx, h.lease.Name, h.lease.Holder); err != nil && ctx.Err() == nil {
		o.log.Warn("hosts: release a host's lease", "host_id", hostID, "err", err)
	}
}

// dropLocked stops following a host at once. o.mu must be held.
func (o *HostOwners) dropLocked(hostID, why string) {
	h := o.held[hostID]
	if h == nil {
		return
	}
	delete(o.held, hostID)
	if err := o.conns.SetHost(h.host, false); err != nil {
		o.log.Warn("hosts: cannot connect", "host_id", hostID, "err", err)
	}
	o.log.Info("hosts: no longer following the host", "host_id", hostID, "why", why, "epoch", h.lease.Epoch)
}

// record writes the state of each owned host's connection when it
// changed, fenced by the host's lease.
func (o *HostOwners) record(ctx context.Context) {
	type todo struct {
		id    string
		lease store.Lease
		st    store.HostStatus
	}
	var list []todo
	o.mu.Lock()
	for id, h := range o.held {
		st := o.conns.ConnState(id)
		st.HostID = id
		if w := h.written; w != nil && w.Connected == st.Connected && w.Error == st.Error &&
			w.LibvirtVersion == st.LibvirtVersion && w.Since.Equal(st.Since) {
			continue
		}
		list = append(list, todo{id, h.lease, st})
	}
	o.mu.Unlock()
	for _, t := range list {
		err := o.store.PutHostStatus(ctx, t.lease, t.st)
		o.mu.Lock()
		switch h := o.held[t.id]; {
		case errors.Is(err, store.ErrLeaseLost):
			o.dropLocked(t.id, "its lease passed to another replica")
		case err != nil:
			if ctx.Err() == nil {
				o.log.Warn("hosts: record a host's status", "host_id", t.id, "err", err)
			}
		case h != nil && h.lease.Epoch == t.lease.Epoch:
			st := t.st
			h.written = &st
		}
		o.mu.Unlock()
	}
}

// releaseAll hands every owned host over as the replica stops.
func (o *HostOwners) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.mu.Lock()
	leases := make([]store.Lease, 0, len(o.held))
	for _, h := range o.held {
		leases = append(leases, h.lease)
	}
	clear(o.held)
	o.mu.Unlock()
	for _, l := range leases {
		if err := o.store.ReleaseLease(ctx, l.Name, l.Holder); err != nil {
			o.log.Warn("hosts: release a host's lease", "lease", l.Name, "err", err)
		}
	}
}
