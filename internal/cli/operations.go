package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

func (a *app) newOperationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "operations",
		Aliases: []string{"operation", "ops", "op"},
		Short:   "List, show and wait for operations",
	}
	cmd.AddCommand(a.newOperationsListCmd(), a.newOperationsShowCmd(), a.newOperationsWaitCmd())
	return cmd
}

func (a *app) newOperationsListCmd() *cobra.Command {
	var (
		f   client.OperationFilter
		all bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List operations, newest first",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			ops, next, err := collect(cmd.Context(), all, f.Cursor,
				func(ctx context.Context, cursor string) ([]apiv1.Operation, string, error) {
					f.Cursor = cursor
					l, err := c.ListOperations(ctx, f)
					if err != nil {
						return nil, "", fmt.Errorf("listing operations: %w", err)
					}
					return l.Operations, l.NextCursor, nil
				})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, apiv1.OperationList{Operations: nonNil(ops), NextCursor: next})
			}
			tw := newTable(a.stdout)
			row(tw, "ID", "KIND", "STATUS", "ITEMS", "SUCCEEDED", "FAILED", "CREATED", "BY")
			for _, op := range ops {
				row(tw, op.ID, op.Kind, op.Status, fmt.Sprint(op.Summary.Total), fmt.Sprint(op.Summary.Succeeded),
					fmt.Sprint(op.Summary.Failed), fmtTime(op.CreatedAt), op.RequestedBy.ID)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			a.moreHint(next)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.InstanceID, "instance", "", "only operations on this instance")
	fl.StringVar(&f.Status, "status", "", "only operations with this status (running, succeeded, failed, partial)")
	fl.IntVar(&f.Limit, "limit", 0, "operations per page (server default if 0)")
	fl.StringVar(&f.Cursor, "cursor", "", "start at this page cursor")
	fl.BoolVar(&all, "all", false, "fetch every page")
	return cmd
}

func (a *app) newOperationsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show OPERATION",
		Short: "Show an operation and its items",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			op, err := c.GetOperation(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("getting operation %s: %w", args[0], err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, op)
			}
			return a.printOperation(op)
		},
	}
}

func (a *app) printOperation(op *apiv1.Operation) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "ID:\t%s\n", op.ID)
	fmt.Fprintf(tw, "Kind:\t%s\n", op.Kind)
	fmt.Fprintf(tw, "Status:\t%s\n", op.Status)
	fmt.Fprintf(tw, "Tenant:\t%s\n", orDash(op.Tenant))
	by := op.RequestedBy
	name := ""
	if by.Name != "" && by.Name != by.ID {
		name = "(" + by.Name + ")"
	}
	fmt.Fprintf(tw, "Requested by:\t%s\n", orDash(joinNonEmpty(by.Kind, by.ID, name, by.Address)))
	fmt.Fprintf(tw, "Created:\t%s\n", orDash(fmtTime(op.CreatedAt)))
	fmt.Fprintf(tw, "Finished:\t%s\n", orDash(fmtTimePtr(op.FinishedAt)))
	s := op.Summary
	fmt.Fprintf(tw, "Items:\t%d (%d queued, %d running, %d succeeded, %d failed)\n", s.Total, s.Pending, s.Running, s.Succeeded, s.Failed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(op.Items) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = newTable(a.stdout)
	row(tw, "INSTANCE", "NAME", "STATE", "STEP", "MODE", "USER", "ERROR")
	for i := range op.Items {
		it := &op.Items[i]
		errText := ""
		if it.State == apiv1.ItemFailed {
			errText = itemError(it)
		}
		row(tw, it.InstanceID, it.InstanceName, it.State, stepLabel(it.Step), it.Mode, it.User, errText)
	}
	return tw.Flush()
}

func (a *app) newOperationsWaitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait OPERATION",
		Short: "Wait for an operation to finish, showing its progress",
		Long:  "Wait for an operation to finish, showing each instance's progress.\n\n" + exitCodesHelp,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			op, err := c.GetOperation(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("getting operation %s: %w", args[0], err)
			}
			done, err := a.follow(cmd.Context(), c, op)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				if err := writeJSON(a.stdout, done); err != nil {
					return err
				}
			}
			return waitResult(done)
		},
	}
}
