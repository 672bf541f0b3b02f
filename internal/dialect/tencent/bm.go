package tencent

import (
	"context"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/baremetal"
	"github.com/fleetpass/fleetpass/internal/password"
)

// doBM runs a bm action and returns the fields of its Response. Resets run
// online through the guest agent, as in the bare-metal API 2.0, whose task
// numbers and seven task statuses these share: a TaskId of one API is the
// other's taskId.
func (a *API) doBM(ctx context.Context, p core.Principal, req Request) (map[string]any, error) {
	switch req.Action {
	case ActionResetDevicePassword:
		// The product's own rule, as in its 2.0 API.
		policy := password.BareMetal()
		op, err := a.Svc.ResetPassword(ctx, p, core.ResetRequest{InstanceIDs: req.InstanceIDs, Mode: apiv1.ModeOnline,
			Password: req.Password, Policy: &policy, Require: core.RequireRunningGuest, NumberTask: true})
		if err != nil {
			return nil, err
		}
		n, err := a.Svc.TaskNumber(ctx, p, op.ID)
		if err != nil {
			return nil, err
		}
		return map[string]any{"TaskId": n}, nil
	case ActionDescribeOperationResult:
		op, err := a.Svc.OperationByTask(ctx, p, req.TaskID)
		if err != nil {
			return nil, err
		}
		var succeeded, failed, unfinished int
		subs := make([]subtask, len(op.Items))
		for i, it := range op.Items {
			st := baremetal.TaskUnfinished
			switch it.State {
			case apiv1.ItemSucceeded:
				st, succeeded = baremetal.TaskSuccess, succeeded+1
			case apiv1.ItemFailed:
				st, failed = baremetal.TaskFailed, failed+1
			default:
				unfinished++
			}
			subs[i] = subtask{InstanceID: it.InstanceID, TaskStatus: st}
		}
		return map[string]any{"TaskStatus": baremetal.TaskStatus(succeeded, failed, unfinished), "SubtaskStatusSet": subs}, nil
	case ActionDescribeDevices:
		list, total, err := a.Svc.SearchInstances(ctx, p, core.SearchQuery{IDs: req.InstanceIDs, NameContains: req.Alias,
			Offset: req.Offset, Limit: req.Limit})
		if err != nil {
			return nil, err
		}
		set := make([]device, len(list))
		for i, in := range list {
			set[i] = deviceOf(in)
		}
		return map[string]any{"TotalCount": total, "DeviceInfoSet": set}, nil
	}
	return nil, apiErr(CodeInvalidAction, "unknown action")
}

type subtask struct {
	InstanceID string `json:"InstanceId"`
	TaskStatus int    `json:"TaskStatus"`
}

// device is a DeviceInfo of DescribeDevices.
type device struct {
	InstanceID    string `json:"InstanceId"`
	Alias         string `json:"Alias"`
	DeviceStatus  uint64 `json:"DeviceStatus"`
	OperateStatus uint64 `json:"OperateStatus"`
	DeliverTime   string `json:"DeliverTime"`
	Tags          []tag  `json:"Tags"`
}

func deviceOf(in apiv1.Instance) device {
	ds, os := deviceStatus(in.State)
	return device{InstanceID: in.ID, Alias: in.Name, DeviceStatus: ds, OperateStatus: os,
		DeliverTime: in.CreatedAt.UTC().Format(time.DateTime), Tags: []tag{}}
}
