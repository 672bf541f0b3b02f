package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// TestMain stops the throwaway PostgreSQL cluster of a run on PostgreSQL
// (servertest.DatabaseURL).
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// passwordIs reports whether root's password on in's simulated machine
// is pw.
func (api *testAPI) passwordIs(t *testing.T, in apiv1.Instance, pw string) bool {
	t.Helper()
	return api.s.CheckPassword(in, "root", pw)
}

func TestCLIResetsPasswordsOnARealServer(t *testing.T) {
	r := startAPI(t)
	up := r.add(t, servertest.Machine{Name: "web-1", Running: true})
	down := r.add(t, servertest.Machine{Name: "db-1"})
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
	r := startAPI(t)
	in := r.add(t, servertest.Machine{Name: "web-1", Running: true})
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

func TestCLIRefusedRequestShowsTheServersCode(t *testing.T) {
	r := startAPI(t)
	up := r.add(t, servertest.Machine{Name: "web-1", Running: true})
	res := runCLI(t, r.env, "Cli-Real-pw-42!\n", "reset-password", "--mode", "offline", "--password-stdin", up.ID)
	if res.code != 1 || !strings.Contains(res.stderr, "FORCED_SHUTDOWN_CONSENT_REQUIRED") {
		t.Fatalf("exit %d stderr %s", res.code, res.stderr)
	}
}

func TestCLIAddsListsAndRemovesHosts(t *testing.T) {
	r := startAPI(t)
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
