package tencent

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bodies to every action: Parse must never
// panic, must answer only with its own errors, must never quote a password
// it was sent, and what it accepts must hold the documents' bounds.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"InstanceIds":["ins-1a2b3c4d"],"Password":"Tc3+Reset9Ok","UserName":"root","ForceStop":true}`,
		`{"Offset":0,"Limit":10,"Filters":[{"Name":"instance-state","Values":["RUNNING"]}]}`,
		`{"InstanceIds":["ins-1a2b3c4d"],"StopType":"SOFT_FIRST"}`,
		`{"TaskId":101}`,
		`{"InstanceIds":["x"],"Password":"secret-in-error?"}`,
		`{"Password":{"a":1}}`,
		``, `null`, `[]`, `"x"`, `{"Limit":1e400}`,
	} {
		f.Add(uint8(0), s)
	}
	all := append(append([]string{}, actions[ServiceCVM]...), actions[ServiceBM]...)
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		action := all[int(which)%len(all)]
		service := ServiceCVM
		if int(which)%len(all) >= len(actions[ServiceCVM]) {
			service = ServiceBM
		}
		req, err := Parse(service, action, "application/json", []byte(body))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" || e.Message == "" {
				t.Fatalf("not an API error: %v", err)
			}
			if i := strings.Index(body, `"Password":"`); i >= 0 {
				pw, _, _ := strings.Cut(body[i+len(`"Password":"`):], `"`)
				if len(pw) >= 6 && strings.Contains(e.Message, pw) {
					t.Fatalf("the error quotes the password: %s", e.Message)
				}
			}
			return
		}
		if len(req.InstanceIDs) > 100 {
			t.Fatalf("accepted %d ids", len(req.InstanceIDs))
		}
		if req.Limit < 0 || req.Limit > MaxLimit || req.Offset < 0 || req.TaskID < 0 {
			t.Fatalf("accepted paging %d/%d, task %d", req.Offset, req.Limit, req.TaskID)
		}
		if (action == ActionResetInstancesPassword || action == ActionResetDevicePassword) && len(req.Password) == 0 {
			t.Fatal("accepted a reset without a password")
		}
	})
}
