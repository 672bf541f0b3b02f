package cli

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/demo"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/server"
)

// newServeCmd builds `fleetpass serve`.
func newServeCmd() *cobra.Command {
	cfg := server.Config{Engine: engine.DefaultConfig()}
	var logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the fleetpass server",
		Long: `Run the fleetpass server: the native API (/v1), metrics (/metrics) and health
checks (/healthz, /readyz), on SQLite in the data directory, or on
PostgreSQL 15 or newer with --database-url (see docs/postgresql.md).

The first start creates an admin API key and writes it to
<data-dir>/admin-credentials (mode 0600); set FLEETPASS_ADMIN_KEY_ID and
FLEETPASS_ADMIN_KEY_SECRET at the first start to choose it instead.

--demo adds a tenant "demo" with a simulated fleet (Linux and Windows,
running and stopped, one with a dead guest agent, one whose graceful shutdown
hangs) to try every path of the API and CLI.

Listening on a non-loopback address without --tls-cert/--tls-key makes the
server create a self-signed certificate in the data directory and print its
fingerprint. SIGINT or SIGTERM stops it gracefully; work in flight resumes at
the next start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErrorf("--log-level: %v", err)
			}
			opts := &slog.HandlerOptions{Level: level}
			switch logFormat {
			case "text":
				cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts))
			case "json":
				cfg.Log = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts))
			default:
				return usageErrorf("--log-format must be text or json")
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.Version = buildVersion()
			if cfg.Demo {
				demoTimeouts(&cfg, cmd.Flags().Changed)
			}
			if cfg.DatabaseURL == "" {
				cfg.DatabaseURL = os.Getenv("FLEETPASS_DATABASE_URL")
			}
			if cfg.SecretKeyFile == "" {
				cfg.SecretKeyFile = os.Getenv("FLEETPASS_SECRET_KEY_FILE")
			}
			if cfg.LibvirtTenant == "" && cfg.Demo {
				// So the console's demo user sees the host's VMs beside
				// the simulated fleet.
				cfg.LibvirtTenant = "demo"
			}
			srv, err := server.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			if cfg.Demo {
				fmt.Fprintf(cfg.Out, "demo: tenant %q has simulated instances; try: fleetpass instances list\n", "demo")
			}
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", envOr("FLEETPASS_LISTEN", "127.0.0.1:8080"), "address to listen on")
	f.StringVar(&cfg.DataDir, "data-dir", envOr("FLEETPASS_DATA_DIR", "./fleetpass-data"), "data directory (database, keys, credentials)")
	// No env default here: --help prints defaults, and a URL may carry a password.
	f.StringVar(&cfg.DatabaseURL, "database-url", "",
		"PostgreSQL database, postgres://user@host:port/db (or FLEETPASS_DATABASE_URL); empty: SQLite in the data directory")
	f.StringVar(&cfg.SecretKeyFile, "secret-key-file", "",
		"the sealing key (32 bytes, mode 0600), shared by every server of one database (or FLEETPASS_SECRET_KEY_FILE); empty: <data-dir>/secret.key")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.BoolVar(&cfg.Demo, "demo", false, "seed a simulated demo fleet")
	f.BoolVar(&cfg.Sim, "sim", false, "enable the simulated drivers (load tests) without the demo fleet")
	f.IntVar(&cfg.SimLoad, "sim-instances", 0, "seed this many simulated running instances in tenant \"load\" (load tests)")
	f.DurationVar(&cfg.SimBoot, "sim-boot-time", 3*time.Second, "boot time of the simulated machines the server seeds")
	f.DurationVar(&cfg.SimShutdown, "sim-shutdown-time", 2*time.Second, "graceful shutdown time of the simulated machines the server seeds")
	f.DurationVar(&cfg.SimActionTime, "sim-action-time", 0, "time each simulated power or password call takes, during which a concurrent call on the same machine is counted as an overlap (replica tests)")
	f.DurationVar(&cfg.Engine.ShutdownTimeout, "shutdown-timeout", 60*time.Second, "graceful shutdown time allowed before a forced stop (with consent) or a failure")
	f.DurationVar(&cfg.Engine.BootTimeout, "boot-timeout", 5*time.Minute, "time allowed for an instance to start")
	f.DurationVar(&cfg.Engine.GuestTimeout, "guest-timeout", 5*time.Minute, "time allowed for the guest agent to answer after a boot")
	f.IntVar(&cfg.Engine.MaxWorkers, "max-concurrency", 200, "items worked at once by this server")
	f.IntVar(&cfg.Engine.PerHostLimit, "per-host-concurrency", 100, "items worked at once against one host")
	f.Float64Var(&cfg.API.RateLimit, "rate-limit", 50, "requests per second allowed per API key (0: no limit)")
	f.IntVar(&cfg.API.Burst, "rate-burst", 200, "burst of requests allowed per API key")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", 15*time.Second, "how often idle instances' states are read from their drivers")
	f.DurationVar(&cfg.BMCSyncInterval, "bmc-sync-interval", 5*time.Second, "how often idle bare-metal servers' power states are read from their BMCs")
	f.DurationVar(&cfg.IPMI.Timeout, "ipmi-timeout", time.Second, "how long to wait for a BMC's answer before sending a request again (IPMI over UDP)")
	f.StringArrayVar(&cfg.LibvirtHosts, "libvirt", nil, "libvirt URI to manage, e.g. qemu:///system (repeatable; added as a host unless registered already)")
	f.StringVar(&cfg.DiskHelper, "disk-helper", envOr("FLEETPASS_DISK_HELPER", ""),
		"fleetpass-diskreset helper for disk resets of libvirt VMs (default: beside this executable, then on PATH; \"off\" disables them)")
	f.StringVar(&cfg.LibvirtTenant, "libvirt-tenant", "", "tenant of the hosts --libvirt adds (default: demo with --demo, else admin)")
	f.StringArrayVar(&cfg.QGASocketDirs, "qga-socket-dir", nil,
		"directory whose QEMU guest agent sockets the qga channel may dial (repeatable; none: the qga channel dials nothing)")
	f.IntVar(&cfg.MaxInstancesPerTenant, "max-instances-per-tenant", core.DefaultMaxInstancesPerTenant,
		"most instances one tenant may have (registration, agent enrolment and host inventory stop there)")
	f.StringVar(&cfg.ReplicaID, "replica-id", envOr("FLEETPASS_REPLICA_ID", ""),
		"this server's id among the servers sharing its database (default: random at each start); see docs/ha.md")
	f.StringVar(&cfg.PublicURL, "public-url", envOr("FLEETPASS_PUBLIC_URL", ""),
		"the URL this server is reached at, shown in `fleetpass replicas list` (default: from --listen)")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxies", nil,
		"reverse proxies (CIDR,...) whose X-Forwarded-For gives the client's address; other peers' forwarding headers are ignored")
	agentDefaults := agentserver.DefaultConfig()
	f.DurationVar(&cfg.Agent.Silence, "agent-silence", envDuration("FLEETPASS_AGENT_SILENCE", agentDefaults.Silence),
		"an agent unheard for this long counts as not alive")
	f.DurationVar(&cfg.Agent.PollHold, "agent-poll-hold", envDuration("FLEETPASS_AGENT_POLL_HOLD", agentDefaults.PollHold),
		"how long an agent's poll with nothing to deliver is held open (shorter than --agent-silence)")
	f.DurationVar(&cfg.Agent.Recheck, "agent-recheck", envDuration("FLEETPASS_AGENT_RECHECK", agentDefaults.Recheck),
		"how often waiting agent polls and acknowledgements re-read the database in case a wake-up was lost (a safety net: wake-ups are immediate)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

// envDuration reads a duration from the environment, or def when unset or
// malformed (the flag's own parsing reports a bad value given on the
// command line).
func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// demoTimeouts gives the demo its short timeouts where the flags were not
// set explicitly.
func demoTimeouts(cfg *server.Config, changed func(flag string) bool) {
	for _, t := range []struct {
		flag string
		v    *time.Duration
		demo time.Duration
	}{
		{"guest-timeout", &cfg.Engine.GuestTimeout, demo.GuestTimeout},
		{"shutdown-timeout", &cfg.Engine.ShutdownTimeout, demo.ShutdownTimeout},
		{"boot-timeout", &cfg.Engine.BootTimeout, demo.BootTimeout},
	} {
		if !changed(t.flag) {
			*t.v = t.demo
		}
	}
}
