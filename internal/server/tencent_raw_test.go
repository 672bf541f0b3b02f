package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/profile"
	cvm "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/cvm/v20170312"

	"github.com/fleetpass/fleetpass/internal/driver/sim"
)

// Raw HTTP for what the SDK never sends, signed by a test-side TC3 signer
// written from Tencent's documentation, independent of internal/sign/tc3
// and pinned to the SDK's own signatures below.

func testTC3Authorization(k key, service string, ts time.Time, host, contentType string, body []byte) string {
	hexSHA := func(b []byte) string {
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	date := ts.UTC().Format("2006-01-02")
	canonical := "POST\n/\n\ncontent-type:" + contentType + "\nhost:" + host + "\n\ncontent-type;host\n" + hexSHA(body)
	scope := date + "/" + service + "/tc3_request"
	toSign := "TC3-HMAC-SHA256\n" + strconv.FormatInt(ts.Unix(), 10) + "\n" + scope + "\n" + hexSHA([]byte(canonical))
	signing := mac(mac(mac([]byte("TC3"+k.secret), date), service), "tc3_request")
	return "TC3-HMAC-SHA256 Credential=" + k.id + "/" + scope + ", SignedHeaders=content-type;host, Signature=" + hex.EncodeToString(mac(signing, toSign))
}

func TestTestTC3SignerMatchesTheSDK(t *testing.T) {
	var got *http.Request
	var body []byte
	capture := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, body = r, must(io.ReadAll(r.Body))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"Response":{"TotalCount":0,"InstanceSet":[],"RequestId":"x"}}`)
	}))
	defer capture.Close()
	cpf := profile.NewClientProfile()
	cpf.HttpProfile.Endpoint, cpf.HttpProfile.Scheme = strings.TrimPrefix(capture.URL, "http://"), "HTTP"
	k := key{"AKIDfleetpassExample", "example-secret"}
	c, err := cvm.NewClient(common.NewCredential(k.id, k.secret), "ap-guangzhou", cpf)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1796141430, 0)
	req := cvm.NewDescribeInstancesRequest()
	req.Offset, req.Limit = common.Int64Ptr(0), common.Int64Ptr(10)
	req.SetHeader(map[string]string{"X-TC-Timestamp": strconv.FormatInt(ts.Unix(), 10)})
	if _, err := c.DescribeInstances(req); err != nil {
		t.Fatal(err)
	}
	want := testTC3Authorization(k, "cvm", ts, got.Host, "application/json", body)
	if a := got.Header.Get("Authorization"); a != want {
		t.Errorf("the SDK signed\n %s\nthe test signer\n %s", a, want)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type tcCall struct {
	key     key
	action  string
	version string
	body    string
	at      time.Time
	// service of the credential scope; default that of the version.
	service string
	// editReq changes the request after signing.
	editReq func(*http.Request)
}

type tcAnswer struct {
	Response map[string]json.RawMessage
}

func (a tcAnswer) errorCode() string {
	var e struct{ Code, Message string }
	_ = json.Unmarshal(a.Response["Error"], &e)
	return e.Code
}

// sendTC sends a signed API 3.0 call and checks the envelope every answer
// has: HTTP 200, Content-Type application/json exactly, a RequestId.
func (e *env) sendTC(c tcCall) tcAnswer {
	e.t.Helper()
	if c.version == "" {
		c.version = "2017-03-12"
	}
	if c.service == "" {
		c.service = "cvm"
		if c.version == "2018-04-23" {
			c.service = "bm"
		}
	}
	if c.at.IsZero() {
		c.at = time.Now()
	}
	req, err := http.NewRequest("POST", e.url+"/", strings.NewReader(c.body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-TC-Action", c.action)
	req.Header.Set("X-TC-Version", c.version)
	req.Header.Set("X-TC-Timestamp", strconv.FormatInt(c.at.Unix(), 10))
	req.Header.Set("X-TC-Region", "eu-frankfurt")
	u, _ := url.Parse(e.url)
	req.Header.Set("Authorization", testTC3Authorization(c.key, c.service, c.at, u.Host, "application/json", []byte(c.body)))
	if c.editReq != nil {
		c.editReq(req)
	}
	r := e.send(req)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		e.t.Fatalf("HTTP %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var a tcAnswer
	if err := json.Unmarshal(r.body, &a); err != nil || a.Response == nil {
		e.t.Fatalf("not {\"Response\": ...}: %s", r.body)
	}
	var id string
	if err := json.Unmarshal(a.Response["RequestId"], &id); err != nil || id == "" || id != r.header.Get("X-Request-Id") {
		e.t.Fatalf("RequestId missing or not the request's: %s", r.body)
	}
	return a
}

func TestTencentRawRequestsTheSDKNeverSends(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "linux"})
	reset := `{"InstanceIds":["` + in.ID + `"],"Password":"Raw+Reset9Ok"}`
	for _, tc := range []struct {
		name string
		call tcCall
		want string
	}{
		{"no X-TC headers at all", tcCall{key: k, editReq: func(r *http.Request) {
			for name := range r.Header {
				if strings.HasPrefix(name, "X-Tc-") {
					r.Header.Del(name)
				}
			}
			r.Header.Del("Authorization")
		}}, "MissingParameter"},
		{"no Authorization", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.Header.Del("Authorization") }}, "AuthFailure.InvalidAuthorization"},
		{"a malformed Authorization", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) {
			r.Header.Set("Authorization", "TC3-HMAC-SHA256 Credential="+k.id+", Signature=00")
		}}, "AuthFailure.InvalidAuthorization"},
		{"another scheme", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.SetBasicAuth(k.id, k.secret) }}, "AuthFailure.InvalidAuthorization"},
		{"the bm service in the scope of a cvm call", tcCall{key: k, action: "DescribeInstances", service: "bm"}, "AuthFailure.InvalidAuthorization"},
		{"an unknown service in the scope", tcCall{key: k, action: "DescribeInstances", service: "cbs"}, "AuthFailure.InvalidAuthorization"},
		{"no timestamp", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.Header.Del("X-TC-Timestamp") }}, "MissingParameter"},
		{"a timestamp that is not a number", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.Header.Set("X-TC-Timestamp", "soon") }}, "InvalidParameter"},
		{"an unsigned payload", tcCall{key: k, action: "ResetInstancesPassword", body: reset, editReq: func(r *http.Request) {
			r.Header.Set("X-TC-Content-SHA256", "UNSIGNED-PAYLOAD")
		}}, "AuthFailure.InvalidAuthorization"},
		{"a body changed after signing", tcCall{key: k, action: "ResetInstancesPassword", body: reset, editReq: func(r *http.Request) {
			body := strings.Replace(reset, "Raw+Reset9Ok", "Raw+Reset9No", 1)
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		}}, "AuthFailure.SignatureFailure"},
		{"an unknown action", tcCall{key: k, action: "TerminateInstances", body: `{}`}, "InvalidAction"},
		{"a bm action in cvm", tcCall{key: k, action: "ResetDevicePassword", body: `{}`}, "InvalidAction"},
		{"an unknown version", tcCall{key: k, action: "DescribeInstances", version: "2099-01-01", service: "cvm"}, "NoSuchVersion"},
		{"no version", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.Header.Del("X-TC-Version") }}, "MissingParameter"},
		{"a body over 64 KiB", tcCall{key: k, action: "DescribeInstances", body: `{"Filters":[],"x":"` + strings.Repeat("a", 65<<10) + `"}`}, "RequestSizeLimitExceeded"},
		{"a body that is not JSON", tcCall{key: k, action: "DescribeInstances", body: `Offset=1`}, "InvalidParameter"},
		{"a parameter of the wrong type", tcCall{key: k, action: "ResetInstancesPassword", body: `{"InstanceIds":"` + in.ID + `","Password":"Raw+Reset9Ok"}`}, "InvalidParameter"},
		{"parameters in the query string", tcCall{key: k, action: "DescribeInstances", editReq: func(r *http.Request) { r.URL.RawQuery = "Limit=1" }}, "InvalidParameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.sendTC(tc.call).errorCode(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if e.checkPassword(in, "root", "Raw+Reset9Ok") || e.checkPassword(in, "root", "Raw+Reset9No") {
		t.Error("a refused reset changed the password")
	}
	e.assertNoSecret("Raw+Reset9Ok")
	e.assertNoSecret("Raw+Reset9No")
}

func TestTencentGetRootStaysTheBrowsers(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.do(key{}, "GET", "/", nil)
	if r.status >= 400 || strings.Contains(string(r.body), `"Response"`) {
		t.Errorf("GET /: HTTP %d %s", r.status, r.body)
	}
}

// The bare-metal 3.0 TaskIds are the 2.0 API's task numbers.
func TestTencentBareMetalSharesTheTaskNumbers(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "metal", running: true})
	dead := e.addMachine(machineOpts{name: "metal-dead", running: true, faults: sim.Faults{AgentDead: true}})
	a := e.sendTC(tcCall{key: k, version: "2018-04-23", action: "ResetDevicePassword",
		body: `{"InstanceIds":["` + in.ID + `"],"Password":"Metal9pass"}`})
	var task int64
	if err := json.Unmarshal(a.Response["TaskId"], &task); err != nil || task <= 0 {
		t.Fatalf("TaskId: %v", a.Response)
	}
	res := e.pollTask(k, "DescribeOperationResult", task)
	if res.Status != 1 || len(res.SubtaskStatus) != 1 || res.SubtaskStatus[0].InstanceID != in.ID {
		t.Fatalf("the 2.0 API's task %d: %+v", task, res)
	}
	a = e.sendTC(tcCall{key: k, version: "2018-04-23", action: "DescribeOperationResult", body: `{"TaskId":` + strconv.FormatInt(task, 10) + `}`})
	if string(a.Response["TaskStatus"]) != "1" || !strings.Contains(string(a.Response["SubtaskStatusSet"]), in.ID) {
		t.Errorf("3.0 DescribeOperationResult: %v", a.Response)
	}
	if !e.checkPassword(in, "root", "Metal9pass") {
		t.Error("the new password does not log in")
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"the agent is not alive", `{"InstanceIds":["` + dead.ID + `"],"Password":"Metal9pass"}`, "FailedOperation.TscAgentOffline"},
		{"the 2.0 rule: 17 characters", `{"InstanceIds":["` + in.ID + `"],"Password":"Metal9pass1234567"}`, "InvalidParameter"},
		{"no password", `{"InstanceIds":["` + in.ID + `"]}`, "MissingParameter"},
		{"an unknown device", `{"InstanceIds":["ins-0000abcd"],"Password":"Metal9pass"}`, "ResourceNotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.sendTC(tcCall{key: k, version: "2018-04-23", action: "ResetDevicePassword", body: tc.body}).errorCode(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := e.sendTC(tcCall{key: k, version: "2018-04-23", action: "DescribeOperationResult", body: `{"TaskId":999999}`}).errorCode(); got != "ResourceNotFound" {
		t.Errorf("an unknown task: %q", got)
	}
	other := e.newKey("globex")
	if got := e.sendTC(tcCall{key: other, version: "2018-04-23", action: "DescribeOperationResult",
		body: `{"TaskId":` + strconv.FormatInt(task, 10) + `}`}).errorCode(); got != "ResourceNotFound" {
		t.Errorf("another tenant's task: %q", got)
	}
	e.assertNoSecret("Metal9pass")
}

// docs/examples/sign-tencent.sh, as docs/api-tencent.md runs it: openssl
// signs, curl sends, the real server answers.
func TestTencentDocsExampleScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs openssl and curl")
	}
	for _, tool := range []string{"sh", "openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-test-deps.sh installs it): %v", tool, err)
		}
	}
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "docs"})
	run := func(version, action, body string) map[string]json.RawMessage {
		t.Helper()
		cmd := exec.Command("sh", filepath.Join("..", "..", "docs", "examples", "sign-tencent.sh"), version, action)
		cmd.Env = append(os.Environ(), "FLEETPASS_DATA="+e.dataDir, "FLEETPASS_URL="+e.url)
		cmd.Stdin = strings.NewReader(body)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v: %s", action, err, out)
		}
		var a tcAnswer
		if err := json.Unmarshal(out, &a); err != nil || a.Response == nil {
			t.Fatalf("%s: %s", action, out)
		}
		if a.errorCode() != "" {
			t.Fatalf("%s: %s", action, out)
		}
		return a.Response
	}
	if resp := run("2017-03-12", "DescribeInstances", `{"Limit": 5}`); string(resp["TotalCount"]) != "1" {
		t.Errorf("DescribeInstances: %v", resp)
	}
	const pw = "Docs+Reset9Ok"
	run("2017-03-12", "ResetInstancesPassword", `{"InstanceIds": ["`+in.ID+`"], "Password": "`+pw+`"}`)
	run("2018-04-23", "DescribeDevices", `{}`)
	deadline := time.Now().Add(60 * time.Second)
	for !e.checkPassword(in, "root", pw) {
		if time.Now().After(deadline) {
			t.Fatal("the reset sent by the script did not apply")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.assertNoSecret(pw)
}

// What Tencent's documentation and other clients send beyond the Go SDK:
// no region, a charset in the Content-Type, more signed headers (values
// lower-cased, as the documentation's own example signs x-tc-action).
func TestTencentRawAcceptsWhatTheDocumentationSends(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	e.addMachine(machineOpts{name: "web"})
	u, _ := url.Parse(e.http.URL)
	hexSHA := func(b string) string {
		h := sha256.Sum256([]byte(b))
		return hex.EncodeToString(h[:])
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	const ct, body = "application/json; charset=utf-8", `{"Limit":1}`
	for _, tc := range []struct {
		name   string
		signed string // header names, sorted
		values string // their canonical lines
	}{
		{"content-type and host", "content-type;host", "content-type:" + ct + "\nhost:" + u.Host + "\n"},
		{"x-tc-action too", "content-type;host;x-tc-action", "content-type:" + ct + "\nhost:" + u.Host + "\nx-tc-action:describeinstances\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			ts := strconv.FormatInt(now.Unix(), 10)
			date := now.UTC().Format("2006-01-02")
			canonical := "POST\n/\n\n" + tc.values + "\n" + tc.signed + "\n" + hexSHA(body)
			scope := date + "/cvm/tc3_request"
			sig := mac(mac(mac(mac([]byte("TC3"+k.secret), date), "cvm"), "tc3_request"),
				"TC3-HMAC-SHA256\n"+ts+"\n"+scope+"\n"+hexSHA(canonical))
			a := e.sendTC(tcCall{key: k, action: "DescribeInstances", body: body, at: now, editReq: func(r *http.Request) {
				r.Header.Del("X-TC-Region")
				r.Header.Set("X-TC-Language", "en-US")
				r.Header.Set("Content-Type", ct)
				r.Header.Set("Authorization", "TC3-HMAC-SHA256 Credential="+k.id+"/"+scope+", SignedHeaders="+tc.signed+", Signature="+hex.EncodeToString(sig))
			}})
			if code := a.errorCode(); code != "" || string(a.Response["TotalCount"]) != "1" {
				t.Errorf("answered %v", a.Response)
			}
		})
	}
}
