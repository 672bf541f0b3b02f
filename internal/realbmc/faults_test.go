package realbmc

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/ipmitest"
)

// bareBMC is a BMC whose chassis is a cheap process: for registration
// tests, which need no login.
func bareBMC(t *testing.T) (*ipmitest.BMC, *ipmitest.ProcessChassis) {
	ch := &ipmitest.ProcessChassis{}
	t.Cleanup(ch.Close)
	return ipmitest.Start(t, ch, ipmitest.Options{User: "fleetpass"}), ch
}

func apiCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// TestRegistrationIsAdminOnly: a tenant's key may neither register a
// server with a BMC nor change a BMC's settings, even with the right
// credentials.
func TestRegistrationIsAdminOnly(t *testing.T) {
	e := newEnv(t)
	bmc, _ := bareBMC(t)
	ctx := t.Context()
	if _, err := e.client.CreateTenant(ctx, apiv1.TenantCreate{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	k, err := e.client.CreateKey(ctx, apiv1.KeyCreate{Name: "acme-ops", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := client.New(e.url, k.ID, k.Secret)
	if err != nil {
		t.Fatal(err)
	}
	req := apiv1.InstanceCreate{Name: "bm-x", OSType: "linux", Power: apiv1.DriverLink{Driver: "ipmi", Address: bmc.Addr()},
		BMC: &apiv1.BMCCredentials{User: bmc.User, Password: bmc.Password}}
	if _, err := tenant.CreateInstance(ctx, req); apiCode(err) != "DRIVER_LINK_FORBIDDEN" {
		t.Fatalf("a tenant key registering a BMC: %v, want DRIVER_LINK_FORBIDDEN", err)
	}
	if got := bmc.HookCalls(); len(got) > 1 {
		t.Errorf("the BMC was used for a refused request: %q", got)
	}
	req.Tenant = "acme"
	in, err := e.client.CreateInstance(ctx, req)
	if err != nil {
		t.Fatalf("the admin registering it into acme: %v", err)
	}
	if _, err := tenant.SetBMC(ctx, in.ID, apiv1.BMCUpdate{Password: "other"}); apiCode(err) != "DRIVER_LINK_FORBIDDEN" {
		t.Fatalf("a tenant key changing the BMC: %v, want DRIVER_LINK_FORBIDDEN", err)
	}
	// The BMC is the operator's infrastructure: the tenant sees its server,
	// not the BMC's address, user or faults.
	seen, err := tenant.GetInstance(ctx, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if seen.BMC != nil {
		t.Errorf("the tenant sees BMC %+v, want none", seen.BMC)
	}
	if in.BMC == nil || in.BMC.User != bmc.User {
		t.Errorf("the operator sees BMC %+v, want its address and user", in.BMC)
	}
}

// TestRegistrationChecksTheBMC: every bad setting is refused with its own
// code before anything is stored; a good registration reads the power and
// flags a BMC that accepts cipher suite 0.
func TestRegistrationChecksTheBMC(t *testing.T) {
	e := newEnv(t)
	bmc, ch := bareBMC(t)
	add := func(stdin string, extra ...string) cliResult {
		return e.cli(stdin, append([]string{"instances", "add", "bm-1", "--os", "linux", "--ipmi", bmc.Addr(),
			"--ipmi-user", bmc.User, "--ipmi-password-stdin"}, extra...)...)
	}
	for _, tc := range []struct {
		name, stdin string
		extra       []string
		want        string
	}{
		{"wrong password", "not-the-password\n", nil, "BMC_AUTH_FAILED"},
		{"suite 0", bmc.Password + "\n", []string{"--ipmi-cipher-suite", "0"}, "cipher suite 0 authenticates nobody"},
		{"suite without encryption", bmc.Password + "\n", []string{"--ipmi-cipher-suite", "2"}, "does not encrypt"},
		{"suite the BMC lacks", bmc.Password + "\n", []string{"--ipmi-cipher-suite", "17"}, "BMC_CIPHER_SUITE_REFUSED"},
		{"no password", "\n", nil, "no password on standard input"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			res := add(tc.stdin, tc.extra...)
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("instances add: %v, want an error saying %q", res.err, tc.want)
			}
			if strings.Contains(res.err.Error()+res.stdout+res.stderr, "not-the-password") ||
				strings.Contains(res.err.Error()+res.stdout+res.stderr, bmc.Password) {
				t.Error("the error shows a password")
			}
		})
	}
	if l, err := e.client.ListInstances(t.Context(), client.InstanceFilter{}); err != nil || len(l.Instances) != 0 {
		t.Fatalf("after refused registrations: %d instances (%v), want none", len(l.Instances), err)
	}
	if ch.Power() || slices.ContainsFunc(bmc.HookCalls(), func(c string) bool { return strings.HasPrefix(c, "set ") }) {
		t.Fatalf("refused registrations acted on the chassis: %q", bmc.HookCalls())
	}

	res := add(bmc.Password + "\n")
	if res.err != nil {
		t.Fatalf("instances add: %v", res.err)
	}
	if !strings.Contains(res.stdout, "STOPPED") {
		t.Errorf("instances add printed %q, want the state the BMC reads (STOPPED)", res.stdout)
	}
	if !strings.Contains(res.stderr, "accepts cipher suite 0") {
		t.Errorf("instances add warned %q, want a warning about cipher suite 0", res.stderr)
	}
	l, err := e.client.ListInstances(t.Context(), client.InstanceFilter{})
	if err != nil || len(l.Instances) != 1 {
		t.Fatalf("instances: %v, %v", l, err)
	}
	in := l.Instances[0]
	if in.BMC == nil || !in.BMC.AcceptsCipherSuite0 || in.BMC.CipherSuite != 3 || in.BMC.Address != bmc.Addr() {
		t.Errorf("instance's BMC = %+v, want %s, suite 3, flagged for accepting suite 0", in.BMC, bmc.Addr())
	}
	if in.Guest.Driver != "agent" || in.Guest.Address != "" {
		t.Errorf("guest link %+v, want the agent's, not enrolled yet", in.Guest)
	}

	// One BMC, one server.
	res = e.cli(bmc.Password+"\n", "instances", "add", "bm-2", "--os", "linux", "--ipmi", bmc.Addr(), "--ipmi-user", bmc.User,
		"--ipmi-password-stdin")
	if res.err == nil || !strings.Contains(res.err.Error(), "LINK_IN_USE") {
		t.Errorf("a second server on the same BMC: %v, want LINK_IN_USE", res.err)
	}

	// A reset of a server whose agent never enrolled fails before any
	// power action.
	op, err := e.client.ResetPassword(t.Context(), apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: apiv1.ModeOffline,
		Password: newPassword()})
	if err != nil {
		t.Fatal(err)
	}
	wantItem(t, e.wait(op.ID), apiv1.ItemFailed, "NO_GUEST_CHANNEL")
	if ch.Boots() != 0 {
		t.Error("the server was powered on")
	}

	bmc.Kill()
	res = e.cli(bmc.Password+"\n", "instances", "add", "bm-3", "--os", "linux", "--ipmi", bmc.Addr(), "--ipmi-user", bmc.User,
		"--ipmi-password-stdin")
	if res.err == nil || !strings.Contains(res.err.Error(), "BMC_UNREACHABLE") {
		t.Errorf("a BMC that does not answer: %v, want BMC_UNREACHABLE", res.err)
	}
}

// TestBMCFaultsDuringOperations: a BMC killed in the middle of an
// operation, a chassis command that fails, and a password rotated on the
// BMC give clear item errors, and nothing else happens.
func TestBMCFaultsDuringOperations(t *testing.T) {
	e := newEnv(t)
	pw := newPassword()
	s := e.newServer("bm-faults", pw)

	t.Run("BMCKilledMidOperation", func(t *testing.T) {
		s.chassis.setHang(true)
		defer s.chassis.setHang(false)
		op, err := e.client.PowerAction(t.Context(), apiv1.PowerAction{Action: apiv1.ActionStop, InstanceIDs: []string{s.instance},
			StopMode: apiv1.StopSoftThenHard})
		if err != nil {
			t.Fatal(err)
		}
		// Let the soft off reach the chassis, then kill the BMC.
		deadline := time.Now().Add(30 * time.Second)
		for !slices.Contains(s.bmc.Commands(), "set shutdown 1") {
			if time.Now().After(deadline) {
				t.Fatalf("no soft off reached the chassis: %q", s.bmc.HookCalls())
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.bmc.Kill()
		it := wantItem(t, e.wait(op.ID), apiv1.ItemFailed, "BMC_UNREACHABLE")
		if !strings.Contains(it.Message, "BMC does not answer") || !strings.Contains(it.Detail, s.bmc.Addr()) {
			t.Errorf("message %q, detail %q: want them to say the BMC does not answer, and where", it.Message, it.Detail)
		}
		if !s.g.Running() {
			t.Error("the server went off although its BMC was gone")
		}
		in := e.waitInstance(s, 15*time.Second, "UNKNOWN with the BMC's fault", func(in *apiv1.Instance) bool {
			return in.State == apiv1.StateUnknown && in.BMC != nil && in.BMC.Error != ""
		})
		t.Logf("instance shows BMC error %q", in.BMC.Error)
		if m := e.metric("fleetpass_bmcs_faulty"); m != "1" {
			t.Errorf("fleetpass_bmcs_faulty = %q, want 1", m)
		}
		s.bmc.Restart()
		e.waitInstance(s, 15*time.Second, "RUNNING once the BMC is back", func(in *apiv1.Instance) bool {
			return in.State == apiv1.StateRunning && in.BMC != nil && in.BMC.Error == ""
		})
	})

	t.Run("ChassisCommandFails", func(t *testing.T) {
		wantItem(t, e.power(apiv1.ActionStop, apiv1.StopHard, s), apiv1.ItemSucceeded, "")
		s.chassis.setFailPower(true)
		defer s.chassis.setFailPower(false)
		it := wantItem(t, e.power(apiv1.ActionStart, "", s), apiv1.ItemFailed, "POWER_COMMAND_FAILED")
		t.Logf("item message: %s (detail: %s)", it.Message, it.Detail)
		wantPower(t, s, false)
		s.chassis.setFailPower(false)
		wantItem(t, e.power(apiv1.ActionStart, "", s), apiv1.ItemSucceeded, "")
		e.waitAlive(s)
	})

	t.Run("PasswordRotation", func(t *testing.T) {
		const rotated = "Rotated-bmc-7"
		// Refused: the BMC does not know this password yet; the old
		// settings stay and keep working.
		res := e.cli(rotated+"\n", "instances", "set-bmc", s.instance, "--ipmi-password-stdin")
		if res.err == nil || !strings.Contains(res.err.Error(), "BMC_AUTH_FAILED") {
			t.Fatalf("set-bmc with a password the BMC does not know: %v, want BMC_AUTH_FAILED", res.err)
		}
		wantItem(t, e.power(apiv1.ActionReboot, apiv1.StopHard, s), apiv1.ItemSucceeded, "")
		// The operator rotates it on the BMC, then in fleetpass.
		if err := s.bmc.SetPassword(rotated); err != nil {
			t.Fatal(err)
		}
		res = e.cli(rotated+"\n", "instances", "set-bmc", s.instance, "--ipmi-password-stdin")
		if res.err != nil {
			t.Fatalf("set-bmc: %v\n%s", res.err, res.stderr)
		}
		e.waitAlive(s)
		wantItem(t, e.power(apiv1.ActionReboot, apiv1.StopHard, s), apiv1.ItemSucceeded, "")
		e.waitAlive(s)
	})
}
