package cli

import (
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/server"
)

// newDBCmd builds `fleetpass db`: moving an installation's database.
func (a *app) newDBCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "db", Short: "Move an installation's database"}
	var from, to string
	copyCmd := &cobra.Command{
		Use:   "copy --from DATA_DIR --to URL",
		Short: "Copy a SQLite installation into an empty PostgreSQL database (server stopped)",
		Long: `Copy the SQLite installation of a data directory into an empty PostgreSQL
database: every tenant, API key, console user, instance, host, operation,
item, idempotency key, task number and audit line, in one transaction.
Unfinished items get fresh jobs, so they resume when a server starts on the
database. The event log is not copied. The data directory is locked during
the copy: stop its server first. Then start the server with --database-url
and the same sealing key (the data directory's secret.key, or
--secret-key-file). See docs/postgresql.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				to = a.getenv("FLEETPASS_DATABASE_URL")
			}
			if from == "" || to == "" {
				return usageErrorf("db copy needs --from DATA_DIR and --to URL (or FLEETPASS_DATABASE_URL)")
			}
			res, err := server.CopyDatabase(cmd.Context(), from, to)
			if err != nil {
				return err
			}
			for _, t := range slices.Sorted(maps.Keys(res.Rows)) {
				fmt.Fprintf(a.stdout, "%-26s %d\n", t, res.Rows[t])
			}
			fmt.Fprintf(a.stdout, "copied; %d unfinished item(s) will resume when a server starts on the database\n", res.Resumed)
			return nil
		},
	}
	f := copyCmd.Flags()
	f.StringVar(&from, "from", "", "data directory of the SQLite installation")
	// No env default shown: --help prints defaults, and a URL may carry a password.
	f.StringVar(&to, "to", "", "PostgreSQL URL of the empty target database (or FLEETPASS_DATABASE_URL)")
	cmd.AddCommand(copyCmd)
	return cmd
}
