package core

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Error codes of the boundaries between tenants.
const (
	// CodeLinkForbidden refuses a tenant that names a power or guest link:
	// links reach machines, and only the operator knows which machine is
	// whose.
	CodeLinkForbidden = "DRIVER_LINK_FORBIDDEN"
	// CodeLinkInUse refuses a second record of a machine: a power or guest
	// link belongs to at most one instance across all tenants.
	CodeLinkInUse = "DRIVER_LINK_IN_USE"
	// CodeCrossTenantBatch refuses one operation over instances of several
	// tenants: an operation belongs to one tenant.
	CodeCrossTenantBatch = "CROSS_TENANT_BATCH"
	// CodeInstanceQuota refuses an instance past the tenant's quota.
	CodeInstanceQuota = "INSTANCE_QUOTA_EXCEEDED"
	// CodeAgentTokenNotFound answers a token id the caller may not see, or
	// one already used or revoked.
	CodeAgentTokenNotFound = "AGENT_TOKEN_NOT_FOUND"
)

// DefaultMaxInstancesPerTenant is the default of --max-instances-per-tenant.
const DefaultMaxInstancesPerTenant = 50000

// SetMaxInstancesPerTenant sets the per-tenant instance quota; zero or less
// means DefaultMaxInstancesPerTenant.
func (s *Service) SetMaxInstancesPerTenant(n int) {
	if n <= 0 {
		n = DefaultMaxInstancesPerTenant
	}
	s.maxPerTenant = n
}

func (s *Service) quota() int {
	if s.maxPerTenant <= 0 {
		return DefaultMaxInstancesPerTenant
	}
	return s.maxPerTenant
}

// checkQuota refuses adding n instances to tenant past its quota, within
// the transaction that adds them.
func (s *Service) checkQuota(ctx context.Context, tx *sql.Tx, tenant string, n int) error {
	have, err := s.store.CountTenantInstances(ctx, tx, tenant)
	if err != nil {
		return err
	}
	if have+n > s.quota() {
		return &Error{Code: CodeInstanceQuota, Message: fmt.Sprintf("tenant %q has %d instances, the most this server allows a tenant is %d",
			tenant, have, s.quota()), Details: map[string]any{"limit": s.quota()}}
	}
	return nil
}

// checkLinks is the rule for every record of a machine's links, whoever
// makes it (the API, the console, the CLI, a bare-metal registration): only
// the operator (an admin) may name a power or guest link; the drivers must
// exist and accept the address; a link to a registered host names a host of
// the instance's own tenant.
func (s *Service) checkLinks(ctx context.Context, q store.Querier, p Principal, tenant, osType string, power, guest apiv1.DriverLink) error {
	if !p.Admin {
		return errorf(CodeLinkForbidden, "only the operator (an admin) may register an instance with, or change, a power or guest link; "+
			"a tenant gets instances from the libvirt hosts assigned to it and from agents enrolled with its tokens")
	}
	pd, ok := s.drivers.Power[power.Driver]
	if !ok {
		return fieldErrorf(CodeUnknownDriver, "power.driver", "%q is not a power driver of this server", power.Driver)
	}
	gd, ok := s.drivers.Guest[guest.Driver]
	if !ok {
		return fieldErrorf(CodeUnknownDriver, "guest.driver", "%q is not a guest channel of this server", guest.Driver)
	}
	if power.Address == "" || guest.Address == "" {
		return errorf(CodeInvalidArgument, "power.address and guest.address are required")
	}
	for _, c := range []struct {
		name string
		drv  any
		link apiv1.DriverLink
	}{{"power", pd, power}, {"guest", gd, guest}} {
		if v, ok := c.drv.(driver.AddressChecker); ok {
			if err := v.CheckAddress(driver.Ref{Host: c.link.Host, Address: c.link.Address, OSType: osType}); err != nil {
				return errorf(CodeInvalidArgument, "%s.address: %v", c.name, err)
			}
		}
		if c.link.Driver == LibvirtDriver {
			h, err := s.store.GetHost(ctx, q, c.link.Host)
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeHostNotFound, "%s.host: host %q not found", c.name, c.link.Host)
			}
			if err != nil {
				return err
			}
			if h.Tenant != tenant {
				return errorf(CodeInvalidArgument, "%s.host: host %q belongs to another tenant than the instance", c.name, c.link.Host)
			}
		}
	}
	return nil
}

// linkError turns the store's refusal of a second record of a link into
// the caller's error.
func linkError(err error) error {
	var lc *store.LinkConflict
	if errors.As(err, &lc) {
		return &Error{Code: CodeLinkInUse, Message: fmt.Sprintf("another instance already has this %s link: one machine has one record", lc.Link),
			Details: map[string]any{"link": lc.Link}}
	}
	return err
}

// oneTenant refuses a batch whose instances belong to several tenants and
// returns the one tenant. Only an admin can name several tenants'
// instances; the console and CLI split such a selection per tenant.
func oneTenant(insts []apiv1.Instance) (string, error) {
	byTenant := map[string][]string{}
	for _, in := range insts {
		byTenant[in.Tenant] = append(byTenant[in.Tenant], in.ID)
	}
	if len(byTenant) == 1 {
		return insts[0].Tenant, nil
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	return "", &Error{Code: CodeCrossTenantBatch,
		Message: fmt.Sprintf("the instances belong to %d tenants (%v); an operation belongs to one tenant: send one request per tenant",
			len(tenants), tenants),
		Details: map[string]any{"tenants": tenants, "instanceIdsByTenant": byTenant}}
}

// ---- enrolment tokens

// ListAgentTokens lists the enrolment tokens p may see, newest first.
func (s *Service) ListAgentTokens(ctx context.Context, p Principal) ([]apiv1.AgentToken, error) {
	list, err := s.store.ListAgentTokens(ctx, p.scope())
	if err != nil {
		return nil, storeFailed(err)
	}
	now := s.store.Now()
	out := make([]apiv1.AgentToken, 0, len(list))
	for _, t := range list {
		st := apiv1.TokenActive
		switch {
		case t.RevokedAt != nil:
			st = apiv1.TokenRevoked
		case t.UsedAt != nil:
			st = apiv1.TokenUsed
		case !now.Before(t.ExpiresAt):
			st = apiv1.TokenExpired
		}
		out = append(out, apiv1.AgentToken{ID: t.ID, Tenant: t.Tenant, InstanceName: t.InstanceName, State: st,
			CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, RevokedAt: t.RevokedAt,
			AgentID: t.AgentID})
	}
	return out, nil
}

// RevokeAgentToken revokes an unused enrolment token p may see; the audit
// line goes to the token's tenant.
func (s *Service) RevokeAgentToken(ctx context.Context, p Principal, id string) error {
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		tenant, err := s.store.RevokeAgentToken(ctx, tx, p.scope(), id)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(CodeAgentTokenNotFound, "enrolment token %q not found, used or revoked already", id)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, tx, p, tenant, "agent_token.revoke", id, "")
	})
	return wrapStore(err)
}

// redactItems drops what drivers said of failures (other systems'
// identifiers) from an operation shown to a tenant.
func redactItems(p Principal, op *apiv1.Operation) {
	if p.Admin {
		return
	}
	for i := range op.Items {
		op.Items[i].Detail = ""
	}
}
