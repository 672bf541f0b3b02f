package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/server"
)

const goodPW = "Fleet-Pass-42x"

func TestOnlineResetChangesThePasswordWithoutDowntime(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.addMachine(machineOpts{name: "web-1", running: true})
	b := e.addMachine(machineOpts{name: "web-2", running: true})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(a, b), Password: goodPW}).ID)
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 2 {
		t.Fatalf("operation = %+v", op)
	}
	for _, in := range []apiv1.Instance{a, b} {
		it := itemOf(op, in.ID)
		if it.Mode != apiv1.ModeOnline || it.Step != apiv1.StepDone || it.User != "root" {
			t.Errorf("item %+v: want online, done, root", it)
		}
		if !e.checkPassword(in, "root", goodPW) {
			t.Errorf("%s: the new password does not log in", in.Name)
		}
		snap, _ := e.srv.Sim().Get(context.Background(), in.Power.Address)
		if snap.Power != "running" {
			t.Errorf("%s: power %s after an online reset", in.Name, snap.Power)
		}
		got := e.instance(e.admin, in.ID)
		if got.State != apiv1.StateRunning || got.LatestOperation == nil || got.LatestOperation.State != apiv1.OpStateSuccess ||
			got.LatestOperation.ID != op.ID || got.Busy {
			t.Errorf("instance after reset = %+v", got)
		}
	}
	e.assertNoSecret(goodPW)
}

func TestOfflineResetShutsDownAppliesAndRestarts(t *testing.T) {
	e := newEnv(t, envOpts{})
	running := e.addMachine(machineOpts{name: "db-1", running: true, boot: 50 * time.Millisecond, shutdown: 50 * time.Millisecond})
	stopped := e.addMachine(machineOpts{name: "db-2", running: false, boot: 50 * time.Millisecond})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(running, stopped), Mode: apiv1.ModeOffline,
		ForceStop: true, Password: goodPW}).ID)
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation = %+v", op)
	}
	for _, in := range []apiv1.Instance{running, stopped} {
		if !e.checkPassword(in, "root", goodPW) {
			t.Errorf("%s: the new password does not log in", in.Name)
		}
		if got := e.instance(e.admin, in.ID); got.State != apiv1.StateRunning {
			t.Errorf("%s: state %s after an offline reset, want RUNNING (started again)", in.Name, got.State)
		}
	}
	e.assertNoSecret(goodPW)
}

func TestOfflineResetOfARunningInstanceNeedsConsent(t *testing.T) {
	e := newEnv(t, envOpts{})
	running := e.addMachine(machineOpts{name: "app-1", running: true})
	stopped := e.addMachine(machineOpts{name: "app-2"})
	r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(running, stopped),
		Mode: apiv1.ModeOffline, Password: goodPW})
	if r.status != http.StatusConflict || r.errCode() != "FORCED_SHUTDOWN_CONSENT_REQUIRED" {
		t.Fatalf("status %d code %s, want 409 FORCED_SHUTDOWN_CONSENT_REQUIRED", r.status, r.errCode())
	}
	if got := r.errBody().Error.Details["instanceIds"]; fmt.Sprint(got) != fmt.Sprint([]string{running.ID}) {
		t.Errorf("details.instanceIds = %v, want only the running instance", got)
	}
	assertNoOperations(t, e)
}

func assertNoOperations(t *testing.T, e *env) {
	t.Helper()
	var list apiv1.OperationList
	e.mustDo(e.admin, "GET", "/v1/operations", nil, http.StatusOK, &list)
	if len(list.Operations) != 0 {
		t.Errorf("a refused request left %d operation(s)", len(list.Operations))
	}
	var insts apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances", nil, http.StatusOK, &insts)
	for _, in := range insts.Instances {
		if in.Busy {
			t.Errorf("a refused request left %s locked", in.Name)
		}
	}
}

func TestBadInputGetsItsOwnErrorAndChangesNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.addMachine(machineOpts{name: "a", running: true})
	var many []string
	for i := 0; i < 101; i++ {
		many = append(many, fmt.Sprintf("ins-%010d", i))
	}
	cases := []struct {
		name    string
		body    any
		headers []string
		status  int
		code    string
	}{
		{"invalid JSON", `{"instanceIds": [`, nil, 400, "INVALID_JSON"},
		{"unknown field", `{"instanceIds":["` + a.ID + `"],"password":"` + goodPW + `","pasword":"x"}`, nil, 400, "UNKNOWN_FIELD"},
		{"wrong type", `{"instanceIds":"` + a.ID + `"}`, nil, 400, "INVALID_JSON"},
		{"two JSON values", `{"instanceIds":["` + a.ID + `"],"password":"` + goodPW + `"} {}`, nil, 400, "INVALID_JSON"},
		{"empty body", ``, nil, 400, "INVALID_JSON"},
		{"empty id list", apiv1.PasswordReset{InstanceIDs: []string{}, Password: goodPW}, nil, 400, "EMPTY_INSTANCE_LIST"},
		{"duplicated id", apiv1.PasswordReset{InstanceIDs: []string{a.ID, a.ID}, Password: goodPW}, nil, 400, "DUPLICATE_INSTANCE_ID"},
		{"more than 100 ids", apiv1.PasswordReset{InstanceIDs: many, Password: goodPW}, nil, 400, "TOO_MANY_INSTANCES"},
		{"unknown instance", apiv1.PasswordReset{InstanceIDs: []string{a.ID, "ins-zzzzzzzzzz"}, Password: goodPW}, nil, 404, "INSTANCE_NOT_FOUND"},
		{"password too short", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: "Ab1!"}, nil, 400, "PASSWORD_POLICY_VIOLATION"},
		{"password and generate", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, Generate: true}, nil, 400, "INVALID_ARGUMENT"},
		{"no password", apiv1.PasswordReset{InstanceIDs: []string{a.ID}}, nil, 400, "INVALID_ARGUMENT"},
		{"bad mode", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, Mode: "sideways"}, nil, 400, "INVALID_ARGUMENT"},
		{"bad method", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, Method: "telepathy"}, nil, 400, "INVALID_ARGUMENT"},
		{"method disk online", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, Mode: apiv1.ModeOnline, Method: apiv1.MethodDisk}, nil, 400, "INVALID_ARGUMENT"},
		{"method disk where no driver edits disks", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, Method: apiv1.MethodDisk, ForceStop: true}, nil, 409, "RESET_METHOD_UNSUPPORTED"},
		{"bad user", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: goodPW, User: "ro:ot"}, nil, 400, "INVALID_ARGUMENT"},
		{"oversized body", `{"instanceIds":["` + strings.Repeat("x", 70<<10) + `"]}`, nil, 413, "BODY_TOO_LARGE"},
		{"form body", `instanceIds=x`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(e.admin, "POST", "/v1/password-resets", tc.body, tc.headers...)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("status %d code %q, want %d %q: %s", r.status, r.errCode(), tc.status, tc.code, r.body)
			}
			b := r.errBody()
			if b.Error.Message == "" || b.Error.RequestID == "" || b.Error.RequestID != r.header.Get("X-Request-Id") {
				t.Errorf("error body %+v lacks a message or the request id %q", b, r.header.Get("X-Request-Id"))
			}
			if strings.Contains(string(r.body), goodPW) {
				t.Errorf("the answer echoes the password")
			}
		})
	}
	r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{a.ID, "ins-zzzzzzzzzz"}, Password: goodPW})
	if got := fmt.Sprint(r.errBody().Error.Details["unknownIds"]); got != "[ins-zzzzzzzzzz]" {
		t.Errorf("unknownIds = %s", got)
	}
	r = e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Password: "Ab1!"})
	if !strings.Contains(string(r.body), `"rule":"length"`) {
		t.Errorf("a policy error should name the broken rule: %s", r.body)
	}
	assertNoOperations(t, e)
}

func TestAuthenticationIsRequiredAndWrongKeysAreRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := []struct {
		name string
		key  key
		hdr  []string
	}{
		{"no key", key{}, nil},
		{"unknown key", key{"fpk-nope", "secret"}, nil},
		{"wrong secret", key{e.admin.id, e.admin.secret + "x"}, nil},
		{"malformed bearer", key{}, []string{"Authorization", "Bearer nocolon"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.key, "GET", "/v1/instances", nil, tc.hdr...)
			if r.status != 401 || r.errCode() != "UNAUTHENTICATED" {
				t.Fatalf("status %d code %s, want 401 UNAUTHENTICATED", r.status, r.errCode())
			}
		})
	}
	r := e.do(key{}, "GET", "/v1/instances", nil, "Authorization", "Bearer "+e.admin.id+":"+e.admin.secret)
	if r.status != 200 {
		t.Errorf("bearer ID:SECRET: status %d", r.status)
	}
}

func TestAnotherTenantsInstanceAnswersLikeAMissingOne(t *testing.T) {
	e := newEnv(t, envOpts{})
	mine := e.addMachine(machineOpts{name: "mine", tenant: "blue", running: true})
	theirs := e.addMachine(machineOpts{name: "theirs", tenant: "red", running: true})
	blue := e.newKey("blue")
	missing := e.do(blue, "GET", "/v1/instances/ins-zzzzzzzzzz", nil)
	other := e.do(blue, "GET", "/v1/instances/"+theirs.ID, nil)
	if other.status != 404 || other.errCode() != missing.errCode() {
		t.Fatalf("another tenant's instance: %d %s; a missing one: %d %s", other.status, other.errCode(), missing.status, missing.errCode())
	}
	var list apiv1.InstanceList
	e.mustDo(blue, "GET", "/v1/instances", nil, 200, &list)
	if len(list.Instances) != 1 || list.Instances[0].ID != mine.ID {
		t.Errorf("blue lists %+v", list.Instances)
	}
	r := e.do(blue, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(mine, theirs), Password: goodPW})
	if r.status != 404 || !strings.Contains(string(r.body), theirs.ID) {
		t.Errorf("reset naming another tenant's instance: %d %s", r.status, r.body)
	}
	op := e.wait(blue, e.reset(blue, apiv1.PasswordReset{InstanceIDs: ids(mine), Password: goodPW}).ID)
	red := e.newKey("red")
	if r := e.do(red, "GET", "/v1/operations/"+op.ID, nil); r.status != 404 {
		t.Errorf("red sees blue's operation: %d", r.status)
	}
	var ops apiv1.OperationList
	e.mustDo(red, "GET", "/v1/operations", nil, 200, &ops)
	if len(ops.Operations) != 0 {
		t.Errorf("red lists blue's operations")
	}
}

func TestASecondOperationOnABusyInstanceIsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	slow := e.addMachine(machineOpts{name: "slow", running: true, shutdown: 300 * time.Millisecond, boot: 300 * time.Millisecond})
	idle := e.addMachine(machineOpts{name: "idle", running: true})
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(slow), Mode: apiv1.ModeOffline, ForceStop: true, Password: goodPW})
	r := e.do(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "reboot", InstanceIDs: ids(idle, slow)})
	if r.status != 409 || r.errCode() != "INSTANCE_BUSY" || fmt.Sprint(r.errBody().Error.Details["busyIds"]) != "["+slow.ID+"]" {
		t.Fatalf("second operation: %d %s", r.status, r.body)
	}
	if got := e.instance(e.admin, idle.ID); got.Busy {
		t.Errorf("the refused request locked %s", idle.Name)
	}
	e.wait(e.admin, op.ID)
	e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(slow), Password: goodPW}).ID)
}

func TestFaultsFailTheirItemWithAReasonAndSpareTheOthers(t *testing.T) {
	e := newEnv(t, envOpts{})
	healthy := e.addMachine(machineOpts{name: "healthy", running: true})
	dead := e.addMachine(machineOpts{name: "dead-agent", running: true, faults: sim.Faults{AgentDead: true}})
	nouser := e.addMachine(machineOpts{name: "no-user", running: true, users: []string{"root"}})
	flaky := e.addMachine(machineOpts{name: "flaky", running: true, faults: sim.Faults{Transient: 2}})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(healthy, dead, nouser, flaky), Mode: apiv1.ModeOnline,
		User: "deploy", Password: goodPW}).ID)
	want := map[string]string{healthy.ID: "", dead.ID: "GUEST_NOT_ALIVE", nouser.ID: "USER_NOT_FOUND", flaky.ID: ""}
	for id, code := range want {
		it := itemOf(op, id)
		if it.ErrorCode != code {
			t.Errorf("%s: errorCode %q (%s), want %q", it.InstanceName, it.ErrorCode, it.Message, code)
		}
		if code != "" && (it.State != apiv1.ItemFailed || it.Message == "") {
			t.Errorf("%s: %+v: a failed item needs a reason", it.InstanceName, it)
		}
	}
	if op.Status != apiv1.OperationPartial || op.Summary.Succeeded != 2 || op.Summary.Failed != 2 {
		t.Errorf("operation %s %+v, want partial 2/2", op.Status, op.Summary)
	}
	if itemOf(op, flaky.ID).Attempts != 3 || itemOf(op, healthy.ID).Attempts != 1 {
		t.Errorf("attempts: flaky %d, healthy %d; want 3 (two transient failures, then the success) and 1",
			itemOf(op, flaky.ID).Attempts, itemOf(op, healthy.ID).Attempts)
	}
	if !e.checkPassword(flaky, "deploy", goodPW) || !e.checkPassword(healthy, "deploy", goodPW) {
		t.Errorf("the healthy items did not get the password")
	}
	if got := e.instance(e.admin, dead.ID); got.LatestOperation.State != apiv1.OpStateFailed || got.Busy {
		t.Errorf("dead-agent instance = %+v", got)
	}
}

func TestAHungShutdownIsForcedOnlyWithConsent(t *testing.T) {
	e := newEnv(t, envOpts{})
	hung := e.addMachine(machineOpts{name: "hung", running: true, faults: sim.Faults{HangShutdown: true}})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(hung), Mode: apiv1.ModeOffline, ForceStop: true, Password: goodPW}).ID)
	if op.Status != apiv1.OperationSucceeded || !e.checkPassword(hung, "root", goodPW) {
		t.Fatalf("with consent: %+v", op.Items)
	}
	var stop apiv1.Operation
	e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "stop", InstanceIDs: ids(hung), StopMode: "soft"}, 202, &stop)
	stop = e.wait(e.admin, stop.ID)
	if it := stop.Items[0]; it.ErrorCode != "SHUTDOWN_TIMEOUT" || !strings.Contains(it.Message, "no forced stop") {
		t.Errorf("soft stop of a hung guest: %+v", it)
	}
}

func TestAnOfflineResetFailsClearlyWhenTheGuestNeverAnswers(t *testing.T) {
	e := newEnv(t, envOpts{})
	dead := e.addMachine(machineOpts{name: "dead", running: false, faults: sim.Faults{AgentDead: true}})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(dead), Password: goodPW}).ID)
	if it := op.Items[0]; it.Mode != apiv1.ModeOffline || it.ErrorCode != "GUEST_TIMEOUT" {
		t.Fatalf("item %+v", it)
	}
	if got := e.instance(e.admin, dead.ID); got.State != apiv1.StateRunning {
		t.Errorf("state %s: the instance must not be left stopped", got.State)
	}
}

func TestPowerActions(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "p", running: true, boot: 20 * time.Millisecond, shutdown: 20 * time.Millisecond})
	for _, tc := range []struct {
		action, mode, want string
	}{
		{"stop", "soft", apiv1.StateStopped},
		{"start", "", apiv1.StateRunning},
		{"reboot", "", apiv1.StateRunning},
		{"stop", "hard", apiv1.StateStopped},
		{"start", "", apiv1.StateRunning},
		{"stop", "soft-then-hard", apiv1.StateStopped},
		{"stop", "soft", apiv1.StateStopped}, // stopping a stopped instance is a success
	} {
		var op apiv1.Operation
		e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: tc.action, StopMode: tc.mode, InstanceIDs: ids(in)}, 202, &op)
		op = e.wait(e.admin, op.ID)
		if op.Status != apiv1.OperationSucceeded {
			t.Fatalf("%s %s: %+v", tc.action, tc.mode, op.Items)
		}
		if got := e.instance(e.admin, in.ID).State; got != tc.want {
			t.Fatalf("after %s %s: state %s, want %s", tc.action, tc.mode, got, tc.want)
		}
	}
	r := e.do(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "explode", InstanceIDs: ids(in)})
	if r.status != 400 {
		t.Errorf("unknown action: %d", r.status)
	}
}

func TestIdempotencyKeyReturnsTheSameOperation(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "i", running: true})
	body := apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW}
	var first, second apiv1.Operation
	e.mustDo(e.admin, "POST", "/v1/password-resets", body, 202, &first, "Idempotency-Key", "k-1")
	e.mustDo(e.admin, "POST", "/v1/password-resets", body, 202, &second, "Idempotency-Key", "k-1")
	if first.ID != second.ID {
		t.Fatalf("a retried request made a second operation: %s, %s", first.ID, second.ID)
	}
	body.Password = goodPW + "2"
	if r := e.do(e.admin, "POST", "/v1/password-resets", body, "Idempotency-Key", "k-1"); r.status != 422 || r.errCode() != "IDEMPOTENCY_KEY_REUSED" {
		t.Errorf("same key, other body: %d %s", r.status, r.body)
	}
	e.wait(e.admin, first.ID)
	e.assertNoSecret(goodPW)
}

func TestGeneratedPasswordIsShownOnceToTheCaller(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "g", running: true, os: sim.Windows})
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(in), Generate: true})
	if len(op.GeneratedPassword) < 12 {
		t.Fatalf("generated password %q", op.GeneratedPassword)
	}
	done := e.wait(e.admin, op.ID)
	if done.GeneratedPassword != "" {
		t.Errorf("the generated password is shown again")
	}
	if !e.checkPassword(in, "Administrator", op.GeneratedPassword) {
		t.Errorf("the generated password was not set")
	}
	e.assertNoSecret(op.GeneratedPassword)
}

func TestWindowsRuleAppliesToMixedBatches(t *testing.T) {
	e := newEnv(t, envOpts{})
	lin := e.addMachine(machineOpts{name: "l", running: true})
	win := e.addMachine(machineOpts{name: "w", running: true, os: sim.Windows})
	// 10 characters, three classes: enough for Linux, too short for Windows.
	if r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(lin), Password: "Abcdef-123"}); r.status != 202 {
		t.Fatalf("linux alone: %d %s", r.status, r.body)
	}
	r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(win), Password: "Abcdef-123"})
	if r.status != 400 || !strings.Contains(string(r.body), "length") {
		t.Errorf("windows: %d %s", r.status, r.body)
	}
	r = e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(win), User: "Administrator", Password: "xAdministrator-9"})
	if r.status != 400 || !strings.Contains(string(r.body), "contains_user") {
		t.Errorf("windows, password holding the user name: %d %s", r.status, r.body)
	}
}

func TestKeysAreCreatedListedAndRevoked(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	var list apiv1.KeyList
	e.mustDo(k, "GET", "/v1/keys", nil, 200, &list)
	if len(list.Keys) != 1 || list.Keys[0].ID != k.id || strings.Contains(string(e.do(k, "GET", "/v1/keys", nil).body), k.secret) {
		t.Fatalf("a tenant key lists %+v", list.Keys)
	}
	e.mustDo(e.admin, "DELETE", "/v1/keys/"+k.id, nil, 204, nil)
	if r := e.do(k, "GET", "/v1/instances", nil); r.status != 401 {
		t.Errorf("a revoked key still works: %d", r.status)
	}
	if r := e.do(e.admin, "DELETE", "/v1/keys/"+k.id, nil); r.status != 404 {
		t.Errorf("revoking twice: %d", r.status)
	}
	other := e.newKey("other")
	if r := e.do(other, "POST", "/v1/keys", apiv1.KeyCreate{Name: "x", Tenant: "acme"}); r.status != 404 {
		t.Errorf("a tenant key made a key in another tenant: %d", r.status)
	}
	if r := e.do(other, "POST", "/v1/tenants", apiv1.TenantCreate{Name: "evil"}); r.status != 403 {
		t.Errorf("a tenant key made a tenant: %d", r.status)
	}
	var audit apiv1.AuditList
	e.mustDo(e.admin, "GET", "/v1/audit", nil, 200, &audit)
	actions := map[string]bool{}
	for _, a := range audit.Entries {
		actions[a.Action] = true
		if a.Actor.Kind == "key" && (a.Actor.Address == "" || a.RequestID == "") {
			t.Errorf("audit entry without address or request id: %+v", a)
		}
	}
	if !actions["key.create"] || !actions["key.revoke"] {
		t.Errorf("audit trail %v lacks key.create or key.revoke", actions)
	}
}

func TestRateLimitAnswers429WithRetryAfter(t *testing.T) {
	e := newEnv(t, envOpts{rateLimit: 1, burst: 3})
	var last reply
	for i := 0; i < 5; i++ {
		last = e.do(e.admin, "GET", "/v1/instances", nil)
	}
	if last.status != 429 || last.errCode() != "RATE_LIMITED" || last.header.Get("Retry-After") == "" {
		t.Fatalf("status %d code %s Retry-After %q", last.status, last.errCode(), last.header.Get("Retry-After"))
	}
}

func TestListsPaginateInAStableOrderWithFilters(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := 0; i < 7; i++ {
		e.addMachine(machineOpts{name: fmt.Sprintf("n-%02d", 6-i), running: i%2 == 0})
	}
	e.addMachine(machineOpts{name: "w-1", os: sim.Windows})
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		var page apiv1.InstanceList
		e.mustDo(e.admin, "GET", "/v1/instances?limit=3&namePrefix=n-&cursor="+cursor, nil, 200, &page)
		for _, in := range page.Instances {
			names = append(names, in.Name)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if strings.Join(names, ",") != "n-00,n-01,n-02,n-03,n-04,n-05,n-06" {
		t.Errorf("names %v", names)
	}
	var win apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances?os=windows", nil, 200, &win)
	var stopped apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances?state=STOPPED", nil, 200, &stopped)
	if len(win.Instances) != 1 || len(stopped.Instances) != 4 {
		t.Errorf("os=windows: %d, state=STOPPED: %d", len(win.Instances), len(stopped.Instances))
	}
	if r := e.do(e.admin, "GET", "/v1/instances?cursor=garbage", nil); r.status != 400 {
		t.Errorf("bad cursor: %d", r.status)
	}
}

func TestEventsStreamOperationItemAndInstanceChangesPerTenant(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "ev", tenant: "blue", running: true})
	other := e.addMachine(machineOpts{name: "ev2", tenant: "red", running: true})
	blue := e.newKey("blue")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events", nil)
	req.SetBasicAuth(blue.id, blue.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(other), Password: goodPW}).ID)
	op := e.wait(blue, e.reset(blue, apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW}).ID)
	seen := map[string]bool{}
	var eventIDs []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !(seen["operation-end"] && seen["item"] && seen["instance"]) {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			eventIDs = append(eventIDs, id)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		switch {
		case ev.Operation != nil && ev.Operation.Tenant != "blue", ev.Instance != nil && ev.Instance.Tenant != "blue",
			ev.Item != nil && ev.Item.InstanceID == other.ID:
			t.Fatalf("blue received red's event %s", data)
		case ev.Operation != nil && ev.Operation.ID == op.ID && ev.Operation.Status == apiv1.OperationSucceeded:
			seen["operation-end"] = true
		case ev.Item != nil && ev.Item.OperationID == op.ID:
			seen["item"] = true
		case ev.Instance != nil && ev.Instance.ID == in.ID:
			seen["instance"] = true
		}
		if strings.Contains(data, goodPW) {
			t.Fatal("an event holds the password")
		}
	}
	if !seen["operation-end"] || !seen["item"] || !seen["instance"] {
		t.Fatalf("events seen: %v (%v)", seen, sc.Err())
	}
	if len(eventIDs) < 2 {
		t.Fatalf("events carry ids %q, want at least two", eventIDs)
	}
	// Resuming after the first event replays the rest from the log: the
	// first event of the new stream is the second of the first one (a
	// server ignoring the header would start at the beginning, or with
	// new events only, which never come).
	req2, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events", nil)
	req2.SetBasicAuth(blue.id, blue.secret)
	req2.Header.Set("Last-Event-ID", eventIDs[0])
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	sc2 := bufio.NewScanner(resp2.Body)
	var resumed string
	for resumed == "" && sc2.Scan() {
		if id, ok := strings.CutPrefix(sc2.Text(), "id: "); ok {
			resumed = id
		}
	}
	if resumed != eventIDs[1] {
		t.Errorf("after Last-Event-ID %s the stream resumed at %q, want %s (%v)", eventIDs[0], resumed, eventIDs[1], sc2.Err())
	}
}

func TestBootstrapWritesPrivateCredentialsAndNeverPrintsTheSecret(t *testing.T) {
	e := newEnv(t, envOpts{})
	path := filepath.Join(e.dataDir, "admin-credentials")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin-credentials mode %v, %v", st.Mode().Perm(), err)
	}
	if !strings.Contains(e.out.String(), path) {
		t.Errorf("the start-up message does not name %s: %q", path, e.out.String())
	}
	if strings.Contains(e.out.String(), e.admin.secret) || strings.Contains(e.logs.String(), e.admin.secret) {
		t.Error("the admin secret was printed or logged")
	}
	if e.admin.id == "" || len(e.admin.secret) < 32 {
		t.Errorf("credentials %+v", e.admin)
	}
}

func TestBootstrapUsesTheAdminKeyFromTheEnvironment(t *testing.T) {
	t.Setenv("FLEETPASS_ADMIN_KEY_ID", "fpk-automation")
	t.Setenv("FLEETPASS_ADMIN_KEY_SECRET", "s3cret-from-the-environment")
	e := newEnv(t, envOpts{})
	if e.admin.id != "fpk-automation" || e.admin.secret != "s3cret-from-the-environment" {
		t.Fatalf("credentials %+v", e.admin)
	}
	if r := e.do(e.admin, "GET", "/v1/instances", nil); r.status != 200 {
		t.Errorf("env key: %d", r.status)
	}
}

func TestEveryAnswerCarriesARequestID(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v1/instances", "/v1/nope"} {
		r := e.do(e.admin, "GET", path, nil)
		if r.header.Get("X-Request-Id") == "" {
			t.Errorf("%s: no X-Request-Id", path)
		}
	}
	r := e.do(e.admin, "GET", "/v1/instances", nil, "X-Request-Id", "client-chosen-1")
	if r.header.Get("X-Request-Id") != "client-chosen-1" {
		t.Errorf("a well-formed client request id is not kept")
	}
}

func TestMetricsCountOperationsAndItems(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "m", running: true})
	e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW}).ID)
	r := e.do(key{}, "GET", "/metrics", nil)
	// Every series carries the replica's id, so several replicas' series
	// stay apart when federated.
	for _, want := range []string{
		`(?m)^fleetpass_operations_total\{kind="reset_password",replica="r-[0-9a-f]+",status="succeeded"\} 1$`,
		`(?m)^fleetpass_items_total\{code="",kind="reset_password",replica="r-[0-9a-f]+",result="succeeded"\} 1$`,
		`fleetpass_step_duration_seconds_bucket`, `(?m)^fleetpass_queue_depth\{replica="r-[0-9a-f]+"\}`,
		`fleetpass_http_requests_total`, `(?m)^go_goroutines\{replica="r-[0-9a-f]+"\}`,
	} {
		if !regexp.MustCompile(want).Match(r.body) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^fleetpass_\w+(\{[^}]*\})? `).FindAll(r.body, -1); len(m) == 0 {
		t.Error("no fleetpass series")
	} else {
		for _, line := range m {
			if !strings.Contains(string(line), `replica="`) {
				t.Errorf("a series without the replica label: %s", line)
			}
		}
	}
}

func TestALockedDataDirectoryIsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, err := server.Open(context.Background(), server.Config{Listen: "127.0.0.1:0", DataDir: e.dataDir})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second server on the same data directory: %v", err)
	}
}

func TestInstancesShowTheirResetMethodsAndItemsTheMethodUsed(t *testing.T) {
	e := newEnv(t, envOpts{})
	running := e.addMachine(machineOpts{name: "m-1", running: true})
	stopped := e.addMachine(machineOpts{name: "m-2"})
	// The sim fleet has guest channels and no disks to edit.
	if got := e.instance(e.admin, running.ID).ResetMethods; fmt.Sprint(got) != "[guest]" {
		t.Fatalf("resetMethods = %v, want [guest]", got)
	}
	var list apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances", nil, http.StatusOK, &list)
	for _, in := range list.Instances {
		if fmt.Sprint(in.ResetMethods) != "[guest]" {
			t.Errorf("listed %s with resetMethods %v", in.Name, in.ResetMethods)
		}
	}
	r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(running, stopped),
		Method: apiv1.MethodDisk, ForceStop: true, Password: goodPW})
	if r.status != http.StatusConflict || r.errCode() != "RESET_METHOD_UNSUPPORTED" {
		t.Fatalf("status %d code %s, want 409 RESET_METHOD_UNSUPPORTED", r.status, r.errCode())
	}
	if got := r.errBody().Error.Details["instanceIds"]; fmt.Sprint(got) != fmt.Sprint(ids(running, stopped)) {
		t.Errorf("details.instanceIds = %v", got)
	}
	if msg := r.errBody().Error.Message; !strings.Contains(msg, "cannot edit disks") {
		t.Errorf("message %q does not say why", msg)
	}
	assertNoOperations(t, e)

	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(running, stopped), ForceStop: true, Password: goodPW}).ID)
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("reset: %s %+v", op.Status, op.Items)
	}
	for _, it := range op.Items {
		if it.Method != apiv1.MethodGuest {
			t.Errorf("%s (%s): method %q, want guest", it.InstanceName, it.Mode, it.Method)
		}
	}
}

// A client that follows an operation it has just accepted connects after
// the operation began, or even ended: the stream still tells the whole
// story, from the acceptance on. Another tenant naming the operation gets
// none of it.
func TestAStreamFollowingAnOperationStartsAtItsAcceptance(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "late", tenant: "blue", running: true})
	blue, red := e.newKey("blue"), e.newKey("red")
	op := e.wait(blue, e.reset(blue, apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW}).ID)
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s", op.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	follow := func(k key) (*bufio.Scanner, func()) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/events?operationId="+op.ID, nil)
		req.SetBasicAuth(k.id, k.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return bufio.NewScanner(resp.Body), func() { resp.Body.Close() }
	}
	sc, closeBlue := follow(blue)
	defer closeBlue()
	var got []string
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		if ev.Operation != nil {
			got = append(got, "operation:"+string(ev.Operation.Status))
			if ev.Operation.Status != apiv1.OperationRunning {
				break
			}
		}
		if ev.Item != nil && len(got) > 0 && !strings.HasPrefix(got[len(got)-1], "item") {
			got = append(got, "item")
		}
	}
	want := "operation:running item operation:succeeded"
	if strings.Join(got, " ") != want {
		t.Errorf("the stream told %q, want %q (%v)", got, want, sc.Err())
	}

	// Red's stream would show blue's events at once, from the log: a
	// second of nothing is a stream that started where red's own would.
	scRed, closeRed := follow(red)
	lines := make(chan string)
	go func() {
		defer close(lines)
		for scRed.Scan() {
			lines <- scRed.Text()
		}
	}()
	timer := time.After(time.Second)
	for quiet := false; !quiet; {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "data: ") || strings.HasPrefix(l, "id: ") {
				t.Fatalf("red followed blue's operation: %s", l)
			}
		case <-timer:
			quiet = true
		}
	}
	closeRed()
	for range lines {
	}
}

// A position that is not an event id is refused in the API's own error
// format before the stream opens, in the header or the query alike.
func TestAStreamPositionThatIsNotAnEventIDIsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct{ header, query string }{
		{header: "abc"}, {header: "-1"}, {header: "1e3"}, {query: "abc"}, {query: "-5"},
	} {
		path := "/v1/events"
		if tc.query != "" {
			path += "?after=" + tc.query
		}
		// A stream opened by mistake ends with the context, not the test.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+path, nil)
		req.SetBasicAuth(e.admin.id, e.admin.secret)
		if tc.header != "" {
			req.Header.Set("Last-Event-ID", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb apiv1.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if resp.StatusCode != 400 || eb.Error.Code != core.CodeInvalidArgument {
			t.Errorf("Last-Event-ID %q, after %q: %d %s, want 400 %s", tc.header, tc.query, resp.StatusCode, body, core.CodeInvalidArgument)
		}
	}
}
