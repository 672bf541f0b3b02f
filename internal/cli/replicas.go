package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
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
	return newListCmd(a, listCmd[apiv1.ReplicaList, apiv1.Replica]{
		use: "list", short: "List the replicas, alive and dead", what: "replicas",
		fetch:  (*client.Client).ListReplicas,
		items:  func(l *apiv1.ReplicaList) *[]apiv1.Replica { return &l.Replicas },
		header: []string{"ID", "ADDRESS", "VERSION", "STATE", "LAST HEARTBEAT", "OWNS"},
		cells: func(r apiv1.Replica) []string {
			id := r.ID
			if r.Self {
				id += " (this)"
			}
			return []string{id, orDash(r.Address), orDash(r.Version), replicaState(r),
				r.LastHeartbeat.UTC().Format(time.RFC3339), orDash(strings.Join(r.Owns, ","))}
		},
	})
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
	return a.newEachIDCmd("forget REPLICA...", "Forget dead replicas (a live one is refused)",
		"Forgot", "forgetting", "replica", (*client.Client).ForgetReplica)
}
