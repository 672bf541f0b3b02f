package baremetal

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/password"
)

func TestParseChecksEachActionsParameters(t *testing.T) {
	for _, c := range []struct {
		name, query string
		code        int // 0 when accepted
	}{
		{"document example", "Action=ResetDevicePasswd&instanceIds.1=ins-aaaaaaaa&instanceIds.2=ins-bbbbbbbb&passwd=abc123456", 0},
		{"unknown action", "Action=Nope", codeCommonParameter},
		{"no ids", "Action=ResetDevicePasswd&passwd=abc123456", codeInvalidParam},
		{"no passwd", "Action=ResetDevicePasswd&instanceIds.1=ins-aaaaaaaa", codeInvalidParam},
		{"one kind of character", "Action=ResetDevicePasswd&instanceIds.1=ins-aaaaaaaa&passwd=abcdefgh", codeInvalidParam},
		{"plus is not in the rule", "Action=ResetDevicePasswd&instanceIds.1=ins-aaaaaaaa&passwd=abc%2B12345", codeInvalidParam},
		{"index zero", "Action=ResetDevicePasswd&instanceIds.0=ins-aaaaaaaa&passwd=abc123456", codeInvalidParam},
		{"index twice", "Action=ResetDevicePasswd&instanceIds.1=a&instanceIds.01=b&passwd=abc123456", codeInvalidParam},
		{"empty id", "Action=ResetDevicePasswd&instanceIds.1=&passwd=abc123456", codeInvalidParam},
		{"task", "Action=DescribeOperationResult&taskId=101", 0},
		{"task, other spelling", "Action=DescriptionOperationResult&taskId=101", 0},
		{"task zero", "Action=DescribeOperationResult&taskId=0", codeInvalidParam},
		{"signed task", "Action=DescribeOperationResult&taskId=%2B1", codeInvalidParam},
		{"device list", "Action=DescribeDeviceList&offset=20&limit=100&alias=web", 0},
		{"limit too big", "Action=DescribeDeviceList&limit=101", codeInvalidParam},
		{"negative offset", "Action=DescribeDeviceList&offset=-1", codeInvalidParam},
	} {
		t.Run(c.name, func(t *testing.T) {
			params, err := url.ParseQuery(c.query)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(params)
			var e *Error
			switch {
			case c.code == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case c.code != 0 && (!errors.As(err, &e) || e.Code != c.code):
				t.Fatalf("got %v, want %d", err, c.code)
			}
		})
	}
}

func TestParseOrdersIDsByTheirNumber(t *testing.T) {
	params, _ := url.ParseQuery("Action=ResetDevicePasswd&instanceIds.10=c&instanceIds.2=b&instanceIds.1=a&passwd=abc123456")
	r, err := Parse(params)
	if err != nil || !slices.Equal(r.InstanceIDs, []string{"a", "b", "c"}) {
		t.Fatalf("%q %v", r.InstanceIDs, err)
	}
}

func TestTaskStatusHasTheSevenValuesOfTheDocument(t *testing.T) {
	for _, c := range []struct{ s, f, u, want int }{
		{2, 0, 0, 1}, {0, 2, 0, 2}, {1, 1, 0, 3}, {0, 0, 2, 4}, {1, 0, 1, 5}, {0, 1, 1, 6}, {1, 1, 1, 7},
	} {
		if got := TaskStatus(c.s, c.f, c.u); got != c.want {
			t.Errorf("succeeded %d, failed %d, unfinished %d: %d, want %d", c.s, c.f, c.u, got, c.want)
		}
	}
}

const canary = "Canary7Pass"

// fuzzActions is what the fuzzer picks the action from: each the parser
// knows, and one it does not. A fuzzed Action would be unknown for almost
// every input, and the parameters behind it never parsed.
var fuzzActions = []string{ActionResetDevicePasswd, ActionDescribeOperationResult, ActionDescriptionOperationResult,
	ActionDescribeDeviceList, "Nope"}

func FuzzParse(f *testing.F) {
	for _, s := range []struct {
		action uint8
		rest   string
	}{
		{0, "instanceIds.1=ins-aaaaaaaa&passwd=" + canary},
		{0, "instanceIds.1=ins-aaaaaaaa&passwd=" + canary + "%2B"},
		{0, "instanceIds.x=" + canary + "&passwd=" + canary},
		{1, "taskId=12"},
		{2, "taskId=99999999999999999999"},
		{3, "offset=3&limit=7&instanceIds.3=z"},
		{4, ""},
		{0, "Action=ResetDevicePasswd"},
	} {
		f.Add(s.action, s.rest)
	}
	f.Fuzz(func(t *testing.T, actionIndex uint8, rest string) {
		params, err := url.ParseQuery(rest)
		if err != nil {
			return
		}
		// Set, not added: a second Action is the parser's own case, which
		// the rest may still hold.
		if !params.Has("Action") {
			params.Set("Action", fuzzActions[int(actionIndex)%len(fuzzActions)])
		}
		r, err := Parse(params)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == 0 {
				t.Fatalf("not a coded *Error: %v", err)
			}
			if strings.Contains(e.Message, canary) && !strings.Contains(params.Get("Action"), canary) {
				t.Fatalf("the message repeats a value: %s", e.Message)
			}
			return
		}
		if len(r.InstanceIDs) > 100 || slices.Contains(r.InstanceIDs, "") {
			t.Fatalf("accepted ids %q", r.InstanceIDs)
		}
		switch r.Action {
		case ActionResetDevicePasswd:
			if len(r.InstanceIDs) == 0 || password.Check(password.BareMetal(), r.Passwd, "") != nil {
				t.Fatal("accepted a reset without ids or with a password the rule refuses")
			}
		case ActionDescribeOperationResult, ActionDescriptionOperationResult:
			if r.TaskID < 1 {
				t.Fatalf("accepted task %d", r.TaskID)
			}
		case ActionDescribeDeviceList:
			if r.Limit < 1 || r.Limit > MaxLimit || r.Offset < 0 {
				t.Fatalf("accepted paging %d/%d", r.Offset, r.Limit)
			}
		}
	})
}
