package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
)

// TestMain stops the throwaway PostgreSQL cluster of a run on PostgreSQL.
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// realServer is a whole fleetpass server in process, with the sim fleet,
// for the CLI's end-to-end tests.
type realServer struct {
	srv *server.Server
	env map[string]string
}

func startRealServer(t *testing.T) *realServer {
	t.Helper()
	dir := t.TempDir()
	cfg := engine.DefaultConfig()
	cfg.PollInterval, cfg.GuestTimeout, cfg.FetchPoll = 10*time.Millisecond, 300*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.Open(ctx, server.Config{Listen: "127.0.0.1:0", DataDir: dir, DatabaseURL: storetest.DatabaseURL(t), Sim: true, Engine: cfg,
		SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); cancel(); srv.Close() })
	data, err := os.ReadFile(filepath.Join(dir, "admin-credentials"))
	if err != nil {
		t.Fatal(err)
	}
	var creds server.Credentials
	if err := json.Unmarshal(data, &creds); err != nil {
		t.Fatal(err)
	}
	return &realServer{srv: srv, env: map[string]string{envServer: hs.URL, envKeyID: creds.KeyID, envKeySecret: creds.Secret}}
}

func (r *realServer) add(t *testing.T, name string, running bool, faults sim.Faults) apiv1.Instance {
	t.Helper()
	ctx := context.Background()
	if err := r.srv.Sim().Add(ctx, sim.Machine{ID: "m-" + name, Running: running, Faults: faults}); err != nil {
		t.Fatal(err)
	}
	svc := r.srv.Service()
	_ = svc.EnsureTenant(ctx, "acme")
	in, err := svc.RegisterInstance(ctx, core.Principal{Kind: "key", ID: "t", Tenant: "acme", Admin: true},
		apiv1.InstanceCreate{Name: name, Tenant: "acme", OSType: "linux",
			Power: apiv1.DriverLink{Driver: "sim", Address: "m-" + name}, Guest: apiv1.DriverLink{Driver: "sim", Address: "m-" + name}})
	if err != nil {
		t.Fatal(err)
	}
	state, alive := apiv1.StateStopped, false
	if running {
		state, alive = apiv1.StateRunning, !faults.AgentDead
	}
	if err := svc.SetInstanceObserved(ctx, in.ID, state, &alive); err != nil {
		t.Fatal(err)
	}
	return in
}

func (r *realServer) passwordIs(t *testing.T, in apiv1.Instance, pw string) bool {
	t.Helper()
	ok, err := r.srv.Sim().CheckPassword(context.Background(), in.Power.Address, "root", []byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestCLIResetsPasswordsOnARealServer(t *testing.T) {
	r := startRealServer(t)
	up := r.add(t, "web-1", true, sim.Faults{})
	down := r.add(t, "db-1", false, sim.Faults{})
	const pw = "Cli-Real-pw-42!"
	res := runCLI(t, r.env, pw+"\n", "reset-password", "--password-stdin", "--force-stop", "--wait", up.ID, down.ID)
	if res.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, pw) {
		t.Error("the CLI printed the password")
	}
	if !r.passwordIs(t, up, pw) || !r.passwordIs(t, down, pw) {
		t.Error("the password was not set on both instances")
	}

	res = runCLI(t, r.env, "", "-o", "json", "instances", "list")
	var list apiv1.InstanceList
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list.Instances) != 2 {
		t.Fatalf("instances list -o json: %v %s", err, res.stdout)
	}
	for _, in := range list.Instances {
		if in.State != apiv1.StateRunning || in.LatestOperation == nil || in.LatestOperation.State != apiv1.OpStateSuccess {
			t.Errorf("%s after the reset: %+v", in.Name, in)
		}
	}
}

func TestCLIGeneratedPasswordIsPrintedOnceAndSet(t *testing.T) {
	r := startRealServer(t)
	in := r.add(t, "web-1", true, sim.Faults{})
	res := runCLI(t, r.env, "", "reset-password", "--generate", "--wait", in.ID)
	if res.code != 0 {
		t.Fatalf("exit %d: %s %s", res.code, res.stdout, res.stderr)
	}
	var generated string
	for _, f := range strings.Fields(res.stdout) {
		if r.passwordIs(t, in, f) {
			generated = f
		}
	}
	if generated == "" {
		t.Fatalf("no printed word is the password that was set:\n%s", res.stdout)
	}
	if strings.Count(res.stdout, generated) != 1 || strings.Contains(res.stderr, generated) {
		t.Error("the generated password is printed more than once")
	}
}

func TestCLIWaitExitsTwoWhenAnItemFailsOnARealServer(t *testing.T) {
	r := startRealServer(t)
	ok := r.add(t, "web-1", true, sim.Faults{})
	dead := r.add(t, "web-2", true, sim.Faults{AgentDead: true})
	res := runCLI(t, r.env, "Cli-Real-pw-42!\n", "reset-password", "--mode", "online", "--password-stdin", "--wait", ok.ID, dead.ID)
	if res.code != 2 {
		t.Fatalf("exit %d, want 2\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout+res.stderr, "GUEST_NOT_ALIVE") && !strings.Contains(res.stdout+res.stderr, "not alive") {
		t.Errorf("the failure's reason is not shown:\n%s\n%s", res.stdout, res.stderr)
	}
}

func TestCLIRefusedRequestShowsTheServersCode(t *testing.T) {
	r := startRealServer(t)
	up := r.add(t, "web-1", true, sim.Faults{})
	res := runCLI(t, r.env, "Cli-Real-pw-42!\n", "reset-password", "--mode", "offline", "--password-stdin", up.ID)
	if res.code != 1 || !strings.Contains(res.stderr, "FORCED_SHUTDOWN_CONSENT_REQUIRED") {
		t.Fatalf("exit %d stderr %s", res.code, res.stderr)
	}
}

func TestCLIAddsListsAndRemovesHosts(t *testing.T) {
	r := startRealServer(t)
	const uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
	res := runCLI(t, r.env, "", "hosts", "add", uri, "--name", "kvm-test", "--max-concurrency", "2")
	if res.code != 0 || !strings.Contains(res.stdout, "Added host hst-") {
		t.Fatalf("hosts add: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	id := strings.Fields(strings.TrimPrefix(res.stdout, "Added host "))[0]
	res = runCLI(t, r.env, "", "hosts", "list")
	if res.code != 0 || !strings.Contains(res.stdout, "kvm-test") || !strings.Contains(res.stdout, uri) {
		t.Fatalf("hosts list: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, r.env, "", "-o", "json", "hosts", "list")
	var list apiv1.HostList
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list.Hosts) != 1 || list.Hosts[0].MaxConcurrency != 2 {
		t.Fatalf("hosts list -o json: %v %s", err, res.stdout)
	}
	res = runCLI(t, r.env, "", "hosts", "add", "http://nope/system")
	if res.code != 1 || !strings.Contains(res.stderr, "INVALID_ARGUMENT") {
		t.Fatalf("bad URI: exit %d stderr %s", res.code, res.stderr)
	}
	res = runCLI(t, r.env, "", "hosts", "remove", id, "hst-nosuchhost")
	if res.code != 1 || !strings.Contains(res.stdout, "Removed "+id) || !strings.Contains(res.stderr, "HOST_NOT_FOUND") {
		t.Fatalf("hosts remove: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}
