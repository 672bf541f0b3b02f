package core

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/store"
)

// LibvirtDriver is the name of the libvirt power driver and guest channel.
const LibvirtDriver = "libvirt"

// Host limits.
const (
	DefaultHostConcurrency = 4
	MaxHostConcurrency     = 256
)

// HostConnector is the hypervisor driver seen from the service. Every
// replica's set of host connections follows the hosts table (the inventory
// keeps it so), and one replica at a time, the host's owner, follows each
// host and records its connection state in the database; the service reads
// that record, so that every replica answers the same.
type HostConnector interface {
	// Validate tells whether the driver can use the host's URI
	// (supported scheme, known parameters), without connecting: a host
	// unreachable right now is still added.
	Validate(h apiv1.Host) error
	// HostAdded and HostRemoved tell that this replica added or removed
	// a host, so that its own connections follow at once rather than at
	// its next pass (other replicas hear of it through the database).
	HostAdded(h apiv1.Host)
	HostRemoved(id string)
}

// SetHostConnector installs the host connector; without one, adding a host
// is refused.
func (s *Service) SetHostConnector(c HostConnector) { s.hosts = c }

// AddHost registers a libvirt host (admin only); a replica then connects
// to it and its domains become instances of the host's tenant as the
// inventory finds them.
func (s *Service) AddHost(ctx context.Context, p Principal, req apiv1.HostCreate) (apiv1.Host, error) {
	if !p.Admin {
		return apiv1.Host{}, errorf(CodeForbidden, "only an admin key may add hosts")
	}
	if s.hosts == nil {
		return apiv1.Host{}, errorf(CodeUnknownDriver, "this server has no libvirt driver")
	}
	h := apiv1.Host{ID: NewID("hst", 10), Driver: LibvirtDriver, URI: strings.TrimSpace(req.URI), Tenant: req.Tenant,
		Name: strings.TrimSpace(req.Name), MaxConcurrency: req.MaxConcurrency, DefaultOSType: req.DefaultOSType}
	tenant, err := p.TenantFor(h.Tenant)
	if err != nil {
		return apiv1.Host{}, err
	}
	h.Tenant = tenant
	u, err := url.Parse(h.URI)
	if h.URI == "" || err != nil || u.Scheme == "" {
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "uri", "a libvirt connection URI such as qemu:///system or qemu+ssh://root@host/system")
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		// A URI is shown in lists and logs: it must not carry a secret.
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "uri", "must not contain a password; use an SSH key (keyfile=) or TLS certificates")
	}
	if h.Name == "" {
		h.Name = u.Hostname()
		if h.Name == "" {
			h.Name = "local"
		}
	}
	if len(h.Name) > 128 || ctlchar.Contains(h.Name) {
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "name", "at most 128 printable characters")
	}
	switch {
	case h.MaxConcurrency == 0:
		h.MaxConcurrency = DefaultHostConcurrency
	case h.MaxConcurrency < 0 || h.MaxConcurrency > MaxHostConcurrency:
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "maxConcurrency", "1 to %d", MaxHostConcurrency)
	}
	switch h.DefaultOSType {
	case "":
		h.DefaultOSType = OSLinux
	case OSLinux, OSWindows:
	default:
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "defaultOsType", "linux or windows")
	}
	if err := s.hosts.Validate(h); err != nil {
		return apiv1.Host{}, fieldErrorf(CodeInvalidArgument, "uri", "%v", err)
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, h.Tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", h.Tenant)
			}
			return err
		}
		if err := s.store.CreateHost(ctx, tx, &h); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return errorf(CodeHostExists, "a host with URI %q exists already", h.URI)
			}
			return err
		}
		return s.audit(ctx, tx, p, h.Tenant, "host.add", h.ID, "")
	})
	if err != nil {
		return apiv1.Host{}, wrapStore(err)
	}
	s.hosts.HostAdded(h)
	applyHostStatus(p, &h, store.HostStatus{}, false)
	return h, nil
}

// ListHosts lists the hosts p may see with their connection state as their
// owners last recorded it.
func (s *Service) ListHosts(ctx context.Context, p Principal) ([]apiv1.Host, error) {
	list, err := s.store.ListHosts(ctx, p.scope())
	if err != nil {
		return nil, storeFailed(err)
	}
	statuses, err := s.store.ListHostStatuses(ctx)
	if err != nil {
		return nil, storeFailed(err)
	}
	for i := range list {
		st, ok := statuses[list[i].ID]
		applyHostStatus(p, &list[i], st, ok)
	}
	return list, nil
}

// applyHostStatus fills a host's connection fields from its owner's record
// (ok false: none yet). A record whose writer no longer holds the host's
// lease is history: nobody follows the host until another replica takes
// it over, within the lease's time to live. Replica ids are the
// operator's (as /v1/replicas is): only an admin sees which replica
// follows a host.
func applyHostStatus(p Principal, h *apiv1.Host, st store.HostStatus, ok bool) {
	switch {
	case !ok:
		h.Connected, h.Error = false, "waiting for a replica to connect"
	case !st.Current:
		last := ""
		if p.Admin {
			last = " (the last was " + st.Owner + ")"
		}
		h.Connected, h.Error = false, "no replica follows this host right now"+last+"; another takes it over shortly"
	default:
		h.Connected, h.Error, h.LibvirtVersion = st.Connected, st.Error, st.LibvirtVersion
		if p.Admin {
			h.Owner = st.Owner
		}
		if st.Connected {
			h.Error = ""
		}
	}
}

// DisconnectedHosts counts the hosts no replica is connected to now.
func (s *Service) DisconnectedHosts(ctx context.Context) (int, error) {
	list, err := s.store.ListHosts(ctx, "")
	if err != nil {
		return 0, err
	}
	statuses, err := s.store.ListHostStatuses(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range list {
		if st, ok := statuses[h.ID]; !ok || !st.Current || !st.Connected {
			n++
		}
	}
	return n, nil
}

// GetHost reads a host p may see.
func (s *Service) GetHost(ctx context.Context, p Principal, id string) (apiv1.Host, error) {
	h, err := s.store.GetHost(ctx, s.store.DB, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.Sees(h.Tenant)) {
		return apiv1.Host{}, errorf(CodeHostNotFound, "host %q not found", id)
	}
	if err != nil {
		return apiv1.Host{}, storeFailed(err)
	}
	st, err := s.store.GetHostStatus(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return apiv1.Host{}, storeFailed(err)
	}
	applyHostStatus(p, &h, st, err == nil)
	return h, nil
}

// RemoveHost removes a host with its instances (admin only), and every
// replica disconnects from it. Their operations stay as history. Refused
// while an operation holds one of its instances.
func (s *Service) RemoveHost(ctx context.Context, p Principal, id string) error {
	if !p.Admin {
		return errorf(CodeForbidden, "only an admin key may remove hosts")
	}
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		h, err := s.store.GetHost(ctx, tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(CodeHostNotFound, "host %q not found", id)
		}
		if err != nil {
			return err
		}
		list, err := s.store.HostInstances(ctx, tx, h.Driver, h.ID)
		if err != nil {
			return err
		}
		if err := s.store.DeleteHost(ctx, tx, h); err != nil {
			if errors.Is(err, store.ErrConflict) {
				var busy []string
				for _, in := range list {
					if in.Busy {
						busy = append(busy, in.ID)
					}
				}
				return &Error{Code: CodeInstanceBusy, Message: "an operation is in progress on one of the host's instances",
					Details: map[string]any{"busyIds": busy}}
			}
			return err
		}
		return s.audit(ctx, tx, p, h.Tenant, "host.remove", h.ID, "")
	})
	if err != nil {
		return wrapStore(err)
	}
	if s.hosts != nil {
		s.hosts.HostRemoved(id)
	}
	return nil
}

// HostDomain is what a host's inventory reports of one machine.
type HostDomain struct {
	// UUID is the machine's address on its host.
	UUID, Name string
	// OSType is empty when the machine's metadata tells none.
	OSType string
	// State is an instance state (RUNNING, STOPPED, ...).
	State string
	// GuestChannel tells whether the machine has a guest agent channel.
	GuestChannel bool
}

// ReconcileHost brings a host's instances in line with the full list of its
// machines: new machines become instances, renamed ones are renamed, idle
// ones take the state the host reports, and machines the host no longer has
// are marked MISSING, never deleted with their history.
//
// fence is the caller's lease on the host (its owner's): the reconcile
// happens only while that lease is still the caller's, in the same term, so
// a replica that lost the host cannot overwrite what the new owner saw; it
// fails with store.ErrLeaseLost then. There is no unfenced way in: a test
// passes the lease its server's host owners hold.
func (s *Service) ReconcileHost(ctx context.Context, hostID string, domains []HostDomain, fence store.Lease) error {
	h, err := s.store.GetHost(ctx, s.store.DB, hostID)
	if err != nil {
		return err
	}
	changed := false
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		// Two reconciles of one host at once (a resync beside an event,
		// or two replicas) would each find a new domain missing and both
		// add it: they take turns instead.
		if err := s.store.LockHost(ctx, tx, h.ID); err != nil {
			return err
		}
		if err := s.checkHostFence(ctx, tx, h.ID, fence); err != nil {
			return err
		}
		existing, err := s.store.HostInstances(ctx, tx, h.Driver, h.ID)
		if err != nil {
			return err
		}
		byUUID := make(map[string]apiv1.Instance, len(existing))
		for _, in := range existing {
			byUUID[in.Power.Address] = in
		}
		have, err := s.store.CountTenantInstances(ctx, tx, h.Tenant)
		if err != nil {
			return err
		}
		skipped := 0
		seen := make(map[string]bool, len(domains))
		for _, d := range domains {
			seen[d.UUID] = true
			// A host's domain names are another system's input: shown
			// as text, never as terminal controls.
			d.Name = ctlchar.Replace(d.Name)
			osType := d.OSType
			if osType == "" {
				osType = h.DefaultOSType
			}
			in, ok := byUUID[d.UUID]
			if !ok && have >= s.quota() {
				// The tenant is full: its other machines stay out until
				// the operator raises the quota or the tenant deletes some.
				skipped++
				continue
			}
			if !ok {
				have++
				link := apiv1.DriverLink{Driver: h.Driver, Host: h.ID, Address: d.UUID}
				in = apiv1.Instance{ID: NewID("ins", 10), Tenant: h.Tenant, Name: d.Name, OSType: osType,
					AdminUser: DefaultAdminUser(osType), State: d.State, Power: link, Guest: link}
				if err := s.store.CreateInstance(ctx, tx, &in); err != nil {
					return err
				}
				if _, err := s.store.UpdateInstanceInventory(ctx, tx, in.ID, in.Name, in.OSType, d.GuestChannel); err != nil {
					return err
				}
				if err := events.EmitInstance(ctx, tx, s.store, in.ID); err != nil {
					return err
				}
				changed = true
				continue
			}
			c1, err := s.store.UpdateInstanceInventory(ctx, tx, in.ID, d.Name, osType, d.GuestChannel)
			if err != nil {
				return err
			}
			c2, err := s.store.SetInstanceState(ctx, tx, in.ID, d.State, true)
			if err != nil {
				return err
			}
			if c1 || c2 {
				if err := events.EmitInstance(ctx, tx, s.store, in.ID); err != nil {
					return err
				}
				changed = true
			}
		}
		for _, in := range existing {
			if seen[in.Power.Address] {
				continue
			}
			c, err := s.setIdleState(ctx, tx, in.ID, apiv1.StateMissing)
			if err != nil {
				return err
			}
			changed = changed || c
		}
		if skipped > 0 {
			s.log.Warn("inventory: the host's tenant is at its instance quota; machines left out",
				"host_id", h.ID, "tenant", h.Tenant, "left_out", skipped, "quota", s.quota())
		}
		return nil
	})
	if changed {
		s.bus.Poke()
	}
	return err
}

// checkHostFence fails with store.ErrLeaseLost unless fence is the
// running term of hostID's own lease: another host's lease fences nothing
// here.
func (s *Service) checkHostFence(ctx context.Context, tx *sql.Tx, hostID string, fence store.Lease) error {
	if fence.Name != store.HostLease(hostID) {
		return fmt.Errorf("lease %q does not fence host %s: %w", fence.Name, hostID, store.ErrLeaseLost)
	}
	return s.store.CheckLease(ctx, tx, fence)
}

// MarkHostUnreachable sets every idle instance of a host whose connection
// is down to UNKNOWN (except those already MISSING): their state cannot be
// known until the connection is back. fence is as for ReconcileHost: only
// the host's owner marks them, so that another replica's own trouble
// reaching the host does not flip their states.
func (s *Service) MarkHostUnreachable(ctx context.Context, hostID string, fence store.Lease) error {
	h, err := s.store.GetHost(ctx, s.store.DB, hostID)
	if err != nil {
		return err
	}
	changed := false
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.LockHost(ctx, tx, h.ID); err != nil {
			return err
		}
		if err := s.checkHostFence(ctx, tx, h.ID, fence); err != nil {
			return err
		}
		list, err := s.store.HostInstances(ctx, tx, h.Driver, h.ID)
		if err != nil {
			return err
		}
		for _, in := range list {
			if in.State == apiv1.StateMissing {
				continue
			}
			c, err := s.setIdleState(ctx, tx, in.ID, apiv1.StateUnknown)
			if err != nil {
				return err
			}
			changed = changed || c
		}
		return nil
	})
	if changed {
		s.bus.Poke()
	}
	return err
}

// setIdleState records what a host says of an idle instance's state and
// emits the instance's event, reporting whether the state changed.
func (s *Service) setIdleState(ctx context.Context, tx *sql.Tx, id, state string) (bool, error) {
	c, err := s.store.SetInstanceState(ctx, tx, id, state, true)
	if err != nil || !c {
		return false, err
	}
	return true, events.EmitInstance(ctx, tx, s.store, id)
}
