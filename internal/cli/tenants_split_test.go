package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// An admin's selection over two tenants becomes one operation per tenant:
// the server refuses one operation over several tenants.
func TestCLIAdminSelectionOverTenantsMakesOneOperationPerTenant(t *testing.T) {
	r := startAPI(t)
	a := r.add(t, servertest.Machine{Name: "web-1"})
	ctx := context.Background()
	svc := r.s.Service()
	_ = svc.EnsureTenant(ctx, "globex")
	if err := r.s.Sim().Add(ctx, sim.Machine{ID: "m-globex-1"}); err != nil {
		t.Fatal(err)
	}
	link := apiv1.DriverLink{Driver: "sim", Address: "m-globex-1"}
	b, err := svc.RegisterInstance(ctx, core.Principal{Kind: "key", ID: "t", Tenant: "admin", Admin: true},
		apiv1.InstanceCreate{Name: "globex-1", Tenant: "globex", OSType: "linux", Power: link, Guest: link})
	if err != nil {
		t.Fatal(err)
	}
	no := false
	if err := svc.SetInstanceObserved(ctx, b.ID, apiv1.StateStopped, &no); err != nil {
		t.Fatal(err)
	}
	const pw = "Cli-Split-pw-42!"
	res := runCLI(t, r.env, pw+"\n", "reset-password", "--password-stdin", "--wait", a.ID, b.ID)
	if res.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if n := strings.Count(res.stdout, "Operation op-"); n != 2 || !strings.Contains(res.stdout, "one operation per tenant") {
		t.Errorf("want two operations, one per tenant:\n%s", res.stdout)
	}
	if !r.passwordIs(t, a, pw) || !r.passwordIs(t, b, pw) {
		t.Error("the password was not set in both tenants")
	}
	res = runCLI(t, r.env, "", "start", "--wait", a.ID, b.ID)
	if res.code != 0 || strings.Count(res.stdout, "Operation op-") != 2 {
		t.Errorf("start over two tenants: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}

// Enrolment tokens are listed and revoked from the CLI.
func TestCLIListsAndRevokesEnrolmentTokens(t *testing.T) {
	r := startAPI(t)
	res := runCLI(t, r.env, "", "-o", "json", "agents", "token", "create", "--name", "web-7")
	if res.code != 0 {
		t.Fatalf("create: %d %s %s", res.code, res.stdout, res.stderr)
	}
	id := between(res.stdout, `"id": "`, `"`)
	res = runCLI(t, r.env, "", "agents", "token", "list")
	if res.code != 0 || !strings.Contains(res.stdout, id) || !strings.Contains(res.stdout, "active") {
		t.Fatalf("list: %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if res = runCLI(t, r.env, "", "agents", "token", "revoke", id); res.code != 0 {
		t.Fatalf("revoke: %d %s %s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, r.env, "", "agents", "token", "list")
	if !strings.Contains(res.stdout, "revoked") {
		t.Errorf("list after revoke:\n%s", res.stdout)
	}
	if res = runCLI(t, r.env, "", "agents", "token", "revoke", id); res.code == 0 {
		t.Error("revoking a revoked token succeeded")
	}
}

func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, end)
	return v
}
