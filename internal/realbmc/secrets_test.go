package realbmc

import (
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// TestSecretsAppearNowhere: the BMC password and a new login password are
// in no log (server, agent, sshd), no record (the database and its WAL,
// the operation, the instance as the API shows it, the audit log) and no
// process's arguments, through registration, a BMC rotation, a refused
// registration and an offline reset.
func TestSecretsAppearNowhere(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newUnregistered("bm-secrets", old)
	pw := newPassword()
	const rotated, wrong = "Rot4ted-bmc-pw", "Wr0ng-bmc-pw"
	secrets := []string{s.bmc.Password, pw, rotated, wrong}
	w := testutil.WatchArgv(t, secrets...)
	w.Expect("fleetpass-agent", "ipmi_sim")

	res := e.cli(wrong+"\n", "instances", "add", s.name, "--os", "linux", "--ipmi", s.bmc.Addr(), "--ipmi-user", s.bmc.User,
		"--ipmi-password-stdin")
	if res.err == nil {
		t.Fatal("registration with a wrong BMC password succeeded")
	}
	res = e.cli(s.bmc.Password+"\n", "instances", "add", s.name, "--os", "linux", "--ipmi", s.bmc.Addr(), "--ipmi-user", s.bmc.User,
		"--ipmi-password-stdin", "-o", "json")
	if res.err != nil {
		t.Fatalf("instances add: %v", res.err)
	}
	list, err := e.client.ListInstances(t.Context(), client.InstanceFilter{})
	if err != nil || len(list.Instances) != 1 {
		t.Fatalf("instances: %v", err)
	}
	s.instance = list.Instances[0].ID
	e.enrol(s)
	e.waitAlive(s)

	if err := s.bmc.SetPassword(rotated); err != nil {
		t.Fatal(err)
	}
	if res := e.cli(rotated+"\n", "instances", "set-bmc", s.instance, "--ipmi-password-stdin"); res.err != nil {
		t.Fatalf("set-bmc: %v", res.err)
	}
	op := e.reset(s, apiv1.ModeOffline, true, pw)
	wantItem(t, op, apiv1.ItemSucceeded, "")
	wantLogins(t, s, pw, old)
	w.Check(t)

	places := map[string]string{"server log": e.logs(), "agent log": s.chassis.agentLogs(), "sshd log": s.g.SSHDLog()}
	var outputs []string
	for _, args := range [][]string{{"instances", "show", s.instance, "-o", "json"}, {"operations", "show", op.ID, "-o", "json"},
		{"audit", "-o", "json"}} {
		r := e.cli("", args...)
		if r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
		outputs = append(outputs, r.stdout)
	}
	places["API answers"] = strings.Join(outputs, "\n")
	testutil.AssertNoSecretIn(t, places, secrets...)
	// The database and its WAL, and whatever else the server keeps.
	for _, secret := range secrets {
		testutil.AssertNotInDir(t, e.dataDir, secret)
	}
	if !strings.Contains(e.logs(), "agent command acknowledged") {
		t.Error("the server log holds no acknowledgement: is it logging at all?")
	}
}
