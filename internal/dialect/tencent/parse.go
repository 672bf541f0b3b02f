package tencent

import (
	"fmt"
	"math"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
)

// Services and their versions.
const (
	ServiceCVM = "cvm"
	ServiceBM  = "bm"

	VersionCVM = "2017-03-12"
	VersionBM  = "2018-04-23"
)

// Actions.
const (
	ActionDescribeInstances      = "DescribeInstances"
	ActionResetInstancesPassword = "ResetInstancesPassword"
	ActionStartInstances         = "StartInstances"
	ActionStopInstances          = "StopInstances"
	ActionRebootInstances        = "RebootInstances"

	ActionResetDevicePassword     = "ResetDevicePassword"
	ActionDescribeOperationResult = "DescribeOperationResult"
	ActionDescribeDevices         = "DescribeDevices"
)

// actions lists each service's actions.
var actions = map[string][]string{
	ServiceCVM: {ActionDescribeInstances, ActionResetInstancesPassword, ActionStartInstances, ActionStopInstances, ActionRebootInstances},
	ServiceBM:  {ActionResetDevicePassword, ActionDescribeOperationResult, ActionDescribeDevices},
}

// ServiceOf is the service a version belongs to, or "".
func ServiceOf(version string) string {
	switch version {
	case VersionCVM:
		return ServiceCVM
	case VersionBM:
		return ServiceBM
	}
	return ""
}

// Paging of the Describe actions.
const (
	DefaultLimit = 20
	MaxLimit     = 100
	maxOffset    = 1_000_000_000
)

// Stop types of StopInstances and RebootInstances.
const (
	StopSoft      = "SOFT"
	StopHard      = "HARD"
	StopSoftFirst = "SOFT_FIRST"
)

// maxUserName is UserName's documented bound.
const maxUserName = 64

// Request is a parsed action: its name and the parameters it uses.
type Request struct {
	Service     string
	Action      string
	InstanceIDs []string
	// Password is set for the reset actions only; the caller wipes it.
	Password  []byte
	UserName  string
	ForceStop bool
	// StopType is SOFT, HARD or SOFT_FIRST (StopInstances, RebootInstances).
	StopType string
	Offset   int
	Limit    int
	// Name and States are DescribeInstances' instance-name and
	// instance-state filters (Tencent's state names); Alias is
	// DescribeDevices'.
	Name   string
	States []string
	Alias  string
	TaskID int64
}

// body is the union of every action's parameters. Parameters an action
// does not use (or that a newer SDK sends) are ignored, so that a client
// filling an optional field fleetpass does not know still works.
type body struct {
	InstanceIDs *[]string `json:"InstanceIds"`
	Password    *string   `json:"Password"`
	UserName    *string   `json:"UserName"`
	ForceStop   *bool     `json:"ForceStop"`
	ForceReboot *bool     `json:"ForceReboot"`
	StopType    *string   `json:"StopType"`
	Offset      *int64    `json:"Offset"`
	Limit       *int64    `json:"Limit"`
	Filters     *[]filter `json:"Filters"`
	Alias       *string   `json:"Alias"`
	TaskID      *uint64   `json:"TaskId"`
}

type filter struct {
	Name   string   `json:"Name"`
	Values []string `json:"Values"`
}

// Parse reads the parameters of action of service from its JSON body.
// contentType is the request's Content-Type. It checks what the documents
// ask of each parameter (the number of ids first, before any is looked
// at); the password rule, which depends on the instances' OS types, is the
// caller's. Its errors never quote the body.
func Parse(service, action, contentType string, data []byte) (Request, error) {
	req := Request{Service: service, Action: action}
	known := false
	for _, a := range actions[service] {
		known = known || a == action
	}
	if !known {
		return req, apiErr(CodeInvalidAction, fmt.Sprintf("the action %q does not exist in %s %s; see docs/api-tencent.md",
			truncate(action, 64), service, versionOf(service)))
	}
	if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/json" {
		return req, apiErr(CodeInvalidParameter, "send the parameters as a JSON body (Content-Type: application/json)")
	}
	var b body
	if err := dialecthttp.DecodeObject(data, &b, "%s must be %s"); dialecthttp.IsMoreThanOne(err) {
		return req, apiErr(CodeInvalidParameter, "the body holds more than one JSON value")
	} else if err != nil {
		return req, apiErr(CodeInvalidParameter, "the body is not a valid JSON object for this action: "+err.Error())
	}
	if b.InstanceIDs != nil {
		req.InstanceIDs = *b.InstanceIDs
	}

	switch action {
	case ActionResetInstancesPassword, ActionStartInstances, ActionStopInstances, ActionRebootInstances, ActionResetDevicePassword:
		if len(req.InstanceIDs) == 0 {
			return req, apiErr(CodeMissingParameter, "InstanceIds: name at least one instance")
		}
	}
	if err := checkIDs(service, req.InstanceIDs); err != nil {
		return req, err
	}

	switch action {
	case ActionResetInstancesPassword, ActionResetDevicePassword:
		if b.Password == nil || *b.Password == "" {
			return req, apiErr(CodeMissingParameter, "Password: the new password is required")
		}
		if action == ActionResetInstancesPassword {
			if b.UserName != nil {
				if utf8.RuneCountInString(*b.UserName) > maxUserName {
					return req, apiErr(CodeTooLong, fmt.Sprintf("UserName: at most %d characters", maxUserName))
				}
				req.UserName = *b.UserName
			}
			if b.ForceStop != nil {
				req.ForceStop = *b.ForceStop
			}
		}
		req.Password = []byte(*b.Password)
	case ActionStopInstances, ActionRebootInstances:
		req.StopType = StopSoft
		force := b.ForceStop
		if action == ActionRebootInstances {
			force = b.ForceReboot
		}
		// ForceStop / ForceReboot, the older parameters, mean a forced
		// stop once a normal one has failed.
		if force != nil && *force {
			req.StopType = StopSoftFirst
		}
		if b.StopType != nil {
			switch *b.StopType {
			case StopSoft, StopHard, StopSoftFirst:
				req.StopType = *b.StopType
			default:
				return req, apiErr(CodeInvalidParameterValue, "StopType: must be SOFT, HARD or SOFT_FIRST")
			}
		}
	case ActionDescribeInstances, ActionDescribeDevices:
		req.Limit = DefaultLimit
		if b.Limit != nil {
			if *b.Limit < 1 || *b.Limit > MaxLimit {
				return req, apiErr(CodeInvalidParameterValue, fmt.Sprintf("Limit: from 1 to %d", MaxLimit))
			}
			req.Limit = int(*b.Limit)
		}
		if b.Offset != nil {
			if *b.Offset < 0 || *b.Offset > maxOffset {
				return req, apiErr(CodeInvalidParameterValue, fmt.Sprintf("Offset: from 0 to %d", maxOffset))
			}
			req.Offset = int(*b.Offset)
		}
		if action == ActionDescribeDevices {
			if b.Alias != nil {
				if len(*b.Alias) > 128 {
					return req, apiErr(CodeInvalidParameterValue, "Alias: at most 128 characters")
				}
				req.Alias = *b.Alias
			}
			break
		}
		if b.Filters != nil {
			if b.InstanceIDs != nil {
				return req, apiErr(CodeParameterCombination, "InstanceIds and Filters cannot be given together")
			}
			if err := parseFilters(&req, *b.Filters); err != nil {
				return req, err
			}
		}
	case ActionDescribeOperationResult:
		if b.TaskID == nil || *b.TaskID == 0 {
			return req, apiErr(CodeMissingParameter, "TaskId: the task to describe is required")
		}
		if *b.TaskID > math.MaxInt64 {
			return req, apiErr(CodeInvalidParameter, "TaskId: no such task")
		}
		req.TaskID = int64(*b.TaskID)
	}
	return req, nil
}

// checkIDs applies the documents' bounds: at most 100 ids, each well-formed.
func checkIDs(service string, ids []string) error {
	if len(ids) > core.MaxBatch {
		return apiErr(CodeLimitExceeded, fmt.Sprintf("InstanceIds: at most %d instances a request, got %d", core.MaxBatch, len(ids)))
	}
	malformed, first := 0, -1
	for i, id := range ids {
		if !core.ValidInstanceID(id) {
			malformed++
			if first < 0 {
				first = i
			}
		}
	}
	if malformed > 0 {
		code := CodeInstanceIDMalformed
		if service == ServiceBM {
			code = CodeInvalidParameter
		}
		// Positions, not values: a malformed id may be anything, a
		// password pasted into the wrong field included.
		return apiErr(code, fmt.Sprintf("InstanceIds: %d malformed instance id(s), the first at position %d; ids look like ins-1a2b3c4d",
			malformed, first+1))
	}
	return nil
}

// parseFilters reads DescribeInstances' filters; each name may come once.
func parseFilters(req *Request, filters []filter) error {
	seen := map[string]bool{}
	for _, f := range filters {
		if seen[f.Name] {
			return apiErr(CodeInvalidFilter, fmt.Sprintf("the filter %q is given twice", truncate(f.Name, 40)))
		}
		seen[f.Name] = true
		if len(f.Values) == 0 {
			return apiErr(CodeInvalidParameterValue, fmt.Sprintf("the filter %q has no values", truncate(f.Name, 40)))
		}
		switch f.Name {
		case "instance-id":
			if err := checkIDs(ServiceCVM, f.Values); err != nil {
				return err
			}
			req.InstanceIDs = f.Values
		case "instance-name":
			if len(f.Values) > 1 {
				return apiErr(CodeInvalidParameterValue, "the filter instance-name takes one value")
			}
			if len(f.Values[0]) > 128 {
				return apiErr(CodeInvalidParameterValue, "instance-name: at most 128 characters")
			}
			req.Name = f.Values[0]
		case "instance-state":
			for _, v := range f.Values {
				if !knownState(v) {
					return apiErr(CodeInvalidParameterValue, fmt.Sprintf("instance-state: %q is not an instance state", truncate(v, 40)))
				}
			}
			req.States = f.Values
		default:
			return apiErr(CodeInvalidFilter, fmt.Sprintf("the filter %q is not supported; use instance-id, instance-name or instance-state",
				truncate(f.Name, 40)))
		}
	}
	return nil
}

func versionOf(service string) string {
	if service == ServiceBM {
		return VersionBM
	}
	return VersionCVM
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold a password.

func truncate(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "?")
	}
	return strings.ToValidUTF8(s[:n], "?") + "..."
}
