package server_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
)

// ---- test-side signers, written from docs/design.md#signatures and independent of
// internal/sign: a bug shared by the server's verifier and its own signer
// would not show in the sign packages' round trips, and shows here.

func testZC2Authorization(keyID, secret, timestamp, contentType, host string, body []byte) string {
	hexSHA := func(b []byte) string {
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	canonical := strings.Join([]string{"POST", "/", "", "content-type:" + contentType, "host:" + host, "",
		"content-type;host", hexSHA(body)}, "\n")
	toSign := "ZC2-HMAC-SHA256\n" + timestamp + "\n" + hexSHA([]byte(canonical))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(toSign))
	return "ZC2-HMAC-SHA256 Credential=" + keyID + ", SignedHeaders=content-type;host, Signature=" + hex.EncodeToString(m.Sum(nil))
}

func testCAPISignature(method, host, path string, params url.Values, secret string) string {
	var names []string
	for k := range params {
		if k != "Signature" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	pairs := make([]string, len(names))
	for i, k := range names {
		pairs[i] = k + "=" + params.Get(k)
	}
	newHash := sha1.New
	if params.Get("SignatureMethod") == "HmacSHA256" {
		newHash = sha256.New
	}
	m := hmac.New(func() hash.Hash { return newHash() }, []byte(secret))
	m.Write([]byte(method + host + path + "?" + strings.Join(pairs, "&")))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestTestSignersMatchKnownVectors pins the test-side signers to vectors
// computed with openssl from the spec's formulas, so they cannot drift
// along with the code under test.
func TestTestSignersMatchKnownVectors(t *testing.T) {
	body := "{\"instanceIds\": [\"instanceId1\", \"instanceId2\"], \"password\": \"Example`123\"}"
	got := testZC2Authorization("AKIDEXAMPLE", "secretexample", "1700000000", "application/json", "console.zenlayer.com", []byte(body))
	want := "ZC2-HMAC-SHA256 Credential=AKIDEXAMPLE, SignedHeaders=content-type;host, Signature=27cfb923bfa7ccb43b7f0861d7383d1aef4cb7cce14532ab28fc924c63b29449"
	if got != want {
		t.Errorf("zc2:\n got %s\nwant %s", got, want)
	}
	params := url.Values{"Action": {"ResetDevicePasswd"}, "Nonce": {"11886"}, "SecretId": {"AKIDEXAMPLE"},
		"Timestamp": {"1465185768"}, "instanceIds.1": {"cpm-1"}, "instanceIds.2": {"cpm-2"}, "passwd": {"abc123456"}}
	if got := testCAPISignature("GET", "bm.api.qcloud.com", "/v2/index.php", params, "secretexample"); got != "bAqOE1t2VfWBPXTQqoRe5d14Omg=" {
		t.Errorf("capi2 HmacSHA1: got %s", got)
	}
	params.Set("SignatureMethod", "HmacSHA256")
	if got := testCAPISignature("GET", "bm.api.qcloud.com", "/v2/index.php", params, "secretexample"); got != "NI7vkHh0Yl72OddsLUegr8ai02XYH3e30OrHi/5gT6A=" {
		t.Errorf("capi2 HmacSHA256: got %s", got)
	}
}

// ---- action API helpers

// The action API's signature covers the body and the second it was made,
// not the path or action: two identical requests in one second are one
// signature, and the second is refused as a replay (docs/api-action.md).
// So each request a test signs gets a second of its own within the
// five-minute window, unless the test sets one on purpose: a second no
// earlier request with the same key, content type and body used.
var signings struct {
	mu   sync.Mutex
	used map[string]map[int64]bool
}

func distinctTime(t testing.TB, keyID, contentType, body string) time.Time {
	t.Helper()
	signings.mu.Lock()
	defer signings.mu.Unlock()
	if signings.used == nil {
		signings.used = map[string]map[int64]bool{}
	}
	id := keyID + "\x00" + contentType + "\x00" + body
	used := signings.used[id]
	if used == nil {
		used = map[int64]bool{}
		signings.used[id] = used
	}
	now := time.Now().Unix()
	// Four minutes back at most: the server allows five.
	for back := int64(0); back < 240; back++ {
		if ts := now - back; !used[ts] {
			used[ts] = true
			return time.Unix(ts, 0)
		}
	}
	t.Fatalf("no signing second left for another identical request")
	return time.Time{}
}

type actionCall struct {
	key         key
	path        string // default /api/v2/vm
	action      string
	body        string
	contentType string    // default application/json
	at          time.Time // signing time; zero: now
	method      string    // default POST
	// edit changes the request after it was signed (tampering).
	edit func(*http.Request)
	// signBody, if set, is what the signature covers instead of body.
	signBody *string
}

func (e *env) sendAction(c actionCall) reply {
	e.t.Helper()
	if c.path == "" {
		c.path = "/api/v2/vm"
	}
	if c.contentType == "" {
		c.contentType = "application/json"
	}
	if c.at.IsZero() {
		signed := c.body
		if c.signBody != nil {
			signed = *c.signBody
		}
		c.at = distinctTime(e.t, c.key.id, c.contentType, signed)
	}
	if c.method == "" {
		c.method = "POST"
	}
	req, err := http.NewRequest(c.method, e.url+c.path, strings.NewReader(c.body))
	if err != nil {
		e.t.Fatal(err)
	}
	ts := strconv.FormatInt(c.at.Unix(), 10)
	signed := c.body
	if c.signBody != nil {
		signed = *c.signBody
	}
	req.Header.Set("Content-Type", c.contentType)
	if c.action != "" {
		req.Header.Set("X-ZC-Action", c.action)
	}
	req.Header.Set("X-ZC-Version", "2022-11-20")
	req.Header.Set("X-ZC-Timestamp", ts)
	req.Header.Set("X-ZC-Signature-Method", "ZC2-HMAC-SHA256")
	req.Header.Set("Authorization", testZC2Authorization(c.key.id, c.key.secret, ts, c.contentType, req.URL.Host, []byte(signed)))
	if c.edit != nil {
		c.edit(req)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) reply {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

// actionOK checks the success envelope and returns "response".
func actionOK(t *testing.T, r reply) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	var env struct {
		RequestID string         `json:"requestId"`
		Response  map[string]any `json:"response"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	if env.RequestID == "" || env.RequestID != r.header.Get("X-Request-Id") || env.Response["requestId"] != env.RequestID {
		t.Fatalf("requestId must be the same at both levels and in X-Request-Id: %s", r.body)
	}
	return env.Response
}

// actionError checks the error format: exactly requestId, code and message.
func actionError(t *testing.T, r reply, status int, code string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	if r.status != status || m["code"] != code {
		t.Fatalf("got %d %v, want %d %s: %s", r.status, m["code"], status, code, r.body)
	}
	if len(m) != 3 || m["requestId"] != r.header.Get("X-Request-Id") || m["requestId"] == "" {
		t.Fatalf("error body must be {requestId, code, message}: %s", r.body)
	}
	msg, _ := m["message"].(string)
	if msg == "" {
		t.Fatalf("empty message: %s", r.body)
	}
	return msg
}

func resetBody(pw string, ids ...string) string {
	b, _ := json.Marshal(map[string]any{"instanceIds": ids, "password": pw})
	return string(b)
}

// ---- action API tests

func TestActionAPIDocumentExampleIsRefusedForItsBacktick(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	a := e.addMachine(machineOpts{name: "a"})
	b := e.addMachine(machineOpts{name: "b"})
	example := "{\n  \"instanceIds\": [\"instanceId1\", \"instanceId2\"],\n  \"password\": \"Example`123\"\n}"
	withIDs := strings.NewReplacer("instanceId1", a.ID, "instanceId2", b.ID).Replace(example)
	for _, path := range []string{"/api/v2/vm", "/api/v2/zec"} {
		for name, body := range map[string]string{"as written": example, "with real ids": withIDs} {
			t.Run(path+" "+name, func(t *testing.T) {
				r := e.sendAction(actionCall{key: k, path: path, action: "ResetInstancesPassword", body: body})
				msg := actionError(t, r, http.StatusBadRequest, "INVALID_PASSWORD")
				if !strings.Contains(msg, "charset") || !strings.Contains(msg, "may contain only") {
					t.Errorf("the answer must say which rule broke: %s", msg)
				}
				if strings.Contains(string(r.body), "Example`123") {
					t.Errorf("the answer echoes the password")
				}
			})
		}
	}
	if e.checkPassword(a, "root", "Example`123") {
		t.Error("the refused password was applied")
	}
	e.assertNoSecret("Example`123")
}

func TestActionAPIVMResetsStoppedInstancesAndStartsThem(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	lin := e.addMachine(machineOpts{name: "lin"})
	win := e.addMachine(machineOpts{name: "win", os: sim.Windows})
	const pw = "Fleet(2)pass^ok"
	r := e.sendAction(actionCall{key: k, action: "ResetInstancesPassword", body: resetBody(pw, lin.ID, win.ID)})
	resp := actionOK(t, r)
	opID, _ := resp["operationId"].(string)
	op := e.wait(k, opID)
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %+v", op.Status, op.Items)
	}
	for _, it := range op.Items {
		if it.Mode != apiv1.ModeOffline {
			t.Errorf("%s: mode %s, want offline", it.InstanceID, it.Mode)
		}
	}
	if !e.checkPassword(lin, "root", pw) || !e.checkPassword(win, "Administrator", pw) {
		t.Error("the new password does not work for root and Administrator")
	}
	for _, in := range []apiv1.Instance{lin, win} {
		if got := e.instance(k, in.ID).State; got != apiv1.StateRunning {
			t.Errorf("%s: state %s after the reset, want RUNNING (started again)", in.Name, got)
		}
	}
	e.assertNoSecret(pw)
}

func TestActionAPIZECResetsRunningInstancesOnline(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	const pw = "Zec+Online1"
	resp := actionOK(t, e.sendAction(actionCall{key: k, path: "/api/v2/zec", action: "ResetInstancesPassword", body: resetBody(pw, in.ID)}))
	op := e.wait(k, resp["operationId"].(string))
	if op.Status != apiv1.OperationSucceeded || op.Items[0].Mode != apiv1.ModeOnline {
		t.Fatalf("operation %s, mode %s: %+v", op.Status, op.Items[0].Mode, op.Items)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Error("the new password does not work")
	}
	if got := e.instance(k, in.ID).State; got != apiv1.StateRunning {
		t.Errorf("state %s, want RUNNING (no downtime)", got)
	}
	e.assertNoSecret(pw)
}

func TestActionAPIRefusesInstancesInTheWrongState(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	running := e.addMachine(machineOpts{name: "running", running: true})
	stopped := e.addMachine(machineOpts{name: "stopped"})
	dead := e.addMachine(machineOpts{name: "dead", running: true, faults: sim.Faults{AgentDead: true}})
	other := e.addMachine(machineOpts{name: "theirs", tenant: "other"})
	const pw = "Good1pass"
	for _, c := range []struct {
		name, path, id string
		status         int
		code           string
	}{
		{"vm running", "/api/v2/vm", running.ID, 400, "OPERATION_DENIED_INSTANCE_NOT_STOPPED"},
		{"zec stopped", "/api/v2/zec", stopped.ID, 403, "OPERATION_DENIED_INSTANCE_NOT_RUNNING"},
		{"zec agent dead", "/api/v2/zec", dead.ID, 403, "OPERATION_DENIED_INSTANCE_NOT_RUNNING"},
		{"vm unknown id", "/api/v2/vm", "ins-0000000000", 404, "INVALID_INSTANCE_NOT_FOUND"},
		{"zec unknown id", "/api/v2/zec", "ins-0000000000", 404, "INVALID_INSTANCE_NOT_FOUND"},
		{"vm another tenant's", "/api/v2/vm", other.ID, 404, "INVALID_INSTANCE_NOT_FOUND"},
		{"malformed id", "/api/v2/vm", "not-an-id", 404, "INVALID_INSTANCE_NOT_FOUND"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.sendAction(actionCall{key: k, path: c.path, action: "ResetInstancesPassword", body: resetBody(pw, c.id)})
			msg := actionError(t, r, c.status, c.code)
			if !strings.Contains(msg, c.id) {
				t.Errorf("the message should name the instance: %s", msg)
			}
		})
	}
	e.assertNoSecret(pw)
}

// TestActionAPIErrorCodes produces every other error row of
// docs/api-action.md and checks its status, code and format.
func TestActionAPIErrorCodes(t *testing.T) {
	e := newEnv(t, envOpts{engine: holdingShutdowns()})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "m"})
	slow := e.addMachine(machineOpts{name: "slow", running: true, faults: sim.Faults{HangShutdown: true}})
	okBody := resetBody("Good1pass", in.ID)
	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("ins-%010d", i)
	}
	other := "{\"instanceIds\": [\"" + in.ID + "\"], \"password\": \"Other1pass\"}"
	for _, c := range []struct {
		name   string
		call   actionCall
		status int
		code   string
	}{
		{"missing authorization", actionCall{action: "DescribeInstances", body: "{}",
			edit: func(r *http.Request) { r.Header.Del("Authorization") }}, 401, "AUTH_FAILURE_MISSING_AUTHORIZATION"},
		{"malformed authorization", actionCall{key: k, action: "DescribeInstances", body: "{}",
			edit: func(r *http.Request) { r.Header.Set("Authorization", "ZC2-HMAC-SHA256 Credential=x") }}, 401, "AUTH_FAILURE_INVALID_AUTHORIZATION"},
		{"other signature method", actionCall{key: k, action: "DescribeInstances", body: "{}",
			edit: func(r *http.Request) { r.Header.Set("X-ZC-Signature-Method", "HmacSHA1") }}, 401, "AUTH_FAILURE_SIGNATURE_METHOD_NOT_SUPPORTED"},
		{"invalid timestamp", actionCall{key: k, action: "DescribeInstances", body: "{}",
			edit: func(r *http.Request) { r.Header.Set("X-ZC-Timestamp", "yesterday") }}, 401, "AUTH_FAILURE_INVALID_TIMESTAMP"},
		{"stale timestamp", actionCall{key: k, action: "DescribeInstances", body: "{}", at: time.Now().Add(-6 * time.Minute)}, 401, "AUTH_FAILURE_TIMESTAMP_EXPIRED"},
		{"future timestamp", actionCall{key: k, action: "DescribeInstances", body: "{}", at: time.Now().Add(6 * time.Minute)}, 401, "AUTH_FAILURE_TIMESTAMP_EXPIRED"},
		{"unknown key", actionCall{key: key{"fpk-nosuchkey", "whatever"}, action: "DescribeInstances", body: "{}"}, 401, "AUTH_FAILURE_ACCESS_KEY_NOT_FOUND"},
		{"wrong secret", actionCall{key: key{k.id, "wrong-secret"}, action: "DescribeInstances", body: "{}"}, 401, "AUTH_FAILURE_SIGNATURE_MISMATCH"},
		{"tampered body", actionCall{key: k, action: "ResetInstancesPassword", body: other, signBody: &okBody}, 401, "AUTH_FAILURE_SIGNATURE_MISMATCH"},
		{"tampered host", actionCall{key: k, action: "DescribeInstances", body: "{}",
			edit: func(r *http.Request) { r.Host = "evil.example" }}, 401, "AUTH_FAILURE_SIGNATURE_MISMATCH"},
		{"missing action", actionCall{key: k, body: "{}"}, 400, "MISSING_PARAMETER"},
		{"unknown action", actionCall{key: k, action: "DeleteEverything", body: "{}"}, 400, "INVALID_ACTION"},
		{"wrong content type", actionCall{key: k, action: "DescribeInstances", body: "{}", contentType: "text/plain"}, 415, "INVALID_CONTENT_TYPE"},
		{"malformed JSON", actionCall{key: k, action: "ResetInstancesPassword", body: "{\"instanceIds\": ["}, 400, "INVALID_JSON"},
		{"wrong JSON type", actionCall{key: k, action: "ResetInstancesPassword", body: "{\"instanceIds\": \"" + in.ID + "\"}"}, 400, "INVALID_JSON"},
		{"body too large", actionCall{key: k, action: "DescribeInstances", body: "{\"instanceName\": \"" + strings.Repeat("x", 70<<10) + "\"}"}, 413, "REQUEST_BODY_TOO_LARGE"},
		{"missing instanceIds", actionCall{key: k, action: "ResetInstancesPassword", body: "{\"password\": \"Good1pass\"}"}, 400, "MISSING_PARAMETER"},
		{"missing password", actionCall{key: k, action: "ResetInstancesPassword", body: "{\"instanceIds\": [\"" + in.ID + "\"]}"}, 400, "MISSING_PARAMETER"},
		{"too many ids", actionCall{key: k, action: "ResetInstancesPassword", body: resetBody("Good1pass", tooMany...)}, 400, "INVALID_PARAMETER_TOO_MANY_INSTANCES"},
		{"duplicate ids", actionCall{key: k, action: "ResetInstancesPassword", body: resetBody("Good1pass", in.ID, in.ID)}, 400, "INVALID_PARAMETER_DUPLICATE_INSTANCE_ID"},
		{"password too short", actionCall{key: k, action: "ResetInstancesPassword", body: resetBody("Sh0rt", in.ID)}, 400, "INVALID_PASSWORD"},
		{"password too long", actionCall{key: k, action: "ResetInstancesPassword", body: resetBody("Seventeen17chars!", in.ID)}, 400, "INVALID_PASSWORD"},
		{"bad page size", actionCall{key: k, action: "DescribeInstances", body: "{\"pageSize\": 0}"}, 400, "INVALID_PARAMETER"},
		{"unknown status filter", actionCall{key: k, action: "DescribeInstances", body: "{\"status\": \"ASLEEP\"}"}, 400, "INVALID_PARAMETER"},
		{"wrong method", actionCall{key: k, action: "DescribeInstances", method: "GET"}, 405, "METHOD_NOT_ALLOWED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			actionError(t, e.sendAction(c.call), c.status, c.code)
		})
	}

	t.Run("signature reused", func(t *testing.T) {
		// A second no other request of this test signed "{}" in.
		ts := distinctTime(t, k.id, "application/json", "{}")
		call := actionCall{key: k, action: "DescribeInstances", body: "{}", at: ts}
		actionOK(t, e.sendAction(call))
		actionOK(t, e.sendAction(call)) // an identical read is served
		// The same signature on the other path is bound to the first.
		call.path = "/api/v2/zec"
		actionError(t, e.sendAction(call), 401, "AUTH_FAILURE_SIGNATURE_REUSED")
	})

	t.Run("busy instance", func(t *testing.T) {
		body := "{\"instanceIds\": [\"" + slow.ID + "\"]}"
		resp := actionOK(t, e.sendAction(actionCall{key: k, action: "StopInstances", body: body}))
		actionError(t, e.sendAction(actionCall{key: k, action: "StopInstances", body: body}), 409, "OPERATION_DENIED_INSTANCE_BUSY")
		e.releaseShutdown(slow)
		e.wait(k, resp["operationId"].(string))
	})
	e.assertNoSecret("Good1pass")
	e.assertNoSecret("Other1pass")
}

func TestActionAPIDescribeInstancesFiltersAndPages(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	alpha := e.addMachine(machineOpts{name: "alpha", running: true})
	beta := e.addMachine(machineOpts{name: "beta", os: sim.Windows})
	gamma := e.addMachine(machineOpts{name: "gamma", running: true})
	theirs := e.addMachine(machineOpts{name: "alpha-theirs", tenant: "other", running: true})

	type set struct {
		InstanceID, InstanceName, Status, ImageName, CreateTime string
	}
	describe := func(t *testing.T, path, body string) (int, []set) {
		t.Helper()
		resp := actionOK(t, e.sendAction(actionCall{key: k, path: path, action: "DescribeInstances", body: body}))
		var out struct {
			TotalCount int   `json:"totalCount"`
			DataSet    []set `json:"dataSet"`
		}
		b, _ := json.Marshal(resp)
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out.TotalCount, out.DataSet
	}
	names := func(s []set) []string {
		var out []string
		for _, x := range s {
			out = append(out, x.InstanceName)
		}
		return out
	}
	for _, c := range []struct {
		name  string
		body  string
		total int
		want  []string
	}{
		{"all of the caller's", "{}", 3, []string{"alpha", "beta", "gamma"}},
		{"empty body", "", 3, []string{"alpha", "beta", "gamma"}},
		{"second page", `{"pageSize": 2, "pageNum": 2}`, 3, []string{"gamma"}},
		{"by status", `{"status": "STOPPED"}`, 1, []string{"beta"}},
		{"by name part", `{"instanceName": "amm"}`, 1, []string{"gamma"}},
		{"by ids, another tenant's left out", `{"instanceIds": ["` + alpha.ID + `", "` + theirs.ID + `"]}`, 1, []string{"alpha"}},
		{"unknown field ignored", `{"zoneId": "asia-east-1a"}`, 3, []string{"alpha", "beta", "gamma"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/api/v2/vm", "/api/v2/zec"} {
				total, got := describe(t, path, c.body)
				if total != c.total || !slices.Equal(names(got), c.want) {
					t.Errorf("%s: total %d %v, want %d %v", path, total, names(got), c.total, c.want)
				}
			}
		})
	}
	_, all := describe(t, "/api/v2/vm", "{}")
	if b := all[1]; b.InstanceID != beta.ID || b.Status != "STOPPED" || b.ImageName != "Windows" || b.CreateTime == "" {
		t.Errorf("beta: %+v", b)
	}
	if _, err := time.Parse(time.RFC3339, all[0].CreateTime); err != nil || all[0].Status != "RUNNING" {
		t.Errorf("alpha: %+v", all[0])
	}

	resp := actionOK(t, e.sendAction(actionCall{key: k, action: "DescribeInstancesStatus", body: `{"instanceIds": ["` + gamma.ID + `"]}`}))
	b, _ := json.Marshal(resp)
	if !strings.Contains(string(b), `"dataSet":[{"instanceId":"`+gamma.ID+`","instanceStatus":"RUNNING"}]`) ||
		!strings.Contains(string(b), `"totalCount":1`) {
		t.Errorf("DescribeInstancesStatus: %s", b)
	}
}

func TestActionAPIPowerActions(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "p", running: true, faults: sim.Faults{HangShutdown: true}})
	run := func(path, action, body string) apiv1.Operation {
		t.Helper()
		resp := actionOK(t, e.sendAction(actionCall{key: k, path: path, action: action, body: body}))
		return e.wait(k, resp["operationId"].(string))
	}
	ids := `"instanceIds": ["` + in.ID + `"]`
	// A graceful shutdown hangs on this machine: only forceShutdown stops it.
	if op := run("/api/v2/zec", "StopInstances", "{"+ids+", \"forceShutdown\": true}"); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("forced stop: %s %+v", op.Status, op.Items)
	}
	if got := e.instance(k, in.ID).State; got != apiv1.StateStopped {
		t.Fatalf("state %s after a forced stop", got)
	}
	if op := run("/api/v2/vm", "StartInstances", "{"+ids+"}"); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("start: %s %+v", op.Status, op.Items)
	}
	if got := e.instance(k, in.ID).State; got != apiv1.StateRunning {
		t.Fatalf("state %s after start", got)
	}
	good := e.addMachine(machineOpts{name: "q", running: true})
	if op := run("/api/v2/zec", "RebootInstances", `{"instanceIds": ["`+good.ID+`"]}`); op.Status != apiv1.OperationSucceeded {
		t.Fatalf("reboot: %s %+v", op.Status, op.Items)
	}
	r := e.sendAction(actionCall{key: k, action: "StartInstances", body: `{"instanceIds": ["ins-0000000000"]}`})
	actionError(t, r, 404, "INVALID_INSTANCE_NOT_FOUND")
}

// ---- bare-metal API helpers

type bmAnswer struct {
	Code     int             `json:"code"`
	Message  string          `json:"message"`
	CodeDesc string          `json:"codeDesc"`
	Data     json.RawMessage `json:"data"`
}

type bmCall struct {
	key    key
	method string // GET (default) or POST
	params url.Values
	at     time.Time
	nonce  string
	// edit changes the parameters after signing (tampering); editReq the
	// HTTP request.
	edit    func(url.Values)
	editReq func(*http.Request)
}

func newNonce() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<40))
	return strconv.FormatInt(n.Int64()+1, 10)
}

func (e *env) sendBM(c bmCall) (reply, bmAnswer) {
	e.t.Helper()
	if c.method == "" {
		c.method = "GET"
	}
	if c.at.IsZero() {
		c.at = time.Now()
	}
	if c.nonce == "" {
		c.nonce = newNonce()
	}
	p := url.Values{}
	for k, v := range c.params {
		p[k] = slices.Clone(v)
	}
	p.Set("Timestamp", strconv.FormatInt(c.at.Unix(), 10))
	p.Set("Nonce", c.nonce)
	p.Set("SecretId", c.key.id)
	u, _ := url.Parse(e.url)
	p.Set("Signature", testCAPISignature(c.method, u.Host, "/v2/index.php", p, c.key.secret))
	if c.edit != nil {
		c.edit(p)
	}
	var req *http.Request
	var err error
	if c.method == "POST" {
		req, err = http.NewRequest("POST", e.url+"/v2/index.php", strings.NewReader(p.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, err = http.NewRequest(c.method, e.url+"/v2/index.php?"+p.Encode(), nil)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if c.editReq != nil {
		c.editReq(req)
	}
	r := e.send(req)
	var a bmAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		e.t.Fatalf("%v: %s", err, r.body)
	}
	return r, a
}

func bmError(t *testing.T, r reply, a bmAnswer, status, code int) {
	t.Helper()
	if r.status != status || a.Code != code || a.Message == "" || a.CodeDesc == "" || a.Data != nil {
		t.Fatalf("got HTTP %d %s, want HTTP %d code %d with a message and codeDesc", r.status, r.body, status, code)
	}
}

func devicePasswd(pw string, ids ...string) url.Values {
	v := url.Values{"Action": {"ResetDevicePasswd"}, "passwd": {pw}}
	for i, id := range ids {
		v.Set(fmt.Sprintf("instanceIds.%d", i+1), id)
	}
	return v
}

type bmResult struct {
	TaskID        int64 `json:"taskId"`
	Status        int   `json:"status"`
	TaskStatus    int   `json:"taskStatus"`
	SubtaskStatus []struct {
		InstanceID   string `json:"instanceId"`
		TaskStatus   int    `json:"taskStatus"`
		DeviceStatus string `json:"deviceStatus"`
		AgentAlive   bool   `json:"agentAlive"`
		ErrorCode    string `json:"errorCode"`
	} `json:"subtaskStatus"`
}

// pollTask polls the task until it ends.
func (e *env) pollTask(k key, action string, task int64) bmResult {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, a := e.sendBM(bmCall{key: k, params: url.Values{"Action": {action}, "taskId": {strconv.FormatInt(task, 10)}}})
		if a.Code != 0 {
			e.t.Fatalf("%s: %+v", action, a)
		}
		var res bmResult
		if err := json.Unmarshal(a.Data, &res); err != nil {
			e.t.Fatal(err)
		}
		if res.Status != 4 && res.Status != 5 && res.Status != 6 && res.Status != 7 {
			return res
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("task %d did not end", task)
	return bmResult{}
}

// ---- bare-metal API tests

func TestBareMetalDocumentExample(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	d1 := e.addMachine(machineOpts{name: "d1", running: true})
	d2 := e.addMachine(machineOpts{name: "d2", running: true, os: sim.Windows})
	const pw = "abc123456"
	// The document's request: Action, the common parameters, instanceIds.1,
	// instanceIds.2 and passwd.
	r, a := e.sendBM(bmCall{key: k, params: devicePasswd(pw, d1.ID, d2.ID)})
	if r.status != 200 || a.Code != 0 || a.Message != "OK" {
		t.Fatalf("HTTP %d %s", r.status, r.body)
	}
	// Wire-exact: {"code":0,"message":"OK","data":{"taskId":N}}, N a number.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(r.body, &raw)
	var data map[string]json.RawMessage
	_ = json.Unmarshal(raw["data"], &data)
	if len(raw) != 3 || len(data) != 1 {
		t.Fatalf("answer shape: %s", r.body)
	}
	task, err := strconv.ParseInt(string(data["taskId"]), 10, 64)
	if err != nil || task < 1 {
		t.Fatalf("taskId must be a positive JSON number: %s", r.body)
	}
	for _, action := range []string{"DescribeOperationResult", "DescriptionOperationResult"} {
		res := e.pollTask(k, action, task)
		if res.Status != 1 || res.TaskStatus != 1 || res.TaskID != task || len(res.SubtaskStatus) != 2 {
			t.Fatalf("%s: %+v", action, res)
		}
		for _, s := range res.SubtaskStatus {
			if s.TaskStatus != 1 || s.DeviceStatus != "RUNNING" || !s.AgentAlive {
				t.Errorf("%s: %+v", action, s)
			}
		}
	}
	if !e.checkPassword(d1, "root", pw) || !e.checkPassword(d2, "Administrator", pw) {
		t.Error("the new password does not work")
	}
	// Task ids increase.
	_, a2 := e.sendBM(bmCall{key: k, method: "POST", params: devicePasswd("xyz987654", d1.ID)})
	var next struct{ TaskID int64 }
	_ = json.Unmarshal(a2.Data, &next)
	if a2.Code != 0 || next.TaskID <= task {
		t.Fatalf("second task %d after %d: %+v", next.TaskID, task, a2)
	}
	e.pollTask(k, "DescribeOperationResult", next.TaskID)
	if !e.checkPassword(d1, "root", "xyz987654") {
		t.Error("the form POST reset did not apply")
	}
	e.assertNoSecret(pw)
	e.assertNoSecret("xyz987654")
}

func TestBareMetalSignatureMethods(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	for _, m := range []string{"", "HmacSHA1", "HmacSHA256"} {
		p := url.Values{"Action": {"DescribeDeviceList"}}
		if m != "" {
			p.Set("SignatureMethod", m)
		}
		for _, method := range []string{"GET", "POST"} {
			if r, a := e.sendBM(bmCall{key: k, method: method, params: p}); r.status != 200 || a.Code != 0 {
				t.Errorf("%s %q: %s", method, m, r.body)
			}
		}
	}
}

func TestBareMetalDescribeDeviceList(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	up := e.addMachine(machineOpts{name: "up", running: true})
	e.addMachine(machineOpts{name: "down"})
	e.addMachine(machineOpts{name: "dead", running: true, faults: sim.Faults{AgentDead: true}})
	e.addMachine(machineOpts{name: "theirs", tenant: "other", running: true})
	type dev struct {
		InstanceID, Alias, DeviceStatus string
		AgentAlive                      bool
	}
	list := func(p url.Values) (int, []dev) {
		t.Helper()
		p.Set("Action", "DescribeDeviceList")
		_, a := e.sendBM(bmCall{key: k, params: p})
		var out struct {
			TotalNum   int   `json:"totalNum"`
			DeviceList []dev `json:"deviceList"`
		}
		if a.Code != 0 || json.Unmarshal(a.Data, &out) != nil {
			t.Fatalf("%+v", a)
		}
		return out.TotalNum, out.DeviceList
	}
	total, devs := list(url.Values{})
	want := []dev{{"", "dead", "RUNNING", false}, {"", "down", "STOPPED", false}, {"", "up", "RUNNING", true}}
	if total != 3 || len(devs) != 3 {
		t.Fatalf("total %d: %+v", total, devs)
	}
	for i := range devs {
		devs[i].InstanceID = ""
	}
	if !slices.Equal(devs, want) {
		t.Errorf("got %+v, want %+v", devs, want)
	}
	if total, devs := list(url.Values{"offset": {"1"}, "limit": {"1"}}); total != 3 || len(devs) != 1 || devs[0].Alias != "down" {
		t.Errorf("page: %d %+v", total, devs)
	}
	if total, devs := list(url.Values{"instanceIds.1": {up.ID}}); total != 1 || devs[0].InstanceID != up.ID {
		t.Errorf("by id: %d %+v", total, devs)
	}
}

// TestBareMetalErrorCodes produces every error row of docs/api-baremetal.md
// but 9001 (TestDialectsAnswerStoreFailures) and checks status, code and
// format.
func TestBareMetalErrorCodes(t *testing.T) {
	e := newEnv(t, envOpts{engine: holdingShutdowns()})
	k := e.newKey("acme")
	up := e.addMachine(machineOpts{name: "up", running: true})
	down := e.addMachine(machineOpts{name: "down"})
	dead := e.addMachine(machineOpts{name: "dead", running: true, faults: sim.Faults{AgentDead: true}})
	slow := e.addMachine(machineOpts{name: "slow", running: true, faults: sim.Faults{HangShutdown: true}})
	theirs := e.addMachine(machineOpts{name: "theirs", tenant: "other", running: true})
	const pw = "Good1pass"
	list := url.Values{"Action": {"DescribeDeviceList"}}
	tooMany := url.Values{"Action": {"ResetDevicePasswd"}, "passwd": {pw}}
	for i := 1; i <= 101; i++ {
		tooMany.Set(fmt.Sprintf("instanceIds.%d", i), fmt.Sprintf("ins-%010d", i))
	}
	replayNonce := newNonce()
	replayAt := time.Now()
	for _, c := range []struct {
		name   string
		call   bmCall
		status int
		code   int
	}{
		{"missing Nonce", bmCall{key: k, params: list, edit: func(p url.Values) { p.Del("Nonce") }}, 200, 4000},
		{"duplicate parameter", bmCall{key: k, params: list, edit: func(p url.Values) { p.Add("Action", "DescribeDeviceList") }}, 200, 4000},
		{"bad SignatureMethod", bmCall{key: k, params: url.Values{"Action": {"DescribeDeviceList"}, "SignatureMethod": {"HmacMD5"}}}, 200, 4000},
		{"bad Nonce", bmCall{key: k, params: list, nonce: "-1"}, 200, 4000},
		{"unknown Action", bmCall{key: k, params: url.Values{"Action": {"FormatDisks"}}}, 200, 4000},
		{"unknown SecretId", bmCall{key: key{"fpk-nosuchkey", "x"}, params: list}, 200, 4100},
		{"wrong secret", bmCall{key: key{k.id, "wrong"}, params: list}, 200, 4100},
		{"tampered parameter", bmCall{key: k, params: devicePasswd(pw, up.ID), edit: func(p url.Values) { p.Set("instanceIds.1", down.ID) }}, 200, 4100},
		{"stale Timestamp", bmCall{key: k, params: list, at: time.Now().Add(-10 * time.Minute)}, 200, 4500},
		{"missing passwd", bmCall{key: k, params: url.Values{"Action": {"ResetDevicePasswd"}, "instanceIds.1": {up.ID}}}, 200, 10001},
		{"missing instanceIds", bmCall{key: k, params: url.Values{"Action": {"ResetDevicePasswd"}, "passwd": {pw}}}, 200, 10001},
		{"password of one kind", bmCall{key: k, params: devicePasswd("abcdefghij", up.ID)}, 200, 10001},
		{"password with a disallowed character", bmCall{key: k, params: devicePasswd("abc+12345", up.ID)}, 200, 10001},
		{"too many ids", bmCall{key: k, params: tooMany}, 200, 10001},
		{"bad index", bmCall{key: k, params: url.Values{"Action": {"ResetDevicePasswd"}, "passwd": {pw}, "instanceIds.x": {up.ID}}}, 200, 10001},
		{"unknown id", bmCall{key: k, params: devicePasswd(pw, "ins-0000000000")}, 200, 10001},
		{"another tenant's id", bmCall{key: k, params: devicePasswd(pw, theirs.ID)}, 200, 10001},
		{"bad taskId", bmCall{key: k, params: url.Values{"Action": {"DescribeOperationResult"}, "taskId": {"abc"}}}, 200, 10001},
		{"unknown taskId", bmCall{key: k, params: url.Values{"Action": {"DescribeOperationResult"}, "taskId": {"999999"}}}, 200, 10001},
		{"stopped device", bmCall{key: k, params: devicePasswd(pw, down.ID)}, 200, 12002},
		{"stopped and dead devices", bmCall{key: k, params: devicePasswd(pw, down.ID, dead.ID)}, 200, 12002},
		{"agent not alive", bmCall{key: k, params: devicePasswd(pw, dead.ID)}, 200, 12006},
		{"wrong method", bmCall{key: k, method: "PUT", params: list}, 405, 4000},
		{"parameters in both query and form", bmCall{key: k, method: "POST", params: list,
			editReq: func(r *http.Request) { r.URL.RawQuery = "Action=DescribeDeviceList" }}, 200, 4000},
		{"POST that is not a form", bmCall{key: k, method: "POST", params: list,
			editReq: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }}, 200, 4000},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, a := e.sendBM(c.call)
			bmError(t, r, a, c.status, c.code)
		})
	}
	t.Run("replayed nonce", func(t *testing.T) {
		call := bmCall{key: k, params: list, nonce: replayNonce, at: replayAt}
		if _, a := e.sendBM(call); a.Code != 0 {
			t.Fatalf("first use: %+v", a)
		}
		r, a := e.sendBM(call)
		bmError(t, r, a, 200, 4500)
	})
	t.Run("busy device", func(t *testing.T) {
		resp := actionOK(t, e.sendAction(actionCall{key: k, action: "StopInstances", body: `{"instanceIds": ["` + slow.ID + `"]}`}))
		r, a := e.sendBM(bmCall{key: k, params: devicePasswd(pw, slow.ID)})
		bmError(t, r, a, 200, 12002)
		e.releaseShutdown(slow)
		e.wait(k, resp["operationId"].(string))
	})
	t.Run("another tenant's task", func(t *testing.T) {
		_, a := e.sendBM(bmCall{key: k, params: devicePasswd(pw, up.ID)})
		var d struct{ TaskID int64 }
		_ = json.Unmarshal(a.Data, &d)
		other := e.newKey("other")
		r, a2 := e.sendBM(bmCall{key: other, params: url.Values{"Action": {"DescribeOperationResult"}, "taskId": {strconv.FormatInt(d.TaskID, 10)}}})
		bmError(t, r, a2, 200, 10001)
		e.pollTask(k, "DescribeOperationResult", d.TaskID)
	})
	e.assertNoSecret(pw)
}

// TestDialectsAnswerStoreFailures closes the database under a running
// server: the action API answers 503 INTERNAL_ERROR_DATABASE and the
// bare-metal API 9001 InternalError.DbError.
func TestDialectsAnswerStoreFailures(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "m", running: true})
	if err := e.srv.Store().DB.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.sendAction(actionCall{key: k, path: "/api/v2/zec", action: "ResetInstancesPassword", body: resetBody("Good1pass", in.ID)})
	actionError(t, r, 503, "INTERNAL_ERROR_DATABASE")
	br, a := e.sendBM(bmCall{key: k, params: devicePasswd("Good1pass", in.ID)})
	bmError(t, br, a, 200, 9001)
	if a.CodeDesc != "InternalError.DbError" {
		t.Errorf("codeDesc %q", a.CodeDesc)
	}
	if bytes.Contains(br.body, []byte("Good1pass")) || strings.Contains(e.logs.String(), "Good1pass") {
		t.Error("the password leaked into an answer or the log")
	}
}
