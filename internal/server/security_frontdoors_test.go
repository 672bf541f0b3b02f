package server_test

// Regression tests of the front doors (issue 10, items 9-12 and 14-22):
// each is named after the failure it pins. They drive a whole server in
// process through its public HTTP interfaces, as a client would.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
)

// opCount is the number of operations k may see.
func (e *env) opCount(k key) int {
	e.t.Helper()
	var list apiv1.OperationList
	e.mustDo(k, "GET", "/v1/operations?limit=200", nil, http.StatusOK, &list)
	return len(list.Operations)
}

// ---- item 9: ZC2 replays

func TestSecurity_IdenticalSignedReadsWithinOneSecondAreServed(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	at := time.Now()
	body := `{"instanceIds": ["` + in.ID + `"]}`
	for _, path := range []string{"/api/v2/vm", "/api/v2/vm", "/api/v2/vm"} {
		resp := actionOK(t, e.sendAction(actionCall{key: k, path: path, action: "DescribeInstancesStatus", body: body, at: at}))
		if resp["totalCount"] != float64(1) {
			t.Fatalf("poll answered %v", resp)
		}
	}
}

func TestSecurity_IdenticalMutatingRequestRunsOnceAndRepeatsTheFirstAnswer(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	call := actionCall{key: k, path: "/api/v2/zec", action: "StopInstances", body: `{"instanceIds": ["` + in.ID + `"]}`, at: time.Now()}
	first := e.sendAction(call)
	firstResp := actionOK(t, first)
	for range 2 {
		again := e.sendAction(call)
		resp := actionOK(t, again)
		if resp["operationId"] != firstResp["operationId"] || resp["requestId"] != firstResp["requestId"] {
			t.Fatalf("a repeat answered %v, want the first answer %v", resp, firstResp)
		}
		if again.header.Get("X-Request-Id") != first.header.Get("X-Request-Id") {
			t.Fatalf("a repeat carries request id %q, want the first one's %q", again.header.Get("X-Request-Id"), first.header.Get("X-Request-Id"))
		}
	}
	if n := e.opCount(k); n != 1 {
		t.Fatalf("%d operations after three identical StopInstances, want 1", n)
	}
	e.wait(k, firstResp["operationId"].(string))
}

func TestSecurity_ASignatureUsedForAReadCannotBecomeAStop(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	at := time.Now()
	body := `{"instanceIds": ["` + in.ID + `"]}`
	actionOK(t, e.sendAction(actionCall{key: k, action: "DescribeInstances", body: body, at: at}))
	for _, c := range []struct{ path, action string }{
		{"/api/v2/vm", "StopInstances"},
		{"/api/v2/zec", "StopInstances"},
		{"/api/v2/zec", "DescribeInstances"},
	} {
		r := e.sendAction(actionCall{key: k, path: c.path, action: c.action, body: body, at: at})
		actionError(t, r, http.StatusUnauthorized, "AUTH_FAILURE_SIGNATURE_REUSED")
	}
	if n := e.opCount(k); n != 0 {
		t.Fatalf("%d operations: the captured read ran as a stop", n)
	}
	if got := e.instance(k, in.ID).State; got != apiv1.StateRunning {
		t.Fatalf("state %s, want RUNNING", got)
	}
}

func TestSecurity_ARefusedRequestDoesNotUseUpItsSignature(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	const pw = "Both+Paths1"
	at := time.Now()
	body := resetBody(pw, in.ID)
	// The VM path resets stopped instances only: refused, nothing ran.
	actionError(t, e.sendAction(actionCall{key: k, path: "/api/v2/vm", action: "ResetInstancesPassword", body: body, at: at}),
		http.StatusBadRequest, "OPERATION_DENIED_INSTANCE_NOT_STOPPED")
	// The same body, the same second, on the ZEC path: served.
	resp := actionOK(t, e.sendAction(actionCall{key: k, path: "/api/v2/zec", action: "ResetInstancesPassword", body: body, at: at}))
	if op := e.wait(k, resp["operationId"].(string)); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %+v", op.Status, op.Items)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Fatal("the new password does not work")
	}
	e.assertNoSecret(pw)
}

func TestSecurity_AnIdenticalRequestToAnotherReplicaIsAnsweredFromTheDatabase(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	call := actionCall{key: k, path: "/api/v2/zec", action: "RebootInstances", body: `{"instanceIds": ["` + in.ID + `"]}`, at: time.Now()}
	first := actionOK(t, e.sendAction(call))
	e.wait(k, first["operationId"].(string))
	// The record is a row, not this process's memory: what another
	// replica reads is what this one wrote.
	var scope string
	var answered int
	if err := e.srv.Store().DB.QueryRow(`SELECT scope, answered FROM signed_requests`).Scan(&scope, &answered); err != nil || answered != 1 ||
		scope != "/api/v2/zec RebootInstances" {
		t.Fatalf("signed request row: scope %q answered %v (%v)", scope, answered, err)
	}
	if again := actionOK(t, e.sendAction(call)); again["operationId"] != first["operationId"] {
		t.Fatalf("the repeat ran again: %v", again)
	}
}

// ---- item 10: rate limits at every front door

func TestSecurity_RateLimitsApplyAtEveryFrontDoorInItsOwnFormat(t *testing.T) {
	e := newEnv(t, envOpts{rateLimit: 0.01, burst: 3})
	k1, k2, k3 := e.newKey("acme"), e.newKey("acme"), e.newKey("acme")
	t.Run("action API", func(t *testing.T) {
		k := k1
		var last reply
		for range 4 {
			last = e.sendAction(actionCall{key: k, action: "DescribeInstances", body: "{}"})
		}
		actionError(t, last, http.StatusTooManyRequests, "REQUEST_LIMIT_EXCEEDED")
		if s, err := strconv.Atoi(last.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q", last.header.Get("Retry-After"))
		}
	})
	t.Run("bare-metal API", func(t *testing.T) {
		k := k2
		var r reply
		var a bmAnswer
		for range 4 {
			r, a = e.sendBM(bmCall{key: k, params: url.Values{"Action": {"DescribeDeviceList"}}})
		}
		bmError(t, r, a, http.StatusOK, 4400)
		if a.CodeDesc != "RequestLimitExceeded" || r.header.Get("Retry-After") == "" {
			t.Fatalf("got %s, Retry-After %q", r.body, r.header.Get("Retry-After"))
		}
	})
	t.Run("one budget across doors", func(t *testing.T) {
		k := k3
		e.mustDo(k, "GET", "/v1/instances", nil, http.StatusOK, nil)
		actionOK(t, e.sendAction(actionCall{key: k, action: "DescribeInstances", body: "{}"}))
		actionOK(t, e.sendAction(actionCall{key: k, path: "/api/v2/zec", action: "DescribeInstances", body: "{}"}))
		_, a := e.sendBM(bmCall{key: k, params: url.Values{"Action": {"DescribeDeviceList"}}})
		if a.Code != 4400 {
			t.Fatalf("a third door multiplied the key's budget: %+v", a)
		}
	})
}

// ---- item 11: Authorization schemes

func TestSecurity_AuthorizationSchemeNamesAreCaseInsensitive(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		r := e.do(key{}, "GET", "/v1/instances", nil, "Authorization", scheme+" "+k.id+":"+k.secret)
		if r.status != http.StatusOK {
			t.Errorf("%s: status %d: %s", scheme, r.status, r.body)
		}
	}
	r := e.do(key{}, "GET", "/v1/instances", nil, "Authorization", "basic "+basicCreds(k))
	if r.status != http.StatusOK {
		t.Errorf("basic: status %d: %s", r.status, r.body)
	}
	r = e.do(key{}, "GET", "/v1/instances", nil, "Authorization", "Bearerx "+k.id+":"+k.secret)
	if r.status != http.StatusUnauthorized {
		t.Errorf("an unknown scheme was accepted: %d", r.status)
	}
}

// ---- item 17: bare-metal task ids

func TestSecurity_BareMetalTaskIDsCountOnlyItsOwnOperationsPerTenant(t *testing.T) {
	e := newEnv(t, envOpts{})
	acme, beta := e.newKey("acme"), e.newKey("beta")
	a := e.addMachine(machineOpts{name: "a", running: true})
	b := e.addMachine(machineOpts{name: "b", tenant: "beta", running: true})
	// Operations made through other front doors take no task id.
	e.wait(acme, e.reset(acme, apiv1.PasswordReset{InstanceIDs: []string{a.ID}, Generate: true}).ID)
	task := func(k key, id, pw string) int64 {
		t.Helper()
		_, ans := e.sendBM(bmCall{key: k, params: devicePasswd(pw, id)})
		var d struct{ TaskID int64 }
		if err := json.Unmarshal(ans.Data, &d); ans.Code != 0 || err != nil {
			t.Fatalf("%+v", ans)
		}
		e.pollTask(k, "DescribeOperationResult", d.TaskID)
		return d.TaskID
	}
	if n := task(acme, a.ID, "abc123456"); n != 1 {
		t.Fatalf("acme's first bare-metal task is %d, want 1", n)
	}
	if n := task(beta, b.ID, "abc123456"); n != 1 {
		t.Fatalf("beta's first bare-metal task is %d, want 1 (numbered per tenant)", n)
	}
	if n := task(acme, a.ID, "xyz987654"); n != 2 {
		t.Fatalf("acme's second bare-metal task is %d, want 2", n)
	}
	// beta's task 2 does not exist, whoever else has a task 2.
	_, ans := e.sendBM(bmCall{key: beta, params: url.Values{"Action": {"DescribeOperationResult"}, "taskId": {"2"}}})
	if ans.Code != 10001 {
		t.Fatalf("beta's task 2: %+v", ans)
	}
}

func basicCreds(k key) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(k.id, k.secret)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// ---- item 12: control characters at input

func TestSecurity_ControlCharactersAreRefusedInNamesAtInput(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	for _, bad := range []string{"clear\x1b[2J", "bell\x07", "del\x7f", "c1\u009b31m", "nl\nname", "nul\x00"} {
		t.Run(strconv.Quote(bad), func(t *testing.T) {
			for _, c := range []struct {
				path string
				body any
			}{
				{"/v1/instances", apiv1.InstanceCreate{Name: bad, OSType: "linux",
					Power: apiv1.DriverLink{Driver: "sim", Address: "m-x"}, Guest: apiv1.DriverLink{Driver: "sim", Address: "m-x"}}},
				{"/v1/agent-tokens", apiv1.AgentTokenCreate{InstanceName: bad}},
				{"/v1/keys", apiv1.KeyCreate{Name: bad}},
				{"/v1/hosts", apiv1.HostCreate{URI: "test:///default", Name: bad}},
			} {
				who := k
				if c.path == "/v1/instances" || c.path == "/v1/hosts" {
					who = e.admin // operator-only calls: the name check must still refuse
				}
				r := e.do(who, "POST", c.path, c.body)
				if r.status != http.StatusBadRequest || r.errCode() != "INVALID_ARGUMENT" ||
					!strings.Contains(strings.ToLower(r.errBody().Error.Message), "name") {
					t.Errorf("POST %s with a control character: %d %s", c.path, r.status, r.body)
				}
			}
			// An agent's host name too.
			var tok apiv1.AgentTokenCreated
			e.mustDo(k, "POST", "/v1/agent-tokens", apiv1.AgentTokenCreate{}, http.StatusCreated, &tok)
			r := e.do(key{}, "POST", "/agent/v1/enroll", map[string]any{"token": tok.Token, "hostname": bad, "os": "linux",
				"version": "1", "publicKey": make([]byte, 32)})
			if r.status != http.StatusBadRequest {
				t.Errorf("enrolment with hostname %q: %d %s", bad, r.status, r.body)
			}
		})
	}
	var list apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances", nil, http.StatusOK, &list)
	if len(list.Instances) != 0 {
		t.Fatalf("instances were registered: %+v", list.Instances)
	}
}

// ---- item 14: GET / in a browser

func TestSecurity_ABrowserOpeningTheRootIsSentToTheConsole(t *testing.T) {
	e := newEnv(t, envOpts{})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(accept string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+"/", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// What Chromium and Firefox send for a typed address.
	browser := get("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8")
	if browser.StatusCode != http.StatusFound || browser.Header.Get("Location") != "/console/" {
		t.Fatalf("a browser got %d Location %q, want 302 to /console/", browser.StatusCode, browser.Header.Get("Location"))
	}
	for _, accept := range []string{"", "*/*", "application/json"} {
		if r := get(accept); r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("Accept %q: %d %s, want the plain answer", accept, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
}

// ---- item 22: API nits

func TestSecurity_AnUnknownListFilterIsRefusedNotAnsweredEmpty(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.addMachine(machineOpts{name: "web", running: true})
	for _, path := range []string{"/v1/instances?state=ASLEEP", "/v1/instances?state=runnin", "/v1/instances?os=plan9",
		"/v1/operations?status=done"} {
		if r := e.do(e.admin, "GET", path, nil); r.status != http.StatusBadRequest || r.errCode() != "INVALID_ARGUMENT" {
			t.Errorf("GET %s: %d %s, want 400 INVALID_ARGUMENT", path, r.status, r.body)
		}
	}
	// Known values in any case still filter.
	var list apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances?state=running", nil, http.StatusOK, &list)
	if len(list.Instances) != 1 {
		t.Fatalf("state=running listed %d instances", len(list.Instances))
	}
}

// nullArrays reports the paths of JSON nulls in v where a list belongs
// (every null, since the API's optional fields are omitted instead).
func nullArrays(path string, v any) []string {
	var out []string
	switch x := v.(type) {
	case nil:
		return []string{path}
	case map[string]any:
		for k, c := range x {
			out = append(out, nullArrays(path+"."+k, c)...)
		}
	case []any:
		for i, c := range x {
			out = append(out, nullArrays(path+"["+strconv.Itoa(i)+"]", c)...)
		}
	}
	return out
}

// listAt walks body's JSON objects along path and returns what is there.
func listAt(body []byte, path ...string) (any, bool) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil, false
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// wantEmptyList fails t unless body holds, at path, a list that is there
// and empty: [] (not null, not left out), with no null anywhere else.
func wantEmptyList(t *testing.T, what string, body []byte, path ...string) {
	t.Helper()
	v, ok := listAt(body, path...)
	if l, isList := v.([]any); !ok || !isList || len(l) != 0 {
		t.Errorf("%s: %s is %v (present: %v), want []: %s", what, strings.Join(path, "."), v, ok, body)
	}
	var all any
	_ = json.Unmarshal(body, &all)
	if nulls := nullArrays("", all); len(nulls) > 0 {
		t.Errorf("%s: null at %v: %s", what, nulls, body)
	}
}

// Every list of every front door is [] when it is empty, never null and
// never left out: clients iterate over it without a check. Each list is
// asked for by a caller for whom it is empty (a tenant with nothing in
// it), so a list written as null, or omitted, fails here; lists that are
// never empty (the caller's own key, tenant or console user) are checked
// for nulls in what they hold. A native GET route that lists and is not in
// the table below is still checked for nulls.
func TestSecurity_ListsAreEmptyArraysNeverNull(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("empty")
	native := []struct {
		path, field string
		// full: never empty for this caller; only nulls are looked for.
		full bool
	}{
		{"/v1/instances", "instances", false},
		{"/v1/instances?state=ERROR", "instances", false},
		{"/v1/operations", "operations", false},
		{"/v1/hosts", "hosts", false},
		{"/v1/agent-tokens", "tokens", false},
		{"/v1/audit", "entries", true},     // the creation of the caller's key
		{"/v1/keys", "keys", true},         // the caller's own key
		{"/v1/tenants", "tenants", true},   // admin only, and the admin's tenant is one
		{"/v1/replicas", "replicas", true}, // admin only, and this replica is one
	}
	seen := map[string]bool{}
	for _, c := range native {
		seen[strings.SplitN(c.path, "?", 2)[0]] = true
		r := e.do(k, "GET", c.path, nil)
		if r.status == http.StatusForbidden {
			r = e.do(e.admin, "GET", c.path, nil)
		}
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", c.path, r.status, r.body)
		}
		if c.full {
			v, ok := listAt(r.body, c.field)
			if l, isList := v.([]any); !ok || !isList || len(l) == 0 {
				t.Errorf("GET %s: %s is %v, want the caller's own", c.path, c.field, v)
			}
			var all any
			_ = json.Unmarshal(r.body, &all)
			if nulls := nullArrays("", all); len(nulls) > 0 {
				t.Errorf("GET %s: null at %v: %s", c.path, nulls, r.body)
			}
			continue
		}
		wantEmptyList(t, "GET "+c.path, r.body, c.field)
	}
	// Routes this table does not know: no null in what they answer.
	for _, rt := range (&nativeapi.API{}).Routes() {
		if rt.Method != "GET" || strings.Contains(rt.Pattern, "{") || rt.Pattern == "/v1/events" || seen[rt.Pattern] {
			continue
		}
		r := e.do(e.admin, "GET", rt.Pattern, nil)
		var all any
		if err := json.Unmarshal(r.body, &all); err != nil || r.status != http.StatusOK {
			t.Errorf("GET %s: %d %s", rt.Pattern, r.status, r.body)
			continue
		}
		if nulls := nullArrays("", all); len(nulls) > 0 {
			t.Errorf("GET %s: null at %v: %s", rt.Pattern, nulls, r.body)
		}
	}

	// The console: its own list, and the native lists through a session.
	e.consoleUser("empty-viewer", "empty", false)
	c := signInClient(t, e, "empty-viewer", consolePassword, "")
	for _, l := range []struct{ path, field string }{{"/console/api/v1/instances", "instances"},
		{"/console/api/v1/operations", "operations"}, {"/console/api/users", "users"}} {
		resp, err := c.client.Get(e.url + l.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("console GET %s: %d %s", l.path, resp.StatusCode, body)
		}
		if l.field == "users" {
			// The caller is one; nothing in it is null.
			var all any
			_ = json.Unmarshal(body, &all)
			if v, _ := listAt(body, "users"); v == nil || len(nullArrays("", all)) > 0 {
				t.Errorf("console users: %s", body)
			}
			continue
		}
		wantEmptyList(t, "console GET "+l.path, body, l.field)
	}

	// The dialects' lists, for a tenant with no instances.
	for _, path := range []string{"/api/v2/vm", "/api/v2/zec"} {
		for _, action := range []string{"DescribeInstances", "DescribeInstancesStatus"} {
			r := e.sendAction(actionCall{key: k, path: path, action: action, body: "{}"})
			wantEmptyList(t, "action API "+path+" "+action, r.body, "response", "dataSet")
		}
	}
	r, _ := e.sendBM(bmCall{key: k, params: url.Values{"Action": {"DescribeDeviceList"}}})
	wantEmptyList(t, "bare-metal API DescribeDeviceList", r.body, "data", "deviceList")
	for _, c := range []struct{ version, action, field string }{
		{"2017-03-12", "DescribeInstances", "InstanceSet"},
		{"2018-04-23", "DescribeDevices", "DeviceInfoSet"},
	} {
		a := e.sendTC(tcCall{key: k, version: c.version, action: c.action, body: "{}"})
		body, _ := json.Marshal(map[string]any{"Response": a.Response})
		wantEmptyList(t, "Tencent "+c.action, body, "Response", c.field)
	}

	// Lists inside records: an operation and its instance.
	in := e.addMachine(machineOpts{name: "web", running: true})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Generate: true}).ID)
	for _, path := range []string{"/v1/operations/" + op.ID, "/v1/instances/" + in.ID, "/v1/instances", "/v1/operations"} {
		r := e.do(e.admin, "GET", path, nil)
		var v any
		_ = json.Unmarshal(r.body, &v)
		if nulls := nullArrays("", v); len(nulls) > 0 || r.status != http.StatusOK {
			t.Errorf("GET %s: %d, null at %v: %s", path, r.status, nulls, r.body)
		}
	}
}

func TestSecurity_AttemptsCountTheTriesOfAnItem(t *testing.T) {
	e := newEnv(t, envOpts{})
	ok := e.addMachine(machineOpts{name: "ok", running: true})
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: []string{ok.ID}, Generate: true}).ID)
	if it := itemOf(op, ok.ID); it.State != apiv1.ItemSucceeded || it.Attempts != 1 {
		t.Fatalf("an item that succeeded at once shows %d attempts, want 1: %+v", it.Attempts, it)
	}
}

// ---- item 18: a graceful shutdown that times out

func TestSecurity_ATimedOutShutdownLeavesTheInstanceRunningAndConsentIsAskedAgain(t *testing.T) {
	e := newEnv(t, envOpts{})
	hung := e.addMachine(machineOpts{name: "hung", running: true, faults: sim.Faults{HangShutdown: true, AgentDead: true}})
	var stop apiv1.Operation
	e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "stop", InstanceIDs: ids(hung), StopMode: "soft"}, http.StatusAccepted, &stop)
	if it := e.wait(e.admin, stop.ID).Items[0]; it.ErrorCode != "SHUTDOWN_TIMEOUT" {
		t.Fatalf("soft stop of a hung guest: %+v", it)
	}
	if got := e.instance(e.admin, hung.ID).State; got != apiv1.StateRunning {
		t.Fatalf("state %s after the timed-out shutdown, want RUNNING (what the machine is)", got)
	}
	// Its agent is dead, so auto means offline, which must shut it down:
	// that needs consent again.
	r := e.do(e.admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(hung), Mode: apiv1.ModeAuto, Password: goodPW})
	if r.status != http.StatusConflict || r.errCode() != "FORCED_SHUTDOWN_CONSENT_REQUIRED" {
		t.Fatalf("auto reset after the timed-out shutdown: %d %s", r.status, r.body)
	}
}

// TestSecurity_TheDocsActionExamplePastedAsOneBlockWorks runs the signed
// example of docs/api-action.md as a reader pastes it: every request in the
// same second (a fixed `date`), the VM-path refusal of a running instance
// followed by the same body on the ZEC path, and a list asked twice.
func TestSecurity_TheDocsActionExamplePastedAsOneBlockWorks(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-test-deps.sh): %v", tool, err)
		}
	}
	e := newEnv(t, envOpts{})
	stopped := e.addMachine(machineOpts{name: "cache-01", tenant: core.AdminTenant})
	running := e.addMachine(machineOpts{name: "web-01", tenant: core.AdminTenant, running: true})
	bin := t.TempDir()
	// One second for the whole block, as a fast paste gets.
	if err := os.WriteFile(filepath.Join(bin, "date"), []byte("#!/bin/sh\necho "+strconv.FormatInt(time.Now().Unix(), 10)+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../../docs/examples/sign-action.sh")
	if err != nil {
		t.Fatal(err)
	}
	block := strings.NewReplacer("SCRIPT", script, "@stopped@", stopped.ID, "@running@", running.ID).Replace(`
echo '{"status": "STOPPED", "pageSize": 2}' | SCRIPT vm DescribeInstances
echo '{"status": "STOPPED", "pageSize": 2}' | SCRIPT vm DescribeInstances
printf '%s' '{"instanceIds": ["@stopped@"], "password": "Demo(2)pass"}' | SCRIPT vm ResetInstancesPassword
printf '%s' '{"instanceIds": ["@running@"], "password": "Demo(2)pass"}' | SCRIPT vm ResetInstancesPassword
printf '%s' '{"instanceIds": ["@running@"], "password": "Demo(2)pass"}' | SCRIPT zec ResetInstancesPassword
`)
	cmd := exec.Command("sh", "-c", block)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FLEETPASS_DATA="+e.dataDir, "FLEETPASS_URL="+e.http.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d answers: %s", len(lines), out)
	}
	for i, want := range []string{`"totalCount":1`, `"totalCount":1`, `"operationId"`, "OPERATION_DENIED_INSTANCE_NOT_STOPPED", `"operationId"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("answer %d: %s, want %s", i+1, lines[i], want)
		}
	}
	var list apiv1.OperationList
	e.mustDo(e.admin, "GET", "/v1/operations", nil, http.StatusOK, &list)
	for _, op := range list.Operations {
		e.wait(e.admin, op.ID)
	}
	if len(list.Operations) != 2 || !e.checkPassword(stopped, "root", "Demo(2)pass") || !e.checkPassword(running, "root", "Demo(2)pass") {
		t.Fatalf("%d operations; both instances must have the new password", len(list.Operations))
	}
}
