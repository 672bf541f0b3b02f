package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
)

func (a *app) newInstancesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "instances",
		Aliases: []string{"instance", "ins"},
		Short:   "List, show and register instances",
	}
	cmd.AddCommand(a.newInstancesListCmd(), a.newInstancesShowCmd(), a.newInstancesAddCmd(), a.newInstancesSetBMCCmd())
	return cmd
}

func (a *app) newInstancesListCmd() *cobra.Command {
	var (
		f   client.InstanceFilter
		all bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List instances",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			f.State = strings.ToUpper(f.State)
			items, next, err := collect(cmd.Context(), all, f.Cursor,
				func(ctx context.Context, cursor string) ([]apiv1.Instance, string, error) {
					f.Cursor = cursor
					l, err := c.ListInstances(ctx, f)
					if err != nil {
						return nil, "", fmt.Errorf("listing instances: %w", err)
					}
					return l.Instances, l.NextCursor, nil
				})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, apiv1.InstanceList{Instances: nonNil(items), NextCursor: next})
			}
			tw := newTable(a.stdout)
			row(tw, "ID", "NAME", "TENANT", "OS", "STATE", "GUEST", "LATEST OPERATION")
			for _, in := range items {
				row(tw, in.ID, in.Name, in.Tenant, in.OSType, in.State, guestStatus(in), latestOp(in))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			a.moreHint(next)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.State, "state", "", "only instances in this state (RUNNING, STOPPED, ...)")
	fl.StringVar(&f.OS, "os", "", "only this OS type (linux or windows)")
	fl.StringVar(&f.NamePrefix, "name-prefix", "", "only instances whose name starts with this")
	fl.StringVar(&f.Tenant, "tenant", "", "only this tenant's instances (admin keys)")
	fl.IntVar(&f.Limit, "limit", 0, "instances per page (server default if 0)")
	fl.StringVar(&f.Cursor, "cursor", "", "start at this page cursor")
	fl.BoolVar(&all, "all", false, "fetch every page")
	return cmd
}

func guestStatus(in apiv1.Instance) string {
	if in.Guest.Driver == "" {
		return ""
	}
	if in.GuestAlive {
		return in.Guest.Driver + " (alive)"
	}
	return in.Guest.Driver + " (down)"
}

func latestOp(in apiv1.Instance) string {
	if in.LatestOperation == nil {
		return ""
	}
	return in.LatestOperation.Kind + " " + in.LatestOperation.State
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *app) newInstancesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show INSTANCE",
		Short: "Show one instance",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			in, err := c.GetInstance(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("getting instance %s: %w", args[0], err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, in)
			}
			tw := newTable(a.stdout)
			field := func(k, v string) {
				if v == "" {
					v = "-"
				}
				fmt.Fprintf(tw, "%s:\t%s\n", k, ctlchar.Escape(v))
			}
			field("ID", in.ID)
			field("Name", in.Name)
			field("Tenant", in.Tenant)
			field("OS", in.OSType)
			field("Admin user", in.AdminUser)
			field("State", in.State)
			field("Busy", yesNo(in.Busy))
			field("Power", joinNonEmpty(in.Power.Driver, in.Power.Host, in.Power.Address))
			field("Guest", joinNonEmpty(in.Guest.Driver, in.Guest.Host, in.Guest.Address))
			field("Guest alive", yesNo(in.GuestAlive))
			field("Guest seen", fmtTimePtr(in.GuestSeenAt))
			field("Reset methods", strings.Join(in.ResetMethods, ", "))
			if b := in.BMC; b != nil {
				field("BMC", fmt.Sprintf("%s user %s, cipher suite %d", b.Address, b.User, b.CipherSuite))
				if b.AcceptsCipherSuite0 {
					field("BMC warning", "accepts cipher suite 0 (no password check): disable it on the BMC")
				}
				field("BMC error", b.Error)
			}
			if in.LatestOperation != nil {
				field("Latest operation", in.LatestOperation.ID+" "+latestOp(*in))
			}
			field("Created", fmtTime(in.CreatedAt))
			field("Updated", fmtTime(in.UpdatedAt))
			return tw.Flush()
		},
	}
}
