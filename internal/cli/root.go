// Package cli builds fleetpass's command line: `fleetpass serve` runs the
// server, and every other command is a client of the native API (/v1)
// through package client.
//
// Everything a command needs (standard streams, environment, flags) hangs
// off one app value created by NewRoot, so that tests can build as many
// independent command trees as they like.
package cli

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
)

// Defaults of the client configuration.
const (
	defaultServer          = "http://127.0.0.1:8080"
	defaultCredentialsFile = "fleetpass-data/admin-credentials"
)

// Environment variables read by the client commands.
const (
	envServer      = "FLEETPASS_SERVER"
	envKeyID       = "FLEETPASS_KEY_ID"
	envKeySecret   = "FLEETPASS_KEY_SECRET"
	envCredentials = "FLEETPASS_CREDENTIALS"
	envFingerprint = "FLEETPASS_TLS_FINGERPRINT"
	envCACert      = "FLEETPASS_CA_CERT"
)

const exitCodesHelp = `Exit status:
  0  success
  1  usage error, or an error from the server
  2  with --wait: the operation finished and at least one item failed`

// app holds what the commands of one tree share.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	// Global flags.
	server      string
	credentials string
	fingerprint string
	caCert      string
	output      string

	client *client.Client
}

// NewRoot builds the fleetpass command tree on the given standard streams.
// Run it with Execute.
func NewRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	return newRoot(stdin, stdout, stderr, os.Getenv)
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *cobra.Command {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := &cobra.Command{
		Use:   "fleetpass",
		Short: "Reset the login passwords of a fleet of machines",
		Long: `fleetpass resets the login passwords of machines (KVM/QEMU virtual machines and
bare-metal servers, Linux and Windows) through a fleetpass server.

The client commands find the server and their API key as follows:
  server URL:   --server, else $` + envServer + `, else the credentials file's
                "server", else ` + defaultServer + `
  API key:      --credentials FILE, else $` + envKeyID + ` and $` + envKeySecret + `,
                else $` + envCredentials + `, else ./` + defaultCredentialsFile + `
                (a JSON file {"keyId": ..., "secret": ..., "server": ...}, as
                written by 'fleetpass serve' in its data directory)
  self-signed TLS: --tls-fingerprint or $` + envFingerprint + ` (SHA-256 of the
                server certificate), or --ca-cert or $` + envCACert + `

Passwords are never taken from command-line flags.

` + exitCodesHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch a.output {
			case "table", "json":
				return nil
			}
			return usageErrorf("--output must be table or json, not %q", a.output)
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", "", "server URL (default $"+envServer+" or "+defaultServer+")")
	pf.StringVar(&a.credentials, "credentials", "", "JSON file holding keyId, secret and server")
	pf.StringVar(&a.fingerprint, "tls-fingerprint", "", "SHA-256 fingerprint of the server's (self-signed) certificate")
	pf.StringVar(&a.caCert, "ca-cert", "", "PEM file of the CA that signed the server's certificate")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json (the API's JSON)")

	root.AddCommand(
		newServeCmd(),
		a.newInstancesCmd(),
		a.newResetPasswordCmd(),
		a.newOperationsCmd(),
		a.newPowerCmd("start"),
		a.newPowerCmd("stop"),
		a.newPowerCmd("reboot"),
		a.newKeysCmd(),
		a.newTenantsCmd(),
		a.newAuditCmd(),
		a.newAgentsCmd(),
		a.newHostsCmd(),
		a.newReplicasCmd(),
		a.newDBCmd(),
		a.newVersionCmd(),
	)
	return root
}

// Execute runs root with ctx, prints any error to root's stderr, and
// returns the process exit status.
func Execute(ctx context.Context, root *cobra.Command) int {
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	printError(root.ErrOrStderr(), cmd, err)
	return exitCode(err)
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return 1
	}
	return 0
}

func printError(w io.Writer, cmd *cobra.Command, err error) {
	msg := err.Error()
	var ae *client.APIError
	details := map[string]any{}
	if errors.As(err, &ae) {
		for k, v := range ae.Details {
			details[k] = v
		}
		// The server's messages name its API's fields; here the flags
		// that set them are what the reader can act on.
		if field, ok := details[apiv1.DetailField].(string); ok {
			msg = nameFlag(msg, field)
			delete(details, apiv1.DetailField)
		}
	}
	fmt.Fprintf(w, "fleetpass: %s\n", ctlchar.Escape(msg))
	if len(details) > 0 {
		if d, jerr := json.Marshal(details); jerr == nil {
			fmt.Fprintf(w, "  details: %s\n", d)
		}
	}
	if hint := tlsHint(err); hint != "" {
		fmt.Fprintln(w, hint)
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
}

// cobra's own argument checks return plain errors; these mark theirs as
// usage errors.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErrorf("%s needs at least %d argument(s)", cmd.CommandPath(), n)
		}
		return nil
	}
}

func (a *app) jsonOutput() bool { return a.output == "json" }

// credentialsFile is the JSON file the server writes for its first admin key.
type credentialsFile struct {
	KeyID          string `json:"keyId"`
	Secret         string `json:"secret"`
	Server         string `json:"server,omitempty"`
	TLSFingerprint string `json:"tlsFingerprint,omitempty"`
}

// clientConfig is where and as whom the client commands connect.
type clientConfig struct {
	server, keyID, secret, fingerprint, caCert string
}

func (a *app) resolveConfig() (clientConfig, error) {
	var cfg clientConfig
	var file *credentialsFile
	var err error
	envID, envSecret := a.getenv(envKeyID), a.getenv(envKeySecret)
	switch {
	case a.credentials != "":
		file, err = readCredentials(a.credentials)
	case envID != "" || envSecret != "":
		if envID == "" || envSecret == "" {
			return cfg, fmt.Errorf("set both %s and %s, or neither", envKeyID, envKeySecret)
		}
		cfg.keyID, cfg.secret = envID, envSecret
	case a.getenv(envCredentials) != "":
		file, err = readCredentials(a.getenv(envCredentials))
	default:
		if _, statErr := os.Stat(defaultCredentialsFile); statErr == nil {
			file, err = readCredentials(defaultCredentialsFile)
		} else {
			return cfg, fmt.Errorf("no API key: set %s and %s, or use --credentials FILE", envKeyID, envKeySecret)
		}
	}
	if err != nil {
		return cfg, err
	}
	if file != nil {
		cfg.keyID, cfg.secret = file.KeyID, file.Secret
	}
	cfg.server = firstNonEmpty(a.server, a.getenv(envServer), fileField(file, func(f *credentialsFile) string { return f.Server }), defaultServer)
	cfg.fingerprint = firstNonEmpty(a.fingerprint, a.getenv(envFingerprint), fileField(file, func(f *credentialsFile) string { return f.TLSFingerprint }))
	cfg.caCert = firstNonEmpty(a.caCert, a.getenv(envCACert))
	return cfg, nil
}

func fileField(f *credentialsFile, get func(*credentialsFile) string) string {
	if f == nil {
		return ""
	}
	return get(f)
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func readCredentials(path string) (*credentialsFile, error) {
	data, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	var f credentialsFile
	if err := json.Unmarshal(data, &f); err != nil {
		// The decoder's message may quote the file; it holds a secret.
		return nil, fmt.Errorf("credentials file %s is not valid JSON", path)
	}
	if f.KeyID == "" || f.Secret == "" {
		return nil, fmt.Errorf("credentials file %s lacks keyId or secret", path)
	}
	return &f, nil
}

// apiClient returns the client of the configured server, building it once.
func (a *app) apiClient() (*client.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	cfg, err := a.resolveConfig()
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithUserAgent("fleetpass-cli/" + buildVersion())}
	if cfg.fingerprint != "" {
		opts = append(opts, client.WithPinnedCertificate(cfg.fingerprint))
	}
	if cfg.caCert != "" {
		pem, err := os.ReadFile(cfg.caCert)
		if err != nil {
			return nil, fmt.Errorf("reading the CA certificate: %w", err)
		}
		opts = append(opts, client.WithRootCAs(pem))
	}
	c, err := client.New(cfg.server, cfg.keyID, cfg.secret, opts...)
	if err != nil {
		return nil, err
	}
	if u, perr := url.Parse(cfg.server); perr == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(a.stderr, "fleetpass: warning: %s is plain HTTP; the API key and passwords cross the network unencrypted\n", cfg.server)
	}
	a.client = c
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// flagOf is the CLI's flag (or argument) for each API field it sets whose
// name differs; a field named alike by several commands' flags of other
// names (such as "name") is left as it is.
var flagOf = map[string]string{
	"forceStop":       "--force-stop",
	"stopMode":        "--mode",
	"instanceIds":     "instances",
	"mode":            "--mode",
	"user":            "--user",
	"method":          "--method",
	"ttl":             "--ttl",
	"instanceName":    "--name",
	"osType":          "--os",
	"adminUser":       "--admin-user",
	"maxConcurrency":  "--max-concurrency",
	"defaultOsType":   "--default-os",
	"bmc":             "--ipmi",
	"power.address":   "--ipmi",
	"bmc.user":        "--ipmi-user",
	"bmc.password":    "--ipmi-password-stdin",
	"bmc.cipherSuite": "--ipmi-cipher-suite",
}

// nameFlag names, in a server message about field, the flag that sets the
// field instead. The server names the field in one of two places
// (apiv1.DetailField): as the message's prefix, after the error code
// ("CODE: field: ..."), or in parentheses.
func nameFlag(msg, field string) string {
	flag, ok := flagOf[field]
	if !ok {
		return msg
	}
	if m, ok := strings.CutPrefix(msg, field+": "); ok {
		return flag + ": " + m
	}
	if i := strings.Index(msg, ": "+field+": "); i >= 0 {
		return msg[:i] + ": " + flag + ": " + msg[i+len(field)+4:]
	}
	return strings.Replace(msg, "("+field+")", "("+flag+")", 1)
}

// tlsHint suggests pinning the certificate when the server's certificate
// is refused for its name or its signer, as a self-signed one is; the
// fingerprint shown is of the certificate received, to compare with the
// one the server printed at start before trusting it.
func tlsHint(err error) string {
	var cert *x509.Certificate
	var he x509.HostnameError
	var ue x509.UnknownAuthorityError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &he):
		cert = he.Certificate
	case errors.As(err, &ue):
		cert = ue.Cert
	case errors.As(err, &ve) && len(ve.UnverifiedCertificates) > 0:
		cert = ve.UnverifiedCertificates[0]
	}
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.Raw)
	return "  hint: the server's certificate was not accepted (" + certProblem(err) + "). If it is the server's self-signed\n" +
		"  certificate, check that its fingerprint is the one `fleetpass serve` printed, then pin it:\n" +
		"    --tls-fingerprint " + hex.EncodeToString(sum[:]) + "\n" +
		"  (or FLEETPASS_TLS_FINGERPRINT), or trust its signer with --ca-cert."
}

func certProblem(err error) string {
	var he x509.HostnameError
	if errors.As(err, &he) {
		return "it does not name " + he.Host
	}
	return "it is not signed by a trusted authority"
}
