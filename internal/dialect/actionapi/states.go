package actionapi

import "github.com/fleetpass/fleetpass/internal/apiv1"

// platformState maps core states (docs/design.md#states) to the names the platform's
// instances show. The platform has no state for a password reset in
// progress: a VM being reset is off or booting, so the reset shows as
// STOPPED-then-BOOTING there; fleetpass says RESETTING_PASSWORD, which is
// truer and which SDKs pass through as a string.
var platformState = map[string]string{
	apiv1.StatePending:           "PENDING",
	apiv1.StateRunning:           "RUNNING",
	apiv1.StateStopping:          "STOPPING",
	apiv1.StateStopped:           "STOPPED",
	apiv1.StateStarting:          "BOOTING",
	apiv1.StateRebooting:         "REBOOTING",
	apiv1.StateResettingPassword: "RESETTING_PASSWORD",
	apiv1.StateError:             "ERROR",
}

// PlatformState is the platform's name for a core state.
func PlatformState(state string) string {
	if s, ok := platformState[state]; ok {
		return s
	}
	return "UNKNOWN"
}

// coreStates returns the core states a platform state name stands for.
func coreStates(name string) ([]string, bool) {
	var out []string
	for core, platform := range platformState {
		if platform == name {
			out = append(out, core)
		}
	}
	return out, len(out) > 0
}

func platformStateNames() []string {
	return []string{"PENDING", "RUNNING", "STOPPING", "STOPPED", "BOOTING", "REBOOTING", "RESETTING_PASSWORD", "ERROR"}
}
