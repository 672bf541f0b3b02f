package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// bmcFlags are the BMC settings of `instances add` and `instances set-bmc`.
type bmcFlags struct {
	address       string
	user          string
	passwordStdin bool
	cipherSuite   int
}

func (f *bmcFlags) register(cmd *cobra.Command, required bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.address, "ipmi", "", "the server's BMC, HOST or HOST:PORT (IPMI over LAN, default port 623)")
	fl.StringVar(&f.user, "ipmi-user", "", "the BMC user fleetpass logs in as (operator privilege is enough)")
	fl.BoolVar(&f.passwordStdin, "ipmi-password-stdin", false, "read the BMC password from the first line of standard input (never a flag)")
	fl.IntVar(&f.cipherSuite, "ipmi-cipher-suite", 3, "RMCP+ cipher suite: 3, or 17 where the BMC has it (0 is refused)")
	if required {
		_ = cmd.MarkFlagRequired("ipmi")
		_ = cmd.MarkFlagRequired("ipmi-user")
		_ = cmd.MarkFlagRequired("ipmi-password-stdin")
	}
}

// readBMCPassword reads the BMC password from standard input, hidden when
// it is a terminal. The caller clears it.
func (a *app) readBMCPassword(ctx context.Context) ([]byte, error) {
	if fd, isTerm := terminalFd(a.stdin); isTerm {
		return readHidden(ctx, fd, a.stderr, "BMC password: ")
	}
	return readPasswordLine(a.stdin)
}

func (a *app) newInstancesAddCmd() *cobra.Command {
	var (
		f                         bmcFlags
		osType, tenant, adminUser string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --os linux|windows --ipmi HOST[:PORT] --ipmi-user USER --ipmi-password-stdin",
		Short: "Register a bare-metal server with its BMC (admin keys)",
		Long: `Register a bare-metal server, powered through its BMC over IPMI 2.0
(lanplus). The BMC is asked before anything is stored: a wrong address,
user, password or cipher suite is refused at once. The BMC password is read
from standard input and stored sealed; it is never shown again.

The server's fleetpass agent joins the instance when it enrols with a token
bound to NAME:

  fleetpass agents token create --name NAME`,
		Example: `  printf '%s\n' "$BMC_PASSWORD" | fleetpass instances add db-7 --os linux \
      --ipmi 10.0.0.21 --ipmi-user fleetpass --ipmi-password-stdin`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if osType != "linux" && osType != "windows" {
				return usageErrorf("--os must be linux or windows")
			}
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			pw, err := a.readBMCPassword(cmd.Context())
			if err != nil {
				return err
			}
			req := apiv1.InstanceCreate{Name: args[0], Tenant: tenant, OSType: osType, AdminUser: adminUser,
				Power: apiv1.DriverLink{Driver: "ipmi", Address: f.address},
				BMC:   &apiv1.BMCCredentials{User: f.user, Password: string(pw), CipherSuite: &f.cipherSuite}}
			clear(pw)
			in, err := c.CreateInstance(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("registering %s: %w", args[0], err)
			}
			return a.printBareMetal(in)
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&osType, "os", "", "the server's operating system: linux or windows")
	fl.StringVar(&tenant, "tenant", "", "the tenant the server belongs to (default: the key's own)")
	fl.StringVar(&adminUser, "admin-user", "", "the user a reset changes by default (default root or Administrator)")
	_ = cmd.MarkFlagRequired("os")
	return cmd
}

func (a *app) newInstancesSetBMCCmd() *cobra.Command {
	var f bmcFlags
	cmd := &cobra.Command{
		Use:   "set-bmc INSTANCE [--ipmi HOST[:PORT]] [--ipmi-user USER] [--ipmi-password-stdin] [--ipmi-cipher-suite N]",
		Short: "Change a bare-metal server's BMC settings (admin keys)",
		Long: `Change what fleetpass uses to reach a server's BMC: rotate its password
(after changing it on the BMC), or change the user, cipher suite or address.
The new settings are checked against the BMC first; if it refuses them,
nothing changes.`,
		Example: `  printf '%s\n' "$NEW_BMC_PASSWORD" | fleetpass instances set-bmc ins-1a2b3c4d --ipmi-password-stdin`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			suiteSet := cmd.Flags().Changed("ipmi-cipher-suite")
			if f.address == "" && f.user == "" && !f.passwordStdin && !suiteSet {
				return usageErrorf("nothing to change: give --ipmi, --ipmi-user, --ipmi-password-stdin or --ipmi-cipher-suite")
			}
			c, err := a.apiClient()
			if err != nil {
				return err
			}
			req := apiv1.BMCUpdate{Address: f.address, User: f.user}
			if suiteSet {
				req.CipherSuite = &f.cipherSuite
			}
			if f.passwordStdin {
				pw, err := a.readBMCPassword(cmd.Context())
				if err != nil {
					return err
				}
				req.Password = string(pw)
				clear(pw)
			}
			in, err := c.SetBMC(cmd.Context(), args[0], req)
			if err != nil {
				return fmt.Errorf("changing the BMC settings of %s: %w", args[0], err)
			}
			return a.printBareMetal(in)
		},
	}
	f.register(cmd, false)
	return cmd
}

func (a *app) printBareMetal(in *apiv1.Instance) error {
	if a.jsonOutput() {
		return writeJSON(a.stdout, in)
	}
	fmt.Fprintf(a.stdout, "%s\t%s\t%s\n", in.ID, in.Name, in.State)
	if in.BMC != nil && in.BMC.AcceptsCipherSuite0 {
		fmt.Fprintf(a.stderr, "warning: the BMC at %s accepts cipher suite 0, which checks no password: anyone who knows a user name can power this server. Disable suite 0 on the BMC.\n",
			in.BMC.Address)
	}
	return nil
}
