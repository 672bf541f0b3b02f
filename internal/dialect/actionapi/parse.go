package actionapi

import (
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/password"
)

// Actions of both paths.
const (
	ActionResetInstancesPassword  = "ResetInstancesPassword"
	ActionDescribeInstances       = "DescribeInstances"
	ActionDescribeInstancesStatus = "DescribeInstancesStatus"
	ActionStartInstances          = "StartInstances"
	ActionStopInstances           = "StopInstances"
	ActionRebootInstances         = "RebootInstances"
)

// Paging defaults of the Describe actions.
const (
	DefaultPageSize = 20
	MaxPageSize     = 1000
)

// Request is a parsed action: the action name and the parameters it uses.
type Request struct {
	Action      string
	InstanceIDs []string
	// Password is set for ResetInstancesPassword only; the caller wipes it.
	Password      []byte
	Status        string // a platform state name (DescribeInstances)
	InstanceName  string
	PageSize      int
	PageNum       int
	ForceShutdown bool
}

// body is the union of every action's JSON parameters. Fields other
// actions (or newer SDKs) send are ignored, as the platform does: an SDK
// that fills an optional filter fleetpass does not know must still work.
type body struct {
	InstanceIDs   *[]string `json:"instanceIds"`
	Password      *string   `json:"password"`
	Status        *string   `json:"status"`
	InstanceName  *string   `json:"instanceName"`
	PageSize      *int      `json:"pageSize"`
	PageNum       *int      `json:"pageNum"`
	ForceShutdown *bool     `json:"forceShutdown"`
}

// Parse reads an action's parameters from its JSON body. contentType is
// the request's Content-Type. It checks what the action's document asks of
// each parameter, the password rule included, before any instance is
// looked at: a request that cannot be valid is refused the same way
// whatever it names. Its errors never quote the body.
func Parse(action, contentType string, data []byte) (Request, error) {
	req := Request{Action: action}
	switch action {
	case ActionResetInstancesPassword, ActionDescribeInstances, ActionDescribeInstancesStatus,
		ActionStartInstances, ActionStopInstances, ActionRebootInstances:
	case "":
		return req, apiErr(codeMissingParameter, "the X-ZC-Action header is missing")
	default:
		return req, apiErr(codeInvalidAction, fmt.Sprintf("unknown action %q; see docs/api-action.md", truncate(action, 64)))
	}
	if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/json" {
		return req, apiErr(codeInvalidContentType, "send the body as application/json")
	}
	var b body
	if err := dialecthttp.DecodeObject(data, &b, "field %q must be %s"); dialecthttp.IsMoreThanOne(err) {
		return req, apiErr(codeInvalidJSON, "the request body holds more than one JSON value")
	} else if err != nil {
		return req, apiErr(codeInvalidJSON, "the request body is not a valid JSON object for this action: "+err.Error())
	}

	if b.InstanceIDs != nil {
		req.InstanceIDs = *b.InstanceIDs
	}
	switch action {
	case ActionResetInstancesPassword, ActionStartInstances, ActionStopInstances, ActionRebootInstances:
		if len(req.InstanceIDs) == 0 {
			return req, apiErr(codeMissingParameter, "instanceIds: name at least one instance")
		}
	}
	if len(req.InstanceIDs) > core.MaxBatch {
		return req, apiErr(codeTooManyInstances, fmt.Sprintf("instanceIds: at most %d instances a request, got %d", core.MaxBatch, len(req.InstanceIDs)))
	}
	for _, id := range req.InstanceIDs {
		if id == "" {
			return req, apiErr(codeInvalidParameter, "instanceIds: an instance id is empty")
		}
	}

	switch action {
	case ActionResetInstancesPassword:
		if b.Password == nil || *b.Password == "" {
			return req, apiErr(codeMissingParameter, "password: the new password is required")
		}
		pw := []byte(*b.Password)
		// The document's rule has no user-name clause, so no user is needed.
		if err := password.Check(password.ActionAPI(), pw, ""); err != nil {
			clear(pw)
			var pe *password.Error
			if errors.As(err, &pe) {
				return req, apiErr(codeInvalidPassword, explain(pe))
			}
			return req, apiErr(codeInvalidPassword, "the password breaks the rule: "+password.ActionAPI().Describe())
		}
		req.Password = pw
	case ActionDescribeInstances, ActionDescribeInstancesStatus:
		req.PageSize, req.PageNum = DefaultPageSize, 1
		if b.PageSize != nil {
			if *b.PageSize < 1 || *b.PageSize > MaxPageSize {
				return req, apiErr(codeInvalidParameter, fmt.Sprintf("pageSize: from 1 to %d", MaxPageSize))
			}
			req.PageSize = *b.PageSize
		}
		if b.PageNum != nil {
			// Bounded so that the offset cannot overflow.
			if *b.PageNum < 1 || *b.PageNum > 1_000_000 {
				return req, apiErr(codeInvalidParameter, "pageNum: from 1 to 1000000")
			}
			req.PageNum = *b.PageNum
		}
		if action == ActionDescribeInstances {
			if b.Status != nil && *b.Status != "" {
				if _, ok := coreStates(*b.Status); !ok {
					return req, apiErr(codeInvalidParameter, fmt.Sprintf("status: not one of %s", strings.Join(platformStateNames(), ", ")))
				}
				req.Status = *b.Status
			}
			if b.InstanceName != nil {
				if len(*b.InstanceName) > 128 {
					return req, apiErr(codeInvalidParameter, "instanceName: at most 128 characters")
				}
				req.InstanceName = *b.InstanceName
			}
		}
	case ActionStopInstances:
		if b.ForceShutdown != nil {
			req.ForceShutdown = *b.ForceShutdown
		}
	}
	return req, nil
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold a password.

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// explain says which rules a password broke, in words and by their stable
// rule codes, without any trace of the password.
func explain(pe *password.Error) string {
	codes := make([]string, len(pe.Violations))
	for i, v := range pe.Violations {
		codes[i] = v.Rule
	}
	return pe.Error() + " (rules broken: " + strings.Join(codes, ", ") + ")"
}
