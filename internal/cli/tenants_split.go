package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

// codeCrossTenantBatch is the server's refusal of one operation over
// several tenants' instances (core.CodeCrossTenantBatch).
const codeCrossTenantBatch = "CROSS_TENANT_BATCH"

// tenantGroups reads the per-tenant split of the ids a cross-tenant
// refusal lists, in tenant order, keeping the order the ids were given in.
func tenantGroups(err error, ids []string) ([][]string, bool) {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != codeCrossTenantBatch {
		return nil, false
	}
	byTenant, _ := ae.Details["instanceIdsByTenant"].(map[string]any)
	if len(byTenant) < 2 {
		return nil, false
	}
	tenantOf := map[string]string{}
	var tenants []string
	for t, list := range byTenant {
		tenants = append(tenants, t)
		l, _ := list.([]any)
		for _, id := range l {
			if s, ok := id.(string); ok {
				tenantOf[s] = t
			}
		}
	}
	sort.Strings(tenants)
	groups := make([][]string, len(tenants))
	for _, id := range ids {
		t, ok := tenantOf[id]
		if !ok {
			return nil, false
		}
		i := sort.SearchStrings(tenants, t)
		groups[i] = append(groups[i], id)
	}
	return groups, true
}

// perTenant sends an operation request for ids and, when an admin's
// selection spans tenants (the server refuses one operation over several),
// sends one request per tenant and reports each operation: one operation
// belongs to one tenant, which sees it with the admin as requester.
func (a *app) perTenant(ctx context.Context, c *client.Client, ids []string, wait bool,
	send func(ids []string) (*apiv1.Operation, error)) error {
	op, err := send(ids)
	groups, split := tenantGroups(err, ids)
	if !split {
		if err != nil {
			return err
		}
		return a.reportOperation(ctx, c, op, wait)
	}
	if !a.jsonOutput() {
		fmt.Fprintf(a.stdout, "The instances belong to %d tenants: one operation per tenant.\n", len(groups))
	}
	var errs []error
	for _, g := range groups {
		op, err := send(g)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := a.reportOperation(ctx, c, op, wait); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}
