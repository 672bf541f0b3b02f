package baremetal

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/password"
)

// Actions of the bare-metal API.
const (
	ActionResetDevicePasswd = "ResetDevicePasswd"
	// DescribeOperationResult is also accepted as spelled in part of the
	// platform's documentation: DescriptionOperationResult.
	ActionDescribeOperationResult    = "DescribeOperationResult"
	ActionDescriptionOperationResult = "DescriptionOperationResult"
	ActionDescribeDeviceList         = "DescribeDeviceList"
)

// Paging of DescribeDeviceList.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Request is a parsed action.
type Request struct {
	Action      string
	InstanceIDs []string
	// Passwd is set for ResetDevicePasswd only; the caller wipes it.
	Passwd []byte
	TaskID int64
	Alias  string
	Offset int
	Limit  int
}

// Parse reads an action's own parameters (the common ones are the
// signature's business). It checks what the document asks of each, the
// password rule included, before any instance is looked at. Its errors
// never quote a value.
func Parse(params url.Values) (Request, error) {
	req := Request{Action: params.Get("Action")}
	switch req.Action {
	case ActionResetDevicePasswd, ActionDescribeOperationResult, ActionDescriptionOperationResult, ActionDescribeDeviceList:
	default:
		return req, &Error{Code: codeCommonParameter, Desc: "InvalidAction",
			Message: fmt.Sprintf("unknown Action %q; see docs/api-baremetal.md", truncate(req.Action, 64))}
	}
	ids, err := indexedList(params, "instanceIds")
	if err != nil {
		return req, err
	}
	req.InstanceIDs = ids
	switch req.Action {
	case ActionResetDevicePasswd:
		if len(ids) == 0 {
			return req, invalidParameter("instanceIds.N: name at least one device")
		}
		if len(ids) > core.MaxBatch {
			return req, invalidParameter(fmt.Sprintf("instanceIds.N: at most %d devices a request, got %d", core.MaxBatch, len(ids)))
		}
		pw := params.Get("passwd")
		if pw == "" {
			return req, invalidParameter("passwd: the new password is required")
		}
		b := []byte(pw)
		if err := password.Check(password.BareMetal(), b, ""); err != nil {
			clear(b)
			var pe *password.Error
			if errors.As(err, &pe) {
				codes := make([]string, len(pe.Violations))
				for i, v := range pe.Violations {
					codes[i] = v.Rule
				}
				return req, invalidParameter("passwd: " + pe.Error() + " (rules broken: " + strings.Join(codes, ", ") + ")")
			}
			return req, invalidParameter("passwd: breaks the rule: " + password.BareMetal().Describe())
		}
		req.Passwd = b
	case ActionDescribeOperationResult, ActionDescriptionOperationResult:
		s := params.Get("taskId")
		if s == "" {
			return req, invalidParameter("taskId: required")
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 || !digits(s) {
			return req, invalidParameter("taskId: a positive integer")
		}
		req.TaskID = n
	case ActionDescribeDeviceList:
		if len(ids) > core.MaxBatch {
			return req, invalidParameter(fmt.Sprintf("instanceIds.N: at most %d devices a request", core.MaxBatch))
		}
		req.Offset, req.Limit = 0, DefaultLimit
		if s := params.Get("offset"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 1_000_000_000 || !digits(s) {
				return req, invalidParameter("offset: a non-negative integer")
			}
			req.Offset = n
		}
		if s := params.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > MaxLimit || !digits(s) {
				return req, invalidParameter(fmt.Sprintf("limit: from 1 to %d", MaxLimit))
			}
			req.Limit = n
		}
		if a := params.Get("alias"); a != "" {
			if len(a) > 128 {
				return req, invalidParameter("alias: at most 128 characters")
			}
			req.Alias = a
		}
	}
	return req, nil
}

// indexedList reads name.1, name.2, ... (the API's list convention) in
// the order of their numbers. Numbers need not be contiguous, but each
// must be a positive integer given once, and no value may be empty.
func indexedList(params url.Values, name string) ([]string, error) {
	type entry struct {
		n     int
		value string
	}
	var entries []entry
	seen := map[int]bool{}
	for key, values := range params {
		suffix, ok := strings.CutPrefix(key, name+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n < 1 || !digits(suffix) {
			return nil, invalidParameter(name + ".N: N must be a positive integer")
		}
		if seen[n] || len(values) != 1 {
			return nil, invalidParameter(fmt.Sprintf("%s.%d: given more than once", name, n))
		}
		seen[n] = true
		if values[0] == "" {
			return nil, invalidParameter(fmt.Sprintf("%s.%d: empty", name, n))
		}
		entries = append(entries, entry{n, values[0]})
		if len(entries) > core.MaxBatch*10 {
			// Bounds the work a request can ask for; the limit is checked
			// with its exact number by the action.
			break
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.n - b.n })
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.value
	}
	return out, nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
