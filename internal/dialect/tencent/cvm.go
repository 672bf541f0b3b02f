package tencent

import (
	"context"
	"errors"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/password"
)

// doCVM runs a cvm action and returns the fields of its Response.
func (a *API) doCVM(ctx context.Context, p core.Principal, req Request) (map[string]any, error) {
	switch req.Action {
	case ActionDescribeInstances:
		return a.describeInstances(ctx, p, req)
	case ActionResetInstancesPassword:
		return a.resetInstancesPassword(ctx, p, req)
	case ActionStartInstances, ActionStopInstances, ActionRebootInstances:
		pw := core.PowerRequest{InstanceIDs: req.InstanceIDs, StopMode: stopMode(req.StopType)}
		switch req.Action {
		case ActionStartInstances:
			pw.Action, pw.Require = apiv1.ActionStart, core.RequireStopped
		case ActionStopInstances:
			pw.Action, pw.Require = apiv1.ActionStop, core.RequireRunningGuest
		default:
			pw.Action, pw.Require = apiv1.ActionReboot, core.RequireRunningGuest
		}
		if _, err := a.Svc.PowerAction(ctx, p, pw); err != nil {
			return nil, a.refusal(ctx, p, err)
		}
		return map[string]any{}, nil
	}
	return nil, apiErr(CodeInvalidAction, "unknown action")
}

func stopMode(stopType string) string {
	switch stopType {
	case StopHard:
		return apiv1.StopHard
	case StopSoftFirst:
		return apiv1.StopSoftThenHard
	}
	return apiv1.StopSoft
}

// resetInstancesPassword resets offline, as the console guide of this
// cloud does: stopped instances directly, running ones only with ForceStop
// (shut down, reset, started again). Either way the instance is started
// after the reset and ends RUNNING: the new password is applied during
// that boot, and only a guest that confirmed it counts as reset.
func (a *API) resetInstancesPassword(ctx context.Context, p core.Principal, req Request) (map[string]any, error) {
	// Tencent's rule depends on the OS: the strictest of the rules of the
	// instances named. Unknown ids are the core's to refuse.
	insts, err := a.Svc.InstancesByID(ctx, p, req.InstanceIDs)
	if err != nil {
		return nil, err
	}
	var osTypes []string
	for _, in := range insts {
		osTypes = append(osTypes, in.OSType)
	}
	policy := password.Tencent(osTypes...)
	_, err = a.Svc.ResetPassword(ctx, p, core.ResetRequest{InstanceIDs: req.InstanceIDs, User: req.UserName,
		Mode: apiv1.ModeOffline, ForceStop: req.ForceStop, Password: req.Password, Policy: &policy})
	if err != nil {
		return nil, a.refusal(ctx, p, err)
	}
	return map[string]any{}, nil
}

// refusal maps the core's refusals of instances in the wrong state to the
// code of the first such instance's state, or to
// OperationDenied.InstanceOperationInProgress when one of them is busy (a
// second reset of an instance being reset). Other errors pass.
func (a *API) refusal(ctx context.Context, p core.Principal, err error) error {
	var ce *core.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code {
	case core.CodeConsentRequired, core.CodeInstanceNotStopped, core.CodeInstanceNotRunning:
	default:
		return err
	}
	ids, _ := ce.Details["instanceIds"].([]string)
	insts, lerr := a.Svc.InstancesByID(ctx, p, ids)
	if lerr != nil || len(ids) == 0 {
		return err
	}
	for _, id := range ids {
		if in, ok := insts[id]; ok && in.Busy {
			return &Error{Code: CodeOperationInProgress, Message: core.AppendIDs(
				"these instances already have an operation in progress", map[string]any{"ids": ids}, "ids")}
		}
	}
	in, ok := insts[ids[0]]
	if !ok {
		return err
	}
	msg := "the action is not supported for instances in state " + InstanceState(in.State)
	if ce.Code == core.CodeConsentRequired && in.State == apiv1.StateRunning {
		msg = "these instances are running; set ForceStop to true to shut them down for the reset"
	}
	return &Error{Code: stateCode(in.State), Message: core.AppendIDs(msg, map[string]any{"ids": ids}, "ids")}
}

func (a *API) describeInstances(ctx context.Context, p core.Principal, req Request) (map[string]any, error) {
	q := core.SearchQuery{IDs: req.InstanceIDs, NameContains: req.Name, Offset: req.Offset, Limit: req.Limit}
	if len(req.States) > 0 {
		if q.States = coreStates(req.States); len(q.States) == 0 {
			// Only states fleetpass never shows were asked for.
			return map[string]any{"TotalCount": 0, "InstanceSet": []instance{}}, nil
		}
	}
	list, total, err := a.Svc.SearchInstances(ctx, p, q)
	if err != nil {
		return nil, err
	}
	details, err := a.Svc.LatestOperationDetails(ctx, p, list)
	if err != nil {
		return nil, err
	}
	set := make([]instance, len(list))
	for i, in := range list {
		set[i] = instanceOf(in, details[in.ID])
	}
	return map[string]any{"TotalCount": total, "InstanceSet": set}, nil
}

// instance is an Instance of DescribeInstances: the fields fleetpass
// knows, plus empty values of those a client reads unconditionally
// (Placement, the address lists, Tags).
type instance struct {
	InstanceID               string    `json:"InstanceId"`
	InstanceName             string    `json:"InstanceName"`
	InstanceState            string    `json:"InstanceState"`
	RestrictState            string    `json:"RestrictState"`
	OsName                   string    `json:"OsName"`
	DefaultLoginUser         string    `json:"DefaultLoginUser"`
	DefaultLoginPort         int       `json:"DefaultLoginPort"`
	LatestOperation          *string   `json:"LatestOperation"`
	LatestOperationState     *string   `json:"LatestOperationState"`
	LatestOperationRequestID *string   `json:"LatestOperationRequestId"`
	LatestOperationErrorMsg  *string   `json:"LatestOperationErrorMsg"`
	CreatedTime              string    `json:"CreatedTime"`
	UUID                     string    `json:"Uuid"`
	Placement                placement `json:"Placement"`
	PrivateIPAddresses       []string  `json:"PrivateIpAddresses"`
	PublicIPAddresses        []string  `json:"PublicIpAddresses"`
	SecurityGroupIDs         []string  `json:"SecurityGroupIds"`
	Tags                     []tag     `json:"Tags"`
	DisableAPITermination    bool      `json:"DisableApiTermination"`
	IsolatedSource           string    `json:"IsolatedSource"`
}

type placement struct {
	Zone      string `json:"Zone"`
	ProjectID int    `json:"ProjectId"`
}

type tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

func instanceOf(in apiv1.Instance, d core.LatestOperationDetail) instance {
	out := instance{InstanceID: in.ID, InstanceName: in.Name, InstanceState: InstanceState(in.State), RestrictState: "NORMAL",
		OsName: "Linux", DefaultLoginUser: in.AdminUser, DefaultLoginPort: 22,
		CreatedTime: in.CreatedAt.UTC().Format(time.RFC3339), UUID: in.ID,
		PrivateIPAddresses: []string{}, PublicIPAddresses: []string{}, SecurityGroupIDs: []string{}, Tags: []tag{},
		IsolatedSource: "NOTISOLATED"}
	if in.OSType == core.OSWindows {
		out.OsName, out.DefaultLoginPort = "Windows", 3389
	}
	if lo := in.LatestOperation; lo != nil {
		name, ok := operationName[lo.Kind]
		if !ok {
			name = lo.Kind
		}
		state := lo.State
		out.LatestOperation, out.LatestOperationState = &name, &state
		if d.RequestID != "" {
			id := d.RequestID
			out.LatestOperationRequestID = &id
		}
		if state == apiv1.OpStateFailed {
			msg := d.Message
			if msg == "" {
				msg = d.ErrorCode
			}
			out.LatestOperationErrorMsg = &msg
		}
	}
	return out
}
