package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// newPowerCmd builds `fleetpass start|stop|reboot`.
func (a *app) newPowerCmd(action string) *cobra.Command {
	var (
		mode string
		wait bool
	)
	short := map[string]string{
		apiv1.ActionStart:  "Start instances",
		apiv1.ActionStop:   "Stop instances",
		apiv1.ActionReboot: "Reboot instances",
	}[action]
	long := short + "."
	if action != apiv1.ActionStart {
		long += `

--mode soft asks the operating system to shut down; hard cuts the power at
once (unsaved data is lost); soft-then-hard (the default) cuts the power
only if a soft shutdown does not finish in time.`
	}
	cmd := &cobra.Command{
		Use:   action + " [flags] INSTANCE...",
		Short: short,
		Long:  long + "\n\nWith --wait the command follows the operation until every instance is done.\n\n" + exitCodesHelp,
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch mode {
			case "", apiv1.StopSoft, apiv1.StopHard, apiv1.StopSoftThenHard:
			default:
				return usageErrorf("--mode must be soft, hard or soft-then-hard, not %q", mode)
			}
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			return a.perTenant(cmd.Context(), c, args, wait, func(ids []string) (*apiv1.Operation, error) {
				op, err := c.PowerAction(cmd.Context(), apiv1.PowerAction{Action: action, InstanceIDs: ids, StopMode: mode})
				if err != nil {
					return nil, fmt.Errorf("%s: %w", action, err)
				}
				return op, nil
			})
		},
	}
	if action != apiv1.ActionStart {
		cmd.Flags().StringVar(&mode, "mode", "", "soft, hard or soft-then-hard (default soft-then-hard)")
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the operation finishes, showing progress")
	return cmd
}
