package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

func (a *app) newHostsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "hosts",
		Aliases: []string{"host"},
		Short:   "Add, list and remove libvirt hosts",
		Long: `A host is a libvirt connection whose domains become instances. fleetpass keeps
the connection open (reconnecting with backoff), follows libvirt's lifecycle
events, and resyncs the whole host periodically.`,
	}
	cmd.AddCommand(a.newHostsAddCmd(), a.newHostsListCmd(), a.newHostsRemoveCmd())
	return cmd
}

func (a *app) newHostsAddCmd() *cobra.Command {
	var in apiv1.HostCreate
	cmd := &cobra.Command{
		Use:   "add URI [--name NAME] [--tenant TENANT] [--max-concurrency N] [--default-os linux|windows]",
		Short: "Add a libvirt host by URI",
		Long: `Add a libvirt host by its connection URI (admin keys only):

  qemu:///system                       libvirtd on the server's own machine
  qemu+ssh://root@kvm1/system?keyfile=/etc/fleetpass/id_ed25519&known_hosts=/etc/fleetpass/known_hosts
  qemu+tls://kvm2/system?pkipath=/etc/fleetpass/pki

The URI must not hold a password. See docs/libvirt.md.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.URI = args[0]
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			h, err := c.AddHost(cmd.Context(), in)
			if err != nil {
				return fmt.Errorf("adding host: %w", err)
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout, h)
			}
			fmt.Fprintf(a.stdout, "Added host %s (%s): %s\n", h.ID, orDash(h.Name), connState(*h))
			return nil
		},
	}
	cmd.Flags().StringVar(&in.Name, "name", "", "name of the host (default: the URI's host name, or local)")
	cmd.Flags().StringVar(&in.Tenant, "tenant", "", "tenant of the host's instances (default: your own)")
	cmd.Flags().IntVar(&in.MaxConcurrency, "max-concurrency", 0, "items worked at once on this host (default 4)")
	cmd.Flags().StringVar(&in.DefaultOSType, "default-os", "", "OS type of domains whose metadata tells none (default linux)")
	return cmd
}

func connState(h apiv1.Host) string {
	switch {
	case h.Connected:
		return "connected"
	case h.Error != "":
		return "not connected: " + h.Error
	}
	return "connecting"
}

func (a *app) newHostsListCmd() *cobra.Command {
	return newListCmd(a, listCmd[apiv1.HostList, apiv1.Host]{
		use: "list", short: "List hosts and their connection state", what: "hosts",
		fetch:  (*client.Client).ListHosts,
		items:  func(l *apiv1.HostList) *[]apiv1.Host { return &l.Hosts },
		header: []string{"ID", "NAME", "URI", "TENANT", "INSTANCES", "MAX", "STATE"},
		cells: func(h apiv1.Host) []string {
			return []string{h.ID, h.Name, h.URI, h.Tenant, strconv.Itoa(h.Instances), strconv.Itoa(h.MaxConcurrency), connState(h)}
		},
	})
}

func (a *app) newHostsRemoveCmd() *cobra.Command {
	return a.newEachIDCmd("remove HOST...", "Remove hosts and their instances (their operations stay as history)",
		"Removed", "removing", "host", (*client.Client).RemoveHost)
}
