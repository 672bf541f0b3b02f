package tencent

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const id1, id2 = "ins-1a2b3c4d", "ins-5e6f7a8b"

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "not an *Error: " + err.Error()
	}
	return ""
}

func TestParseRefuses(t *testing.T) {
	many := `"` + strings.Repeat(`ins-bad!", "`, 101) + `ins-bad!"`
	for _, tc := range []struct {
		name, service, action, body, want string
	}{
		{"an unknown action", ServiceCVM, "TerminateInstances", `{}`, CodeInvalidAction},
		{"a cvm action of bm", ServiceBM, ActionDescribeInstances, `{}`, CodeInvalidAction},
		{"not JSON", ServiceCVM, ActionDescribeInstances, `{"Offset":`, CodeInvalidParameter},
		{"two JSON values", ServiceCVM, ActionDescribeInstances, `{} {}`, CodeInvalidParameter},
		{"ids as a string", ServiceCVM, ActionStartInstances, `{"InstanceIds":"` + id1 + `"}`, CodeInvalidParameter},
		{"no ids", ServiceCVM, ActionStartInstances, `{}`, CodeMissingParameter},
		{"an empty id list", ServiceCVM, ActionResetInstancesPassword, `{"InstanceIds":[],"Password":"x"}`, CodeMissingParameter},
		// The count is checked before the form of any id.
		{"102 malformed ids", ServiceCVM, ActionResetInstancesPassword, `{"InstanceIds":[` + many + `],"Password":"x"}`, CodeLimitExceeded},
		{"a malformed id", ServiceCVM, ActionStopInstances, `{"InstanceIds":["i-123"]}`, CodeInstanceIDMalformed},
		{"an empty id", ServiceCVM, ActionStopInstances, `{"InstanceIds":[""]}`, CodeInstanceIDMalformed},
		{"a malformed device id", ServiceBM, ActionResetDevicePassword, `{"InstanceIds":["cpm-1"],"Password":"x"}`, CodeInvalidParameter},
		{"no password", ServiceCVM, ActionResetInstancesPassword, `{"InstanceIds":["` + id1 + `"]}`, CodeMissingParameter},
		{"an empty password", ServiceBM, ActionResetDevicePassword, `{"InstanceIds":["` + id1 + `"],"Password":""}`, CodeMissingParameter},
		{"a 65-character user", ServiceCVM, ActionResetInstancesPassword, `{"InstanceIds":["` + id1 + `"],"Password":"x","UserName":"` + strings.Repeat("u", 65) + `"}`, CodeTooLong},
		{"an unknown StopType", ServiceCVM, ActionStopInstances, `{"InstanceIds":["` + id1 + `"],"StopType":"soft"}`, CodeInvalidParameterValue},
		{"Limit 0", ServiceCVM, ActionDescribeInstances, `{"Limit":0}`, CodeInvalidParameterValue},
		{"Limit 101", ServiceBM, ActionDescribeDevices, `{"Limit":101}`, CodeInvalidParameterValue},
		{"a negative Offset", ServiceCVM, ActionDescribeInstances, `{"Offset":-1}`, CodeInvalidParameterValue},
		{"a fractional Offset", ServiceCVM, ActionDescribeInstances, `{"Offset":1.5}`, CodeInvalidParameter},
		{"ids with filters", ServiceCVM, ActionDescribeInstances, `{"InstanceIds":["` + id1 + `"],"Filters":[]}`, CodeParameterCombination},
		{"an unknown filter", ServiceCVM, ActionDescribeInstances, `{"Filters":[{"Name":"zone","Values":["x"]}]}`, CodeInvalidFilter},
		{"a filter twice", ServiceCVM, ActionDescribeInstances, `{"Filters":[{"Name":"instance-name","Values":["a"]},{"Name":"instance-name","Values":["b"]}]}`, CodeInvalidFilter},
		{"a filter without values", ServiceCVM, ActionDescribeInstances, `{"Filters":[{"Name":"instance-id","Values":[]}]}`, CodeInvalidParameterValue},
		{"an unknown state", ServiceCVM, ActionDescribeInstances, `{"Filters":[{"Name":"instance-state","Values":["running"]}]}`, CodeInvalidParameterValue},
		{"a malformed id filter", ServiceCVM, ActionDescribeInstances, `{"Filters":[{"Name":"instance-id","Values":["x"]}]}`, CodeInstanceIDMalformed},
		{"no TaskId", ServiceBM, ActionDescribeOperationResult, `{}`, CodeMissingParameter},
		{"a negative TaskId", ServiceBM, ActionDescribeOperationResult, `{"TaskId":-1}`, CodeInvalidParameter},
		{"a TaskId over int64", ServiceBM, ActionDescribeOperationResult, `{"TaskId":18446744073709551615}`, CodeInvalidParameter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.service, tc.action, "application/json", []byte(tc.body))
			if got := codeOf(err); got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseContentType(t *testing.T) {
	for ct, ok := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"": false, "text/plain": false, "application/x-www-form-urlencoded": false, "multipart/form-data; boundary=x": false,
	} {
		_, err := Parse(ServiceCVM, ActionDescribeInstances, ct, []byte(`{}`))
		if (err == nil) != ok {
			t.Errorf("%q: %v", ct, err)
		}
	}
}

func TestParseReads(t *testing.T) {
	req, err := Parse(ServiceCVM, ActionResetInstancesPassword, "application/json",
		[]byte(`{"InstanceIds":["`+id1+`","`+id2+`"],"Password":"Tc3+Reset9Ok","UserName":"deploy","ForceStop":true,"DryRun":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.InstanceIDs, []string{id1, id2}) || string(req.Password) != "Tc3+Reset9Ok" || req.UserName != "deploy" || !req.ForceStop {
		t.Errorf("reset: %+v", req)
	}

	req, err = Parse(ServiceCVM, ActionDescribeInstances, "application/json", []byte(``))
	if err != nil || req.Limit != DefaultLimit || req.Offset != 0 {
		t.Errorf("an empty DescribeInstances: %+v %v", req, err)
	}
	req, err = Parse(ServiceCVM, ActionDescribeInstances, "application/json", []byte(`{"Offset":20,"Limit":100,"Filters":[
		{"Name":"instance-id","Values":["`+id1+`"]},{"Name":"instance-name","Values":["web"]},{"Name":"instance-state","Values":["RUNNING","STOPPED"]}]}`))
	if err != nil || req.Offset != 20 || req.Limit != 100 || !slices.Equal(req.InstanceIDs, []string{id1}) || req.Name != "web" ||
		!slices.Equal(req.States, []string{"RUNNING", "STOPPED"}) {
		t.Errorf("DescribeInstances with filters: %+v %v", req, err)
	}

	for _, tc := range []struct{ body, want string }{
		{`{"InstanceIds":["` + id1 + `"]}`, StopSoft},
		{`{"InstanceIds":["` + id1 + `"],"ForceStop":true}`, StopSoftFirst},
		{`{"InstanceIds":["` + id1 + `"],"ForceStop":true,"StopType":"HARD"}`, StopHard},
	} {
		req, err := Parse(ServiceCVM, ActionStopInstances, "application/json", []byte(tc.body))
		if err != nil || req.StopType != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.body, req.StopType, err, tc.want)
		}
	}
	req, err = Parse(ServiceCVM, ActionRebootInstances, "application/json", []byte(`{"InstanceIds":["`+id1+`"],"ForceReboot":true}`))
	if err != nil || req.StopType != StopSoftFirst {
		t.Errorf("ForceReboot: %q %v", req.StopType, err)
	}
	req, err = Parse(ServiceBM, ActionDescribeOperationResult, "application/json", []byte(`{"TaskId":42}`))
	if err != nil || req.TaskID != 42 {
		t.Errorf("TaskId: %+v %v", req, err)
	}
}

func TestServiceOf(t *testing.T) {
	for version, want := range map[string]string{VersionCVM: ServiceCVM, VersionBM: ServiceBM, "2017-03-13": "", "": ""} {
		if got := ServiceOf(version); got != want {
			t.Errorf("%q: %q, want %q", version, got, want)
		}
	}
}
