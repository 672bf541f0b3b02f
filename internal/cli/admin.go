package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

func (a *app) newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Aliases: []string{"key"},
		Short:   "Create, list and revoke API keys",
	}
	cmd.AddCommand(a.newKeysCreateCmd(), a.newKeysListCmd(), a.newKeysRevokeCmd())
	return cmd
}

func (a *app) newKeysCreateCmd() *cobra.Command {
	var in apiv1.KeyCreate
	cmd := &cobra.Command{
		Use:   "create --name NAME [--tenant TENANT]",
		Short: "Create an API key; its secret is printed once",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if in.Name == "" {
				return usageErrorf("--name is required")
			}
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			k, err := c.CreateKey(cmd.Context(), in)
			if err != nil {
				return fmt.Errorf("creating key: %w", err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, k)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "Key id:\t%s\n", k.ID)
			fmt.Fprintf(tw, "Secret:\t%s\n", k.Secret)
			fmt.Fprintf(tw, "Tenant:\t%s\n", orDash(k.Tenant))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "The secret is shown only now; store it safely.")
			return nil
		},
	}
	cmd.Flags().StringVar(&in.Name, "name", "", "name of the key (what it is for)")
	cmd.Flags().StringVar(&in.Tenant, "tenant", "", "tenant of the key (default: your own)")
	return cmd
}

func (a *app) newKeysListCmd() *cobra.Command {
	return newListCmd(a, listCmd[apiv1.KeyList, apiv1.Key]{
		use: "list", short: "List API keys", what: "keys",
		fetch:  (*client.Client).ListKeys,
		items:  func(l *apiv1.KeyList) *[]apiv1.Key { return &l.Keys },
		header: []string{"ID", "NAME", "TENANT", "ADMIN", "CREATED", "LAST USED", "REVOKED"},
		cells: func(k apiv1.Key) []string {
			return []string{k.ID, k.Name, k.Tenant, yesNo(k.Admin), fmtTime(k.CreatedAt), fmtTimePtr(k.LastUsed), fmtTimePtr(k.RevokedAt)}
		},
	})
}

func (a *app) newKeysRevokeCmd() *cobra.Command {
	return a.newEachIDCmd("revoke KEY...", "Revoke API keys", "Revoked", "revoking", "key", (*client.Client).RevokeKey)
}

func (a *app) newTenantsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tenants",
		Aliases: []string{"tenant"},
		Short:   "Create and list tenants",
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			t, err := c.CreateTenant(cmd.Context(), apiv1.TenantCreate{Name: args[0]})
			if err != nil {
				return fmt.Errorf("creating tenant: %w", err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, t)
			}
			fmt.Fprintf(a.stdout, "Created tenant %s (%s)\n", t.ID, orDash(t.Name))
			return nil
		},
	}
	list := newListCmd(a, listCmd[apiv1.TenantList, apiv1.Tenant]{
		use: "list", short: "List tenants", what: "tenants",
		fetch:  (*client.Client).ListTenants,
		items:  func(l *apiv1.TenantList) *[]apiv1.Tenant { return &l.Tenants },
		header: []string{"ID", "NAME", "CREATED"},
		cells:  func(t apiv1.Tenant) []string { return []string{t.ID, t.Name, fmtTime(t.CreatedAt)} },
	})
	cmd.AddCommand(create, list)
	return cmd
}

func (a *app) newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit trail",
	}
	var (
		p   client.Page
		all bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit entries, newest first",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			entries, next, err := collect(cmd.Context(), all, p.Cursor,
				func(ctx context.Context, cursor string) ([]apiv1.AuditEntry, string, error) {
					l, err := c.ListAudit(ctx, client.Page{Limit: p.Limit, Cursor: cursor})
					if err != nil {
						return nil, "", fmt.Errorf("listing the audit trail: %w", err)
					}
					return l.Entries, l.NextCursor, nil
				})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, apiv1.AuditList{Entries: nonNil(entries), NextCursor: next})
			}
			tw := newTable(a.stdout)
			row(tw, "TIME", "TENANT", "ACTOR", "ACTION", "TARGET", "OPERATION", "REQUEST")
			for _, e := range entries {
				row(tw, fmtTime(e.Time), e.Tenant, joinNonEmpty(e.Actor.Kind, e.Actor.ID), e.Action, e.Target, e.OperationID, e.RequestID)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			a.moreHint(next)
			return nil
		},
	}
	fl := list.Flags()
	fl.IntVar(&p.Limit, "limit", 0, "entries per page (server default if 0)")
	fl.StringVar(&p.Cursor, "cursor", "", "start at this page cursor")
	fl.BoolVar(&all, "all", false, "fetch every page")
	cmd.AddCommand(list)
	return cmd
}

// eachID runs do for every id, saying "<done> ID" for each success, and
// returns every failure: a half-done batch must not hide behind its first
// error.
func (a *app) eachID(ids []string, done string, do func(id string) error) error {
	var errs []error
	for _, id := range ids {
		if err := do(id); err != nil {
			errs = append(errs, err)
			continue
		}
		if !a.jsonOutput() {
			fmt.Fprintf(a.stdout, "%s %s\n", done, id)
		}
	}
	return errors.Join(errs...)
}
