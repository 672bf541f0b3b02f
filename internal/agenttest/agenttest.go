// Package agenttest holds what the end-to-end suites of the real agent
// (internal/realguest, internal/realbmc) share: the agent built for
// throwaway guests, its enrolment with a one-time token, its runs as a boot
// would start them, waits for instances and operations through the client,
// and the SSH logins that prove a reset.
package agenttest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// State is where a guest's agent keeps its identity: the guest's private
// /etc, which survives its power cycles.
const State = "/etc/fleetpass-agent/state.json"

// Build builds cmd/fleetpass-agent (static) once per test process, where
// the guests' users can run it.
func Build(t testing.TB) string {
	t.Helper()
	bin := testutil.BuildBinary(t, "github.com/fleetpass/fleetpass/cmd/fleetpass-agent", "CGO_ENABLED=0")
	// The build directory is private; the guests' users must reach it.
	for dir := filepath.Dir(bin); dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
		_ = os.Chmod(dir, 0o755)
	}
	return bin
}

var enrolled = regexp.MustCompile(`enrolled: instance (ins-[a-z0-9]+) \(tenant [a-z0-9-]+\), agent (agt-[a-z0-9]+)`)

// Enrol creates a one-time token bound to the instance name (in tenant;
// empty: the caller's) and runs `fleetpass-agent enroll` in g with it on
// standard input, never in arguments. It returns the instance the agent
// joined and the agent's id.
func Enrol(t testing.TB, c *client.Client, g *guesttest.Guest, bin, serverURL, tenant, name string) (instance, agent string) {
	t.Helper()
	tok, err := c.CreateAgentToken(t.Context(), apiv1.AgentTokenCreate{Tenant: tenant, InstanceName: name, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := g.RunInput([]byte(tok.Token+"\n"), bin, "enroll", "--server", serverURL, "--token-file", "-",
		"--state", State, "--hostname", name)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	m := enrolled.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("enroll said %q", out)
	}
	return m[1], m[2]
}

// Runs are the runs of one guest's agent, each started as its service
// manager would at boot; their logs stay readable after they end.
type Runs struct {
	mu      sync.Mutex
	daemons []*guesttest.Daemon
}

// Start runs the agent bin in g with the enrolled identity, at debug level
// (the most it logs, so that a scan for a secret can find one).
func (r *Runs) Start(g *guesttest.Guest, bin string) error {
	d, err := g.StartDaemon("fleetpass-agent", bin, "run", "--state", State, "--log-level", "debug")
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.daemons = append(r.daemons, d)
	r.mu.Unlock()
	return nil
}

// Kill kills every run, as a crash would.
func (r *Runs) Kill() error {
	r.mu.Lock()
	ds := append([]*guesttest.Daemon(nil), r.daemons...)
	r.mu.Unlock()
	for _, d := range ds {
		if err := d.Kill(); err != nil {
			return err
		}
	}
	return nil
}

// Logs is what every run wrote.
func (r *Runs) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, d := range r.daemons {
		b.WriteString(d.Log())
	}
	return b.String()
}

// WaitInstance polls the instance until ok holds, for up to d; on time-out
// it fails t with the last answer and what logs returns (an agent's log).
func WaitInstance(t testing.TB, c *client.Client, id string, d time.Duration, what string, ok func(*apiv1.Instance) bool,
	logs func() string) *apiv1.Instance {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		in, err := c.GetInstance(t.Context(), id)
		if err == nil && ok(in) {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s within %v (last: %+v, %v)\nagent log:\n%s", id, what, d, in, err, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RunningAlive is the state WaitInstance waits for after a boot: running,
// with a live guest channel.
func RunningAlive(in *apiv1.Instance) bool { return in.State == apiv1.StateRunning && in.GuestAlive }

// WaitOperation waits up to d for the operation to end. It rides out a
// server restart: an error is retried until d is up.
func WaitOperation(t testing.TB, c *client.Client, id string, d time.Duration) *apiv1.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	for {
		op, err := c.WaitOperationFor(ctx, id, 30*time.Second)
		if err == nil && op.Status != apiv1.OperationRunning {
			return op
		}
		if ctx.Err() != nil {
			t.Fatalf("operation %s did not finish: %v", id, err)
		}
		if err != nil {
			time.Sleep(200 * time.Millisecond) // the server may be restarting
		}
	}
}

// WantLogins proves a reset of user's password on the guest g (named name
// in failures): the new password logs in, and sshd refuses the old one (an
// unreachable guest proves nothing).
func WantLogins(t testing.TB, name string, g *guesttest.Guest, user, newPW, oldPW string) {
	t.Helper()
	if err := g.CheckLogin(user, newPW); err != nil {
		t.Errorf("%s: login with the new password: %v", name, err)
	}
	if err := g.CheckLogin(user, oldPW); !errors.Is(err, guesttest.ErrAuthFailed) {
		t.Errorf("%s: login with the old password: got %v, want an authentication failure", name, err)
	}
}
