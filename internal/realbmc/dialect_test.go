package realbmc

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

// TestPowerThroughTheCLIAndTheActionAPI: the CLI's stop, start and reboot,
// and the action API's StopInstances and StartInstances signed with a
// tenant's key, reach a bare-metal server's BMC like the native API.
func TestPowerThroughTheCLIAndTheActionAPI(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client.CreateTenant(t.Context(), apiv1.TenantCreate{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	s := e.newUnregistered("bm-dialects", newPassword())
	res := e.cli(s.bmc.Password+"\n", "instances", "add", s.name, "--os", "linux", "--tenant", "acme", "--ipmi", s.bmc.Addr(),
		"--ipmi-user", s.bmc.User, "--ipmi-password-stdin", "-o", "json")
	if res.err != nil {
		t.Fatalf("instances add: %v", res.err)
	}
	var in apiv1.Instance
	if err := json.Unmarshal([]byte(res.stdout), &in); err != nil {
		t.Fatal(err)
	}
	s.instance = in.ID

	for _, step := range []struct {
		args []string
		on   bool
	}{
		{[]string{"stop", "--mode", "hard", "--wait", s.instance}, false},
		{[]string{"start", "--wait", s.instance}, true},
		{[]string{"reboot", "--mode", "hard", "--wait", s.instance}, true},
	} {
		if r := e.cli("", step.args...); r.err != nil {
			t.Fatalf("fleetpass %s: %v\n%s%s", strings.Join(step.args, " "), r.err, r.stdout, r.stderr)
		}
		wantPower(t, s, step.on)
	}
	if got := s.bmc.Commands(); strings.Join(got, ",") != "set power 0,set power 1,set power 0,set power 1" {
		t.Errorf("chassis commands %q, want off, on, then off and on for the reboot", got)
	}

	k, err := e.client.CreateKey(t.Context(), apiv1.KeyCreate{Name: "acme-zec", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	zec := func(action string, body map[string]any) string {
		t.Helper()
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/api/v2/zec", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-ZC-Action", action)
		req.Header.Set("X-ZC-Version", "2022-11-20")
		zc2.SignRequest(req, b, k.ID, []byte(k.Secret), time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var m struct {
			Response struct {
				OperationID string `json:"operationId"`
			} `json:"response"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &m) != nil || m.Response.OperationID == "" {
			t.Fatalf("%s: HTTP %d %s", action, resp.StatusCode, data)
		}
		return m.Response.OperationID
	}
	wantItem(t, e.wait(zec("StopInstances", map[string]any{"instanceIds": []string{s.instance}, "forceShutdown": true})),
		apiv1.ItemSucceeded, "")
	wantPower(t, s, false)
	wantItem(t, e.wait(zec("StartInstances", map[string]any{"instanceIds": []string{s.instance}})), apiv1.ItemSucceeded, "")
	wantPower(t, s, true)
}
