package realguest

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// The dialects reset the default admin user (root on Linux), within the
// documents' narrower password rules.

func dialectPassword() string { return testutil.NewPassword() }

type apiKey struct{ id, secret string }

func (e *env) tenantKey() apiKey {
	e.t.Helper()
	k, err := e.client.CreateKey(e.t.Context(), apiv1.KeyCreate{Name: "dialects", Tenant: tenant})
	if err != nil {
		e.t.Fatal(err)
	}
	return apiKey{k.ID, k.Secret}
}

func (e *env) setRoot(m *machine, pw string) {
	e.t.Helper()
	if err := m.g.SetPassword("root", pw); err != nil {
		e.t.Fatal(err)
	}
	// The guests share the host's /root, whose .bashrc may start slow
	// tools (pyenv on the CI machines, with a lock shared by every
	// session): root's logins get a plain shell, as on a server.
	if _, err := m.g.Run("usermod", "--shell", "/bin/sh", "root"); err != nil {
		e.t.Fatal(err)
	}
}

// zec calls the action API's ZEC path and returns the HTTP status and body.
func (e *env) zec(k apiKey, action string, body any) (int, map[string]any) {
	e.t.Helper()
	status, m, err := testutil.ActionCaller{URL: e.url, KeyID: k.id, Secret: k.secret}.Call(e.t.Context(), "zec", action, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return status, m
}

// bareMetal calls the bare-metal API (GET, HmacSHA256).
func (e *env) bareMetal(k apiKey, params url.Values) map[string]any {
	e.t.Helper()
	action := params.Get("Action")
	params.Del("Action")
	_, m, err := testutil.BareMetalCaller{URL: e.url, KeyID: k.id, Secret: k.secret}.Call(e.t.Context(), action, params)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// waitLatest waits for the instance's latest operation to end.
func (e *env) waitLatest(m *machine) *apiv1.Operation {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		in, err := e.client.GetInstance(e.t.Context(), m.instance)
		if err == nil && in.LatestOperation != nil {
			return e.wait(in.LatestOperation.ID)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s has no operation: %v", m.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestZECResetsRunningGuestOnline(t *testing.T) {
	for _, c := range channels {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			k := e.tenantKey()
			old, pw := dialectPassword(), dialectPassword()
			m := c.newGuest(e, "zec-"+c.name, newPassword())
			e.setRoot(m, old)
			argv := testutil.WatchArgv(t, pw)
			argv.Expect(m.process())
			status, body := e.zec(k, "ResetInstancesPassword", map[string]any{"instanceIds": []string{m.instance}, "password": pw})
			if status != http.StatusOK {
				t.Fatalf("ZEC ResetInstancesPassword: %d %v", status, body)
			}
			op := e.waitLatest(m)
			argv.Check(t)
			wantItem(t, op, m, apiv1.ItemSucceeded, "")
			if !m.g.Running() {
				t.Error("the ZEC path powered the guest off")
			}
			if err := m.g.CheckLogin("root", pw); err != nil {
				t.Errorf("root login with the new password: %v", err)
			}
			if err := m.g.CheckLogin("root", old); err == nil {
				t.Error("root login with the old password still works")
			}
			e.noSecretsAnywhere(t, []*machine{m}, pw, old)
		})
	}
}

func TestZECRefusesGuestWhoseAgentIsDead(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.tenantKey()
	m := e.newAgentGuest("zec-dead", newPassword())
	m.killAgent(t)
	waitInstance(t, e.client, m, func(in *apiv1.Instance) bool { return !in.GuestAlive })
	status, body := e.zec(k, "ResetInstancesPassword", map[string]any{"instanceIds": []string{m.instance}, "password": dialectPassword()})
	if status != http.StatusForbidden || body["code"] != "OPERATION_DENIED_INSTANCE_NOT_RUNNING" {
		t.Fatalf("got %d %v, want 403 OPERATION_DENIED_INSTANCE_NOT_RUNNING", status, body)
	}
}

func TestBareMetalResetsThroughTheAgent(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.tenantKey()
	old, pw := dialectPassword(), dialectPassword()
	m := e.newAgentGuest("bm-agent", newPassword())
	e.setRoot(m, old)
	argv := testutil.WatchArgv(t, pw)
	argv.Expect(m.process())
	a := e.bareMetal(k, url.Values{"Action": {"ResetDevicePasswd"}, "instanceIds.1": {m.instance}, "passwd": {pw}})
	if a["code"] != float64(0) {
		t.Fatalf("ResetDevicePasswd: %v", a)
	}
	task := fmt.Sprint(int64(a["data"].(map[string]any)["taskId"].(float64)))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := e.bareMetal(k, url.Values{"Action": {"DescribeOperationResult"}, "taskId": {task}})
		data, _ := r["data"].(map[string]any)
		if st, _ := data["status"].(float64); st == 1 {
			break
		} else if st != 4 && st != 5 && st != 6 && st != 7 {
			t.Fatalf("task ended with %v", r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("task did not end: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	argv.Check(t)
	if err := m.g.CheckLogin("root", pw); err != nil {
		t.Errorf("root login with the new password: %v", err)
	}
	if err := m.g.CheckLogin("root", old); err == nil {
		t.Error("root login with the old password still works")
	}
	e.noSecretsAnywhere(t, []*machine{m}, pw, old)
}

func TestBareMetalAnswersAgentNotAliveForDeadAgent(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.tenantKey()
	m := e.newAgentGuest("bm-dead", newPassword())
	m.killAgent(t)
	waitInstance(t, e.client, m, func(in *apiv1.Instance) bool { return !in.GuestAlive })
	a := e.bareMetal(k, url.Values{"Action": {"ResetDevicePasswd"}, "instanceIds.1": {m.instance}, "passwd": {dialectPassword()}})
	if a["code"] != float64(12006) {
		t.Fatalf("got %v, want code 12006 (OperationDenied.TsysAgentNotAlive)", a)
	}
}
