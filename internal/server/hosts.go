package server

import (
	"context"
	"fmt"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/libvirt"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/inventory"
)

// libvirtHosts connects the core service and the inventory to the libvirt
// driver: it opens and closes host connections (applying each host's
// concurrency limit to the engine) and translates the driver's domains and
// changes into the inventory's terms.
type libvirtHosts struct {
	d       *libvirt.Driver
	engine  *engine.Engine
	changes chan inventory.HostChange
}

func newLibvirtHosts(d *libvirt.Driver, e *engine.Engine) *libvirtHosts {
	return &libvirtHosts{d: d, engine: e, changes: make(chan inventory.HostChange, 64)}
}

func (h *libvirtHosts) Connect(host apiv1.Host) error {
	if err := h.d.SetHost(libvirt.Host{ID: host.ID, URI: host.URI}); err != nil {
		return err
	}
	h.engine.SetHostLimit(core.LibvirtDriver+"/"+host.ID, host.MaxConcurrency)
	return nil
}

func (h *libvirtHosts) Disconnect(id string) { h.d.RemoveHost(id) }

func (h *libvirtHosts) Status(host *apiv1.Host) {
	st := h.d.HostStatus(host.ID)
	host.Connected, host.Error, host.LibvirtVersion = st.Connected, st.Error, st.LibvirtVersion
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
			select {
			case h.changes <- inventory.HostChange{HostID: c.HostID, Connected: c.Connected}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// startHosts connects every registered host, adds the hosts named on the
// command line that are not registered yet, and starts following them.
func (s *Server) startHosts(ctx context.Context) error {
	go s.libvirt.Run(ctx)
	go s.hosts.forward(ctx)
	go inventory.NewHostWatcher(s.svc, s.hosts, s.log).Run(ctx)
	list, err := s.store.ListHosts(ctx, "")
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, h := range list {
		known[h.URI] = true
		if err := s.hosts.Connect(h); err != nil {
			// Kept in the list: the operator sees the host and its error.
			s.log.Warn("libvirt host cannot be connected", "host_id", h.ID, "err", err)
		}
	}
	tenant := s.cfg.LibvirtTenant
	if tenant == "" {
		tenant = core.AdminTenant
	}
	for _, uri := range s.cfg.LibvirtHosts {
		if known[uri] {
			continue
		}
		if err := s.svc.EnsureTenant(ctx, tenant); err != nil {
			return err
		}
		p := core.Principal{Kind: "system", ID: "serve --libvirt", Tenant: tenant, Admin: true, Address: "local"}
		h, err := s.svc.AddHost(ctx, p, apiv1.HostCreate{URI: uri})
		if err != nil {
			return fmt.Errorf("--libvirt %s: %w", uri, err)
		}
		known[uri] = true
		s.log.Info("added libvirt host", "host_id", h.ID, "uri", uri, "tenant", tenant)
	}
	return nil
}
