package tencent

import "github.com/fleetpass/fleetpass/internal/apiv1"

// instanceState maps core states (docs/design.md#states) to Tencent's InstanceState
// names. Tencent has no state for a password reset in progress, nor for an
// instance in error: fleetpass answers RESETTING_PASSWORD and ERROR, which
// the SDKs pass through as strings, rather than a state that would be
// false. States other than these (UNKNOWN, MISSING of the libvirt
// inventory) pass through too.
var instanceState = map[string]string{
	apiv1.StatePending:   "PENDING",
	apiv1.StateRunning:   "RUNNING",
	apiv1.StateStopping:  "STOPPING",
	apiv1.StateStopped:   "STOPPED",
	apiv1.StateStarting:  "STARTING",
	apiv1.StateRebooting: "REBOOTING",
}

// InstanceState is Tencent's name for a core state.
func InstanceState(state string) string {
	if s, ok := instanceState[state]; ok {
		return s
	}
	return state
}

// tencentStates are the InstanceState values Tencent documents; a filter
// on one fleetpass never shows simply matches nothing.
var tencentStates = []string{"PENDING", "LAUNCH_FAILED", "RUNNING", "STOPPED", "STARTING", "STOPPING", "REBOOTING",
	"SHUTDOWN", "TERMINATING", "ENTER_RESCUE_MODE", "RESCUE_MODE", "EXIT_RESCUE_MODE",
	"ENTER_SERVICE_LIVE_MIGRATE", "SERVICE_LIVE_MIGRATE", "EXIT_SERVICE_LIVE_MIGRATE",
	// fleetpass's own, as InstanceState answers them.
	apiv1.StateResettingPassword, apiv1.StateError}

func knownState(name string) bool {
	for _, s := range tencentStates {
		if s == name {
			return true
		}
	}
	return false
}

// coreStates returns the core states the Tencent state names stand for.
func coreStates(names []string) []string {
	var out []string
	for _, name := range names {
		matched := false
		for c, t := range instanceState {
			if t == name {
				out = append(out, c)
				matched = true
			}
		}
		if !matched && (name == apiv1.StateResettingPassword || name == apiv1.StateError) {
			out = append(out, name)
		}
	}
	return out
}

// stateCode is the UnsupportedOperation.InstanceState* code refusing an
// action on an instance in state (a core state).
func stateCode(state string) string {
	switch state {
	case apiv1.StatePending:
		return CodeInstanceStatePrefix + "Pending"
	case apiv1.StateRunning:
		return CodeInstanceStatePrefix + "Running"
	case apiv1.StateStopping:
		return CodeInstanceStatePrefix + "Stopping"
	case apiv1.StateStopped:
		return CodeInstanceStatePrefix + "Stopped"
	case apiv1.StateStarting:
		return CodeInstanceStatePrefix + "Starting"
	case apiv1.StateRebooting:
		return CodeInstanceStatePrefix + "Rebooting"
	case apiv1.StateError:
		return CodeInstanceStatePrefix + "Corrupted"
	}
	return CodeUnsupportedOperation
}

// Operation names: LatestOperation is the name of the action that started
// the operation.
var operationName = map[string]string{
	apiv1.KindResetPassword: ActionResetInstancesPassword,
	apiv1.KindStart:         ActionStartInstances,
	apiv1.KindStop:          ActionStopInstances,
	apiv1.KindReboot:        ActionRebootInstances,
}

// Bare-metal device statuses (DeviceInfo.DeviceStatus and OperateStatus).
const (
	deviceInitialising = 2
	deviceInService    = 4
	deviceFaulty       = 16

	operateRunning   = 1
	operateStopping  = 2
	operateStopped   = 3
	operateStarting  = 5
	operateRebooting = 7
)

// deviceStatus maps a core state to DescribeDevices' two numbers.
func deviceStatus(state string) (device, operate uint64) {
	switch state {
	case apiv1.StatePending:
		return deviceInitialising, 0
	case apiv1.StateError:
		return deviceFaulty, 0
	case apiv1.StateStopping:
		return deviceInService, operateStopping
	case apiv1.StateStopped:
		return deviceInService, operateStopped
	case apiv1.StateStarting:
		return deviceInService, operateStarting
	case apiv1.StateRebooting:
		return deviceInService, operateRebooting
	case apiv1.StateRunning, apiv1.StateResettingPassword:
		// A bare-metal reset runs online: the machine keeps running.
		return deviceInService, operateRunning
	}
	return deviceFaulty, 0
}
