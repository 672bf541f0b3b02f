package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common"
	sdkerrors "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/profile"
	cvm "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/cvm/v20170312"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
)

// The official Tencent Cloud Go SDK (common v1.3.212, cvm v1.3.130) as the
// client, unchanged but for its endpoint and scheme, against the whole
// server in process.

func (e *env) cvmClient(k key) *cvm.Client {
	e.t.Helper()
	cpf := profile.NewClientProfile()
	cpf.HttpProfile.Endpoint = strings.TrimPrefix(e.url, "http://")
	cpf.HttpProfile.Scheme = "HTTP"
	c, err := cvm.NewClient(common.NewCredential(k.id, k.secret), "ap-guangzhou", cpf)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// sdkCode is the Tencent error code of err, failing the test for any other
// kind of error (a transport or parse failure of the SDK).
func sdkCode(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var se *sdkerrors.TencentCloudSDKError
	if !errors.As(err, &se) {
		t.Fatalf("not an SDK error: %v", err)
	}
	if strings.HasPrefix(se.Code, "ClientError.") {
		t.Fatalf("the SDK could not read the answer: %v", err)
	}
	if se.RequestId == "" || se.Message == "" {
		t.Errorf("error without RequestId or Message: %v", err)
	}
	return se.Code
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func strs(ss ...string) []*string { return common.StringPtrs(ss) }

func resetRequest(pw string, forceStop bool, ids ...string) *cvm.ResetInstancesPasswordRequest {
	req := cvm.NewResetInstancesPasswordRequest()
	req.InstanceIds, req.Password, req.ForceStop = strs(ids...), common.StringPtr(pw), common.BoolPtr(forceStop)
	return req
}

func describe(t *testing.T, c *cvm.Client, ids ...string) map[string]*cvm.Instance {
	t.Helper()
	req := cvm.NewDescribeInstancesRequest()
	req.InstanceIds = strs(ids...)
	resp, err := c.DescribeInstances(req)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*cvm.Instance{}
	for _, in := range resp.Response.InstanceSet {
		out[*in.InstanceId] = in
	}
	return out
}

// waitLatest polls DescribeInstances, as Tencent's documentation says to,
// until the latest operation of every instance has ended.
func waitLatest(t *testing.T, c *cvm.Client, ids ...string) map[string]*cvm.Instance {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		set := describe(t, c, ids...)
		done := len(set) == len(ids)
		for _, in := range set {
			if in.LatestOperationState == nil || *in.LatestOperationState == apiv1.OpStateOperating {
				done = false
			}
		}
		if done {
			return set
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("the latest operations of %v did not end", ids)
	return nil
}

func TestTencentSDKBatchResetOfStoppedInstances(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	var insts []apiv1.Instance
	for i := range 3 {
		insts = append(insts, e.addMachine(machineOpts{name: "stopped-" + strconv.Itoa(i)}))
	}
	c := e.cvmClient(k)
	const pw = "Tc3+Reset9Ok"
	resp, err := c.ResetInstancesPassword(resetRequest(pw, false, ids(insts...)...))
	if err != nil {
		t.Fatal(err)
	}
	requestID := *resp.Response.RequestId
	set := waitLatest(t, c, ids(insts...)...)
	for _, in := range insts {
		got := set[in.ID]
		if *got.LatestOperationState != apiv1.OpStateSuccess || *got.LatestOperation != "ResetInstancesPassword" {
			t.Errorf("%s: latest operation %s %s", in.ID, *got.LatestOperation, *got.LatestOperationState)
		}
		if got.LatestOperationRequestId == nil || *got.LatestOperationRequestId != requestID {
			t.Errorf("%s: LatestOperationRequestId %v, want the reset's RequestId %s", in.ID, got.LatestOperationRequestId, requestID)
		}
		// Reset offline, then started with the new password applied.
		if *got.InstanceState != "RUNNING" {
			t.Errorf("%s: ends %s, want RUNNING", in.ID, *got.InstanceState)
		}
		if !e.checkPassword(in, "root", pw) {
			t.Errorf("%s: the new password does not log in", in.ID)
		}
	}
	e.assertNoSecret(pw)
}

func TestTencentSDKRunningInstanceNeedsForceStop(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "web", running: true})
	c := e.cvmClient(k)
	const pw = "Run+Reset9Ok"
	_, err := c.ResetInstancesPassword(resetRequest(pw, false, in.ID))
	if code := sdkCode(t, err); code != "UnsupportedOperation.InstanceStateRunning" {
		t.Fatalf("without ForceStop: %q", code)
	}
	if e.checkPassword(in, "root", pw) {
		t.Fatal("refused, yet the password changed")
	}
	resp, err := c.ResetInstancesPassword(resetRequest(pw, true, in.ID))
	if err != nil {
		t.Fatal(err)
	}
	got := waitLatest(t, c, in.ID)[in.ID]
	if *got.LatestOperationState != apiv1.OpStateSuccess || *got.LatestOperationRequestId != *resp.Response.RequestId {
		t.Errorf("latest operation %s of %s", *got.LatestOperationState, *got.LatestOperationRequestId)
	}
	if *got.InstanceState != "RUNNING" || !e.checkPassword(in, "root", pw) {
		t.Errorf("state %s; new password works: %v", *got.InstanceState, e.checkPassword(in, "root", pw))
	}
	e.assertNoSecret(pw)
}

// TC3 has no nonce: the same request signed in the same second twice is
// two calls. A read is served twice; a second reset of the instance the
// first is resetting is refused as busy, never as a replay.
func TestTencentSDKIdenticalRequestsAreSeparateCalls(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "slow", boot: 2 * time.Second})
	c := e.cvmClient(k)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	for range 2 {
		req := cvm.NewDescribeInstancesRequest()
		req.SetHeader(map[string]string{"X-TC-Timestamp": ts})
		if _, err := c.DescribeInstances(req); err != nil {
			t.Fatalf("a read signed like the one before: %v", err)
		}
	}
	var codes []string
	for range 2 {
		req := resetRequest("Same+Second9", false, in.ID)
		req.SetHeader(map[string]string{"X-TC-Timestamp": ts})
		_, err := c.ResetInstancesPassword(req)
		codes = append(codes, sdkCode(t, err))
	}
	if !slices.Equal(codes, []string{"", "OperationDenied.InstanceOperationInProgress"}) {
		t.Errorf("two identical resets: %q", codes)
	}
}

func TestTencentSDKDescribeInstances(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	for i := range 23 {
		e.addMachine(machineOpts{name: "node-" + strconv.Itoa(i), running: i%2 == 0})
	}
	win := e.addMachine(machineOpts{name: "win-1", os: sim.Windows})
	e.addMachine(machineOpts{name: "other-tenant", tenant: "globex"})
	c := e.cvmClient(k)

	page := func(offset, limit int64, filters ...*cvm.Filter) (*cvm.DescribeInstancesResponseParams, error) {
		req := cvm.NewDescribeInstancesRequest()
		if offset >= 0 {
			req.Offset = common.Int64Ptr(offset)
		}
		if limit >= 0 {
			req.Limit = common.Int64Ptr(limit)
		}
		req.Filters = filters
		resp, err := c.DescribeInstances(req)
		if err != nil {
			return nil, err
		}
		return resp.Response, nil
	}
	first, err := page(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	if *first.TotalCount != 24 || len(first.InstanceSet) != 20 {
		t.Fatalf("default page: TotalCount %d, %d instances; want 24 and 20", *first.TotalCount, len(first.InstanceSet))
	}
	rest, err := page(20, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest.InstanceSet) != 4 {
		t.Errorf("second page: %d instances, want 4", len(rest.InstanceSet))
	}
	seen := map[string]bool{}
	for _, in := range append(first.InstanceSet, rest.InstanceSet...) {
		if seen[*in.InstanceId] {
			t.Errorf("%s on two pages", *in.InstanceId)
		}
		seen[*in.InstanceId] = true
	}
	if _, err := page(0, 101); sdkCode(t, err) != "InvalidParameterValue" {
		t.Errorf("Limit 101: %v", err)
	}

	f := func(name string, values ...string) *cvm.Filter {
		return &cvm.Filter{Name: common.StringPtr(name), Values: strs(values...)}
	}
	byName, err := page(-1, -1, f("instance-name", "win-"))
	if err != nil {
		t.Fatal(err)
	}
	if *byName.TotalCount != 1 {
		t.Fatalf("instance-name filter: %d", *byName.TotalCount)
	}
	w := byName.InstanceSet[0]
	if *w.InstanceId != win.ID || *w.OsName != "Windows" || *w.DefaultLoginUser != "Administrator" ||
		*w.InstanceState != "STOPPED" || w.LatestOperationState != nil || w.Placement == nil {
		t.Errorf("the Windows instance: %s", jsonOf(w))
	}
	if _, err := time.Parse(time.RFC3339, *w.CreatedTime); err != nil {
		t.Errorf("CreatedTime: %v", err)
	}
	running, err := page(-1, 100, f("instance-state", "RUNNING"))
	if err != nil {
		t.Fatal(err)
	}
	if *running.TotalCount != 12 {
		t.Errorf("instance-state RUNNING: %d, want 12", *running.TotalCount)
	}
	byID, err := page(-1, -1, f("instance-id", win.ID), f("instance-state", "STOPPED", "RUNNING"))
	if err != nil || *byID.TotalCount != 1 {
		t.Errorf("instance-id and instance-state: %v %v", err, byID)
	}
	if _, err := page(-1, -1, f("zone", "ap-guangzhou-3")); sdkCode(t, err) != "InvalidFilter" {
		t.Errorf("unsupported filter: %v", err)
	}
	req := cvm.NewDescribeInstancesRequest()
	req.InstanceIds, req.Filters = strs(win.ID), []*cvm.Filter{f("instance-name", "win")}
	if _, err := c.DescribeInstances(req); sdkCode(t, err) != "InvalidParameterCombination" {
		t.Errorf("InstanceIds with Filters: %v", err)
	}
}

func TestTencentSDKPowerActions(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	stopped := e.addMachine(machineOpts{name: "stopped"})
	running := e.addMachine(machineOpts{name: "running", running: true})
	c := e.cvmClient(k)

	start := cvm.NewStartInstancesRequest()
	start.InstanceIds = strs(running.ID)
	if _, err := c.StartInstances(start); sdkCode(t, err) != "UnsupportedOperation.InstanceStateRunning" {
		t.Errorf("starting a running instance: %v", err)
	}
	reboot := cvm.NewRebootInstancesRequest()
	reboot.InstanceIds = strs(stopped.ID)
	if _, err := c.RebootInstances(reboot); sdkCode(t, err) != "UnsupportedOperation.InstanceStateStopped" {
		t.Errorf("rebooting a stopped instance: %v", err)
	}

	start.InstanceIds = strs(stopped.ID)
	if _, err := c.StartInstances(start); err != nil {
		t.Fatal(err)
	}
	stop := cvm.NewStopInstancesRequest()
	stop.InstanceIds, stop.StopType = strs(running.ID), common.StringPtr("HARD")
	if _, err := c.StopInstances(stop); err != nil {
		t.Fatal(err)
	}
	set := waitLatest(t, c, stopped.ID, running.ID)
	if got := set[stopped.ID]; *got.InstanceState != "RUNNING" || *got.LatestOperation != "StartInstances" || *got.LatestOperationState != "SUCCESS" {
		t.Errorf("started: %s", jsonOf(got))
	}
	if got := set[running.ID]; *got.InstanceState != "STOPPED" || *got.LatestOperation != "StopInstances" || *got.LatestOperationState != "SUCCESS" {
		t.Errorf("stopped: %s", jsonOf(got))
	}

	reboot.InstanceIds = strs(stopped.ID)
	if _, err := c.RebootInstances(reboot); err != nil {
		t.Fatal(err)
	}
	if got := waitLatest(t, c, stopped.ID)[stopped.ID]; *got.LatestOperation != "RebootInstances" || *got.LatestOperationState != "SUCCESS" {
		t.Errorf("rebooted: %s", jsonOf(got))
	}
	stop.StopType = common.StringPtr("NOW")
	if _, err := c.StopInstances(stop); sdkCode(t, err) != "InvalidParameterValue" {
		t.Errorf("StopType NOW: %v", err)
	}
}

func TestTencentSDKErrorCodes(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	linux := e.addMachine(machineOpts{name: "linux"})
	win := e.addMachine(machineOpts{name: "win", os: sim.Windows})
	foreign := e.addMachine(machineOpts{name: "foreign", tenant: "globex"})
	c := e.cvmClient(k)
	many := make([]string, 101)
	for i := range many {
		many[i] = "ins-" + strings.Repeat("0", 7) + strconv.FormatInt(int64(i), 36)
		if len(many[i]) > 12 {
			many[i] = many[i][:4] + many[i][len(many[i])-8:]
		}
	}
	for _, tc := range []struct {
		name string
		req  *cvm.ResetInstancesPasswordRequest
		want string
	}{
		{"an unknown instance", resetRequest("Tc3+Reset9Ok", false, "ins-0000abcd"), "InvalidInstanceId.NotFound"},
		{"another tenant's instance", resetRequest("Tc3+Reset9Ok", false, foreign.ID), "InvalidInstanceId.NotFound"},
		{"a malformed id", resetRequest("Tc3+Reset9Ok", false, "i-123"), "InvalidInstanceId.Malformed"},
		{"101 ids, none looked up", resetRequest("Tc3+Reset9Ok", false, many...), "InvalidParameterValue.LimitExceeded"},
		{"no ids", resetRequest("Tc3+Reset9Ok", false), "MissingParameter"},
		{"no password", func() *cvm.ResetInstancesPasswordRequest {
			r := resetRequest("", false, linux.ID)
			r.Password = nil
			return r
		}(), "MissingParameter"},
		{"a short password", resetRequest("Tc3+Rs9", false, linux.ID), "InvalidParameterValue.InvalidPassword"},
		{"two kinds of characters", resetRequest("tc3reset9ok", false, linux.ID), "InvalidParameterValue.InvalidPassword"},
		{"a leading slash", resetRequest("/Tc3+Reset9Ok", false, linux.ID), "InvalidParameterValue.InvalidPassword"},
		{"windows: under 12 characters", resetRequest("Tc3+Reset9O", false, win.ID), "InvalidParameterValue.InvalidPassword"},
		{"windows: the user name", resetRequest("Administrator+9", false, win.ID), "InvalidParameterValue.InvalidPassword"},
		{"a mixed batch takes the Windows rule", resetRequest("Tc3+Rst9", false, linux.ID, win.ID), "InvalidParameterValue.InvalidPassword"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ResetInstancesPassword(tc.req)
			if got := sdkCode(t, err); got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
	long := resetRequest("Tc3+Reset9Ok", false, linux.ID)
	long.UserName = common.StringPtr(strings.Repeat("u", 65))
	if _, err := c.ResetInstancesPassword(long); sdkCode(t, err) != "InvalidParameterValue.TooLong" {
		t.Errorf("a 65-character UserName: %v", err)
	}
	e.assertNoSecret("Tc3+Reset9Ok")
}

// A user the guest does not have fails the item; DescribeInstances says so.
func TestTencentSDKFailedResetShowsItsError(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "linux"})
	c := e.cvmClient(k)
	req := resetRequest("Tc3+Reset9Ok", false, in.ID)
	req.UserName = common.StringPtr("nobody")
	if _, err := c.ResetInstancesPassword(req); err != nil {
		t.Fatal(err)
	}
	got := waitLatest(t, c, in.ID)[in.ID]
	if *got.LatestOperationState != "FAILED" || got.LatestOperationErrorMsg == nil || *got.LatestOperationErrorMsg == "" {
		t.Errorf("failed reset: %s", jsonOf(got))
	}
}

func TestTencentSDKAuthentication(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	for _, tc := range []struct {
		name string
		key  key
		ts   time.Time
		want string
	}{
		{"a wrong secret", key{k.id, k.secret + "x"}, time.Now(), "AuthFailure.SignatureFailure"},
		{"an unknown SecretId", key{"AKIDunknown", k.secret}, time.Now(), "AuthFailure.SecretIdNotFound"},
		{"a timestamp 6 minutes old", k, time.Now().Add(-6 * time.Minute), "AuthFailure.SignatureExpire"},
		{"a timestamp 6 minutes ahead", k, time.Now().Add(6 * time.Minute), "AuthFailure.SignatureExpire"},
		{"the right key", k, time.Now(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := cvm.NewDescribeInstancesRequest()
			req.SetHeader(map[string]string{"X-TC-Timestamp": strconv.FormatInt(tc.ts.Unix(), 10)})
			_, err := e.cvmClient(tc.key).DescribeInstances(req)
			if got := sdkCode(t, err); got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// The key's request budget is the one every front door shares; spent, it
// is answered RequestLimitExceeded, which the SDK knows.
func TestTencentSDKRateLimit(t *testing.T) {
	e := newEnv(t, envOpts{rateLimit: 0.01, burst: 3})
	k := e.newKey("acme")
	c := e.cvmClient(k)
	var codes []string
	for range 2 {
		_, err := c.DescribeInstances(cvm.NewDescribeInstancesRequest())
		codes = append(codes, sdkCode(t, err))
	}
	e.mustDo(k, "GET", "/v1/instances", nil, http.StatusOK, nil)
	_, err := c.DescribeInstances(cvm.NewDescribeInstancesRequest())
	codes = append(codes, sdkCode(t, err))
	if !slices.Equal(codes, []string{"", "", "RequestLimitExceeded"}) {
		t.Errorf("codes %q", codes)
	}
}

// A failed database is InternalError, with the RequestId to quote, and
// the password nowhere.
func TestTencentSDKInternalError(t *testing.T) {
	e := newEnv(t, envOpts{})
	k := e.newKey("acme")
	in := e.addMachine(machineOpts{name: "m"})
	c := e.cvmClient(k)
	if err := e.srv.Store().DB.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.ResetInstancesPassword(resetRequest("Tc3+Broken9db", false, in.ID))
	if code := sdkCode(t, err); code != "InternalError" {
		t.Errorf("got %q (%v)", code, err)
	}
	if strings.Contains(err.Error(), "Tc3+Broken9db") || strings.Contains(e.logs.String(), "Tc3+Broken9db") {
		t.Error("the password leaked into the answer or the log")
	}
}
