package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

func (a *app) newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "Enrol fleetpass agents",
	}
	token := &cobra.Command{Use: "token", Short: "Enrolment tokens of the fleetpass agent"}
	token.AddCommand(a.newAgentTokenCreateCmd(), a.newAgentTokenListCmd(), a.newAgentTokenRevokeCmd())
	cmd.AddCommand(token)
	return cmd
}

func (a *app) newAgentTokenCreateCmd() *cobra.Command {
	var (
		in  apiv1.AgentTokenCreate
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create [--tenant TENANT] [--name INSTANCE] [--ttl 1h]",
		Short: "Create a one-time enrolment token; it is printed once",
		Long: `Create a one-time enrolment token for the fleetpass agent. It is valid once,
until it expires, and binds the enrolled machine to a tenant and, with --name,
to an instance name (else the machine's host name is used). On the machine:

  fleetpass-agent enroll --server URL --token-file - [--tls-fingerprint FP] <<<TOKEN`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return usageErrorf("--ttl must be positive")
			}
			if ttl > 0 {
				in.TTL = ttl.String()
			}
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			tok, err := c.CreateAgentToken(cmd.Context(), in)
			if err != nil {
				return fmt.Errorf("creating agent token: %w", err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, tok)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "Token:\t%s\n", tok.Token)
			fmt.Fprintf(tw, "Tenant:\t%s\n", tok.Tenant)
			fmt.Fprintf(tw, "Instance name:\t%s\n", orDash(tok.InstanceName))
			fmt.Fprintf(tw, "Expires:\t%s\n", tok.ExpiresAt.Local().Format(time.RFC3339))
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "The token is shown only now and works once.")
			return nil
		},
	}
	cmd.Flags().StringVar(&in.Tenant, "tenant", "", "tenant of the enrolled instance (default: your own)")
	cmd.Flags().StringVar(&in.InstanceName, "name", "", "instance name to give the enrolled machine (default: its host name)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token can be used")
	return cmd
}

func (a *app) newAgentTokenListCmd() *cobra.Command {
	return newListCmd(a, listCmd[apiv1.AgentTokenList, apiv1.AgentToken]{
		use: "list", short: "List enrolment tokens (never the tokens themselves)", what: "agent tokens",
		fetch:  (*client.Client).ListAgentTokens,
		items:  func(l *apiv1.AgentTokenList) *[]apiv1.AgentToken { return &l.Tokens },
		header: []string{"ID", "TENANT", "INSTANCE NAME", "STATE", "CREATED BY", "CREATED", "EXPIRES", "AGENT"},
		cells: func(t apiv1.AgentToken) []string {
			return []string{t.ID, t.Tenant, orDash(t.InstanceName), t.State, t.CreatedBy, fmtTime(t.CreatedAt), fmtTime(t.ExpiresAt), orDash(t.AgentID)}
		},
	})
}

func (a *app) newAgentTokenRevokeCmd() *cobra.Command {
	return a.newEachIDCmd("revoke TOKEN-ID...", "Revoke unused enrolment tokens: no agent can enrol with them any more",
		"Revoked", "revoking", "agent token", (*client.Client).RevokeAgentToken)
}
