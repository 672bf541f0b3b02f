package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

func (a *app) newReplicasCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "replicas",
		Aliases: []string{"replica"},
		Short:   "List the fleetpass servers sharing the database, and forget dead ones",
		Long: `Every fleetpass server on one database is a replica: it renews a heartbeat
every 2 seconds and counts as dead 10 seconds after its last one (at once
after a graceful stop), when the others take over its work. A dead replica
stays listed until it is forgotten, or a day after its last heartbeat.
Admin keys only. See docs/ha.md.`,
	}
	cmd.AddCommand(a.newReplicasListCmd(), a.newReplicasForgetCmd())
	return cmd
}

func (a *app) newReplicasListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the replicas, alive and dead",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			l, err := c.ListReplicas(cmd.Context())
			if err != nil {
				return fmt.Errorf("listing replicas: %w", err)
			}
			if a.jsonOutput() {
				l.Replicas = nonNil(l.Replicas)
				for i := range l.Replicas {
					l.Replicas[i].Owns = nonNil(l.Replicas[i].Owns)
				}
				return writeJSON(a.stdout, l)
			}
			tw := newTable(a.stdout)
			row(tw, "ID", "ADDRESS", "VERSION", "STATE", "LAST HEARTBEAT", "OWNS")
			for _, r := range l.Replicas {
				id := r.ID
				if r.Self {
					id += " (this)"
				}
				row(tw, id, orDash(r.Address), orDash(r.Version), replicaState(r),
					r.LastHeartbeat.UTC().Format(time.RFC3339), orDash(strings.Join(r.Owns, ",")))
			}
			return tw.Flush()
		},
	}
}

func replicaState(r apiv1.Replica) string {
	switch {
	case r.Alive:
		return "alive"
	case r.StoppedAt != nil:
		return "stopped"
	}
	return "dead"
}

func (a *app) newReplicasForgetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "forget REPLICA...",
		Short: "Forget dead replicas (a live one is refused)",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			return a.eachID(args, "Forgot", func(id string) error {
				if err := c.ForgetReplica(cmd.Context(), id); err != nil {
					return fmt.Errorf("forgetting replica %s: %w", id, err)
				}
				return nil
			})
		},
	}
}
