package actionapi

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/password"
)

func TestParseChecksEachActionsParameters(t *testing.T) {
	for _, c := range []struct {
		name, action, ct, body string
		code                   string // "" when accepted
	}{
		{"reset", ActionResetInstancesPassword, "application/json", `{"instanceIds": ["ins-aaaaaaaa"], "password": "Good1pass"}`, ""},
		{"charset in content type", ActionResetInstancesPassword, "application/json; charset=utf-8", `{"instanceIds": ["ins-aaaaaaaa"], "password": "Good1pass"}`, ""},
		{"document example's backtick", ActionResetInstancesPassword, "application/json", "{\"instanceIds\": [\"instanceId1\"], \"password\": \"Example`123\"}", codeInvalidPassword},
		{"no action", "", "application/json", `{}`, codeMissingParameter},
		{"unknown action", "Explode", "application/json", `{}`, codeInvalidAction},
		{"not JSON content type", ActionDescribeInstances, "text/plain", `{}`, codeInvalidContentType},
		{"array body", ActionDescribeInstances, "application/json", `[]`, codeInvalidJSON},
		{"two values", ActionDescribeInstances, "application/json", `{} {}`, codeInvalidJSON},
		{"no ids", ActionStartInstances, "application/json", `{"instanceIds": []}`, codeMissingParameter},
		{"empty id", ActionStopInstances, "application/json", `{"instanceIds": [""]}`, codeInvalidParameter},
		{"no password", ActionResetInstancesPassword, "application/json", `{"instanceIds": ["ins-aaaaaaaa"]}`, codeMissingParameter},
		{"page size too big", ActionDescribeInstancesStatus, "application/json", `{"pageSize": 1001}`, codeInvalidParameter},
		{"page number zero", ActionDescribeInstances, "application/json", `{"pageNum": 0}`, codeInvalidParameter},
		{"status filter", ActionDescribeInstances, "application/json", `{"status": "BOOTING"}`, ""},
		{"unknown status", ActionDescribeInstances, "application/json", `{"status": "booting"}`, codeInvalidParameter},
		{"empty body describes all", ActionDescribeInstances, "application/json", ``, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.action, c.ct, []byte(c.body))
			var e *Error
			switch {
			case c.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.code != "" && (!errors.As(err, &e) || e.Code != c.code):
				t.Fatalf("got %v, want %s", err, c.code)
			}
		})
	}
}

func TestParseDefaultsAndForceShutdown(t *testing.T) {
	r, err := Parse(ActionDescribeInstances, "application/json", []byte(`{}`))
	if err != nil || r.PageSize != DefaultPageSize || r.PageNum != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = Parse(ActionStopInstances, "application/json", []byte(`{"instanceIds": ["ins-aaaaaaaa"], "forceShutdown": true}`))
	if err != nil || !r.ForceShutdown {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestInvalidPasswordNamesTheBrokenRulesNotThePassword(t *testing.T) {
	_, err := Parse(ActionResetInstancesPassword, "application/json", []byte("{\"instanceIds\": [\"x\"], \"password\": \"Example`123\"}"))
	if err == nil || !strings.Contains(err.Error(), "rules broken: charset") || strings.Contains(err.Error(), "Example") {
		t.Fatalf("got %v", err)
	}
}

func TestPlatformStatesRoundTrip(t *testing.T) {
	for _, name := range platformStateNames() {
		states, ok := coreStates(name)
		if !ok || len(states) != 1 || PlatformState(states[0]) != name {
			t.Errorf("%s: %v", name, states)
		}
	}
}

// canary is a password the fuzzer's seeds carry: no error may repeat it.
const canary = "Canary7Pass"

// fuzzActions and fuzzContentTypes are what the fuzzer picks from: every
// action and content type the parser knows, and one it does not. A fuzzed
// action or content type would be unknown for almost every input, and the
// body behind it never parsed.
var (
	fuzzActions = []string{ActionResetInstancesPassword, ActionDescribeInstances, ActionDescribeInstancesStatus,
		ActionStartInstances, ActionStopInstances, ActionRebootInstances, "Nope"}
	fuzzContentTypes = []string{"application/json", "application/json; charset=utf-8", "text/plain", ""}
)

func FuzzParse(f *testing.F) {
	index := func(list []string, v string) uint8 { return uint8(slices.Index(list, v)) }
	for _, s := range []struct{ action, ct, body string }{
		{ActionResetInstancesPassword, "application/json", `{"instanceIds": ["ins-aaaaaaaa"], "password": "` + canary + `"}`},
		{ActionResetInstancesPassword, "application/json", `{"instanceIds": ["ins-aaaaaaaa"], "password": "` + canary + "`" + `"}`},
		{ActionResetInstancesPassword, "application/json", `{"instanceIds": "x", "password": "` + canary + `"}`},
		{ActionResetInstancesPassword, "application/json", `{"password": ` + canary + `}`},
		{ActionDescribeInstances, "application/json", `{"status": "RUNNING", "pageSize": 5, "pageNum": 2, "instanceName": "a"}`},
		{ActionStopInstances, "application/json", `{"instanceIds": ["ins-aaaaaaaa"], "forceShutdown": true}`},
		{"Nope", "text/plain", ``},
	} {
		f.Add(index(fuzzActions, s.action), index(fuzzContentTypes, s.ct), []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, actionIndex, ctIndex uint8, body []byte) {
		action := fuzzActions[int(actionIndex)%len(fuzzActions)]
		ct := fuzzContentTypes[int(ctIndex)%len(fuzzContentTypes)]
		r, err := Parse(action, ct, body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			if _, ok := statusOf[e.Code]; !ok {
				t.Fatalf("code %q has no status", e.Code)
			}
			if strings.Contains(e.Message, canary) && !strings.Contains(action, canary) {
				t.Fatalf("the message repeats the password: %s", e.Message)
			}
			return
		}
		if len(r.InstanceIDs) > 100 || slices.Contains(r.InstanceIDs, "") {
			t.Fatalf("accepted ids %q", r.InstanceIDs)
		}
		if action == ActionResetInstancesPassword && password.Check(password.ActionAPI(), r.Password, "") != nil {
			t.Fatal("accepted a password the rule refuses")
		}
		if (action == ActionDescribeInstances || action == ActionDescribeInstancesStatus) &&
			(r.PageSize < 1 || r.PageSize > MaxPageSize || r.PageNum < 1) {
			t.Fatalf("accepted paging %d/%d", r.PageSize, r.PageNum)
		}
	})
}
