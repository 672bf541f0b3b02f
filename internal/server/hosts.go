package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/libvirt"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/inventory"
	"github.com/fleetpass/fleetpass/internal/store"
)

// libvirtHosts connects the core service and the inventory to the libvirt
// driver: it keeps a connection per host of the hosts table (followed on
// the hosts this replica owns, on demand on the others), applies each
// host's concurrency limit to the engine, and translates the driver's
// domains and changes into the inventory's terms.
type libvirtHosts struct {
	d       *libvirt.Driver
	engine  *engine.Engine
	changes chan inventory.HostChange

	mu     sync.Mutex
	owners *inventory.HostOwners // set by startHosts
	done   chan struct{}         // closed when the owners' loop has returned
}

func newLibvirtHosts(d *libvirt.Driver, e *engine.Engine) *libvirtHosts {
	return &libvirtHosts{d: d, engine: e, changes: make(chan inventory.HostChange, 64)}
}

// Validate implements core.HostConnector.
func (h *libvirtHosts) Validate(host apiv1.Host) error { return libvirt.ValidateURI(host.URI) }

// HostAdded implements core.HostConnector: the host is known at once
// (connected on demand, so the engine can act on it), and the next pass,
// run now, decides whether this replica follows it.
func (h *libvirtHosts) HostAdded(host apiv1.Host) {
	if !slices.Contains(h.d.HostIDs(), host.ID) {
		if err := h.SetHost(host, false); err != nil {
			return // validated already; the pass logs it
		}
	}
	h.poke()
}

// HostRemoved implements core.HostConnector.
func (h *libvirtHosts) HostRemoved(id string) {
	h.d.RemoveHost(id)
	h.poke()
}

func (h *libvirtHosts) poke() {
	h.mu.Lock()
	o := h.owners
	h.mu.Unlock()
	if o != nil {
		o.Poke()
	}
}

// SetHost implements inventory.HostConnections.
func (h *libvirtHosts) SetHost(host apiv1.Host, follow bool) error {
	if err := h.d.SetHost(libvirt.Host{ID: host.ID, URI: host.URI, OnDemand: !follow}); err != nil {
		return err
	}
	// Read from the table at every pass: a change reaches every replica.
	h.engine.SetHostLimit(core.LibvirtDriver+"/"+host.ID, host.MaxConcurrency)
	return nil
}

// RemoveHost implements inventory.HostConnections.
func (h *libvirtHosts) RemoveHost(id string) { h.d.RemoveHost(id) }

// HostIDs implements inventory.HostConnections.
func (h *libvirtHosts) HostIDs() []string { return h.d.HostIDs() }

// ConnState implements inventory.HostConnections.
func (h *libvirtHosts) ConnState(id string) store.HostStatus {
	st := h.d.HostStatus(id)
	return store.HostStatus{HostID: id, Connected: st.Connected, Error: st.Error, LibvirtVersion: st.LibvirtVersion,
		Since: st.Since}
}

func (h *libvirtHosts) HostDomains(ctx context.Context, hostID string) ([]core.HostDomain, error) {
	list, err := h.d.Domains(ctx, hostID)
	if err != nil {
		return nil, err
	}
	out := make([]core.HostDomain, 0, len(list))
	for _, d := range list {
		out = append(out, core.HostDomain{UUID: d.UUID, Name: d.Name, OSType: d.OSType, State: engine.InstanceState(d.State),
			GuestChannel: d.AgentChannel})
	}
	return out, nil
}

func (h *libvirtHosts) HostChanges() <-chan inventory.HostChange { return h.changes }

// forward relays the driver's changes until ctx ends.
func (h *libvirtHosts) forward(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-h.d.Changes():
			if c.UUID == "" {
				// The connection came, came back or went: record the
				// host's status now, not at the next lease renewal, so
				// /v1/hosts agrees with the instances' states.
				h.poke()
			}
			select {
			case h.changes <- inventory.HostChange{HostID: c.HostID, Connected: c.Connected}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// membership is this replica's view of the replicas sharing its database
// for host ownership: the cluster membership (cluster.go), so a host's
// owner is named by the replica id /v1/replicas and River know.
func (s *Server) membership(context.Context) inventory.Membership {
	return hostMembership{s.replica.members}
}

// startHosts starts following the hosts table (host ownership, the
// watcher of the owned hosts' domains, the split of the inventory sync)
// and adds the hosts named on the command line that are not registered
// yet.
func (s *Server) startHosts(ctx context.Context) error {
	members := s.membership(ctx)
	owners := inventory.NewHostOwners(s.store, members, s.hosts, s.log,
		inventory.OwnerConfig{Exclusive: s.store.Dialect() != store.Postgres})
	done := make(chan struct{})
	s.hosts.mu.Lock()
	s.hosts.owners, s.hosts.done = owners, done
	s.hosts.mu.Unlock()
	// Another replica added or removed a host (or the listener
	// reconnected): follow the table now rather than at the next pass.
	s.store.OnNotify(store.HostsChannel, func(string) { owners.Poke() })
	s.syncer.Partition(func(in apiv1.Instance) bool {
		if in.Power.Driver == core.LibvirtDriver && in.Power.Host != "" {
			return owners.Owns(in.Power.Host)
		}
		return owners.Mine(in.ID)
	})
	go s.libvirt.Run(ctx)
	go s.hosts.forward(ctx)
	go inventory.NewHostWatcher(s.svc, s.hosts, owners, s.log).Run(ctx)
	// The first pass before serving: this replica's hosts are connected
	// (or connecting) when Start returns.
	owners.Pass(ctx)
	go func() {
		defer close(done)
		owners.Run(ctx)
	}()
	tenant := s.cfg.LibvirtTenant
	if tenant == "" {
		tenant = core.AdminTenant
	}
	for _, uri := range s.cfg.LibvirtHosts {
		if err := s.svc.EnsureTenant(ctx, tenant); err != nil {
			return err
		}
		p := core.Principal{Kind: "system", ID: "serve --libvirt", Tenant: tenant, Admin: true, Address: "local"}
		h, err := s.svc.AddHost(ctx, p, apiv1.HostCreate{URI: uri})
		switch {
		case core.CodeOf(err) == core.CodeHostExists:
			// Registered before, or by another replica starting with
			// the same flag at the same time.
			continue
		case err != nil:
			return fmt.Errorf("--libvirt %s: %w", uri, err)
		}
		s.log.Info("added libvirt host", "host_id", h.ID, "uri", uri, "tenant", tenant)
	}
	return nil
}

// waitHosts waits (a while) for the host owners' loop to hand the owned
// hosts over, once the context given to Start has ended.
func (s *Server) waitHosts() {
	if s.hosts == nil {
		return
	}
	s.hosts.mu.Lock()
	done := s.hosts.done
	s.hosts.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// HostOwners is this replica's ownership of libvirt hosts, nil before
// Start: what it owns (GET /v1/replicas), for tests which replica follows
// a host.
func (s *Server) HostOwners() *inventory.HostOwners {
	if s.hosts == nil {
		return nil
	}
	s.hosts.mu.Lock()
	defer s.hosts.mu.Unlock()
	return s.hosts.owners
}

// LibvirtHostIDs lists the libvirt hosts this replica has a connection
// for, followed or on demand (tests: a removed host is gone everywhere).
func (s *Server) LibvirtHostIDs() []string { return s.libvirt.HostIDs() }
