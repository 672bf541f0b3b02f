// Package agentcmd is the command line of fleetpass-agent: enroll, run and
// version. It lives apart from cmd/ so tests can run it in process.
package agentcmd

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
)

// DefaultStatePath is where enrolment writes the agent's identity.
func DefaultStatePath() string {
	if runtime.GOOS == "windows" {
		return `C:\ProgramData\fleetpass-agent\state.json`
	}
	return "/var/lib/fleetpass-agent/state.json"
}

const usage = `fleetpass-agent: the fleetpass agent.

Usage:
  fleetpass-agent enroll --server URL (--token TOKEN | --token-file FILE|-) [--tls-fingerprint FP] [--state FILE]
  fleetpass-agent run [--state FILE] [--log-level debug|info|warn|error]
  fleetpass-agent version

Create a token on the server with: fleetpass agents token create [--tenant T] [--name INSTANCE]
The server's TLS certificate is pinned at enrolment with --tls-fingerprint (as
'fleetpass serve' prints it); plain http is accepted only on loopback.
`

// Main runs the command line and returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "enroll":
		err = enroll(ctx, args[1:], stdin, stdout, stderr)
	case "run":
		err = run(ctx, args[1:], stderr)
	case "version":
		fmt.Fprintln(stdout, "fleetpass-agent", agent.Version, runtime.GOOS+"/"+runtime.GOARCH)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "fleetpass-agent: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "fleetpass-agent: %v\n", err)
		return 1
	}
	return 0
}

func enroll(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o agent.EnrollOptions
	var tokenFile, statePath string
	var force bool
	fs.StringVar(&o.Server, "server", "", "server URL, e.g. https://fleetpass.example:8443")
	fs.StringVar(&o.Token, "token", "", "one-time enrolment token (prefer --token-file: arguments are visible to every process)")
	fs.StringVar(&tokenFile, "token-file", "", "read the token from FILE, or from standard input with -")
	fs.StringVar(&o.Fingerprint, "tls-fingerprint", "", "SHA-256 fingerprint of the server's TLS certificate, pinned from now on")
	fs.StringVar(&o.Hostname, "hostname", "", "host name to report (default: this machine's)")
	fs.StringVar(&statePath, "state", DefaultStatePath(), "where to write the agent's identity and keys")
	fs.BoolVar(&force, "force", false, "enrol again over an existing identity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Token == "" {
		o.Token = os.Getenv("FLEETPASS_AGENT_TOKEN")
	}
	if tokenFile != "" {
		var r io.Reader = stdin
		if tokenFile != "-" {
			f, err := os.Open(tokenFile)
			if err != nil {
				return fmt.Errorf("token file: %w", err)
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the token: %w", err)
		}
		o.Token = strings.TrimSpace(line)
	}
	if o.Server == "" || o.Token == "" {
		return errors.New("enroll needs --server and a token (--token, --token-file or $FLEETPASS_AGENT_TOKEN)")
	}
	if _, err := os.Stat(statePath); err == nil && !force {
		return fmt.Errorf("%s exists: this agent is enrolled already (use --force to enrol again)", statePath)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := agent.Enroll(ctx, o)
	if err != nil {
		return err
	}
	if err := st.Save(statePath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled: instance %s (tenant %s), agent %s; identity in %s\n", st.InstanceID, st.Tenant, st.AgentID, statePath)
	return nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	statePath := fs.String("state", DefaultStatePath(), "the agent's identity, written by enroll")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	st, err := agent.LoadState(*statePath)
	if err != nil {
		return err
	}
	runAgent := func(ctx context.Context) error { return agent.Run(ctx, st, agent.Options{Log: log}) }
	service, err := agent.IsService()
	if err != nil {
		return err
	}
	if service {
		return agent.RunService(runAgent)
	}
	return runAgent(ctx)
}
