package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
)

func TestInstanceStateMapsEveryPowerState(t *testing.T) {
	for ps, want := range map[driver.PowerState]string{
		driver.PowerRunning:  apiv1.StateRunning,
		driver.PowerStopped:  apiv1.StateStopped,
		driver.PowerStopping: apiv1.StateStopping,
		driver.PowerStarting: apiv1.StateStarting,
		driver.PowerUnknown:  apiv1.StateError,
		"levitating":         apiv1.StateError,
	} {
		if got := InstanceState(ps); got != want {
			t.Errorf("InstanceState(%q) = %s, want %s", ps, got, want)
		}
	}
}

func TestDriverErrorsBecomeItemCodesOrRetries(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     string // the item's failure code; "" for no failure
		passedOn bool   // returned as is: retried (transient) or the job's
	}{
		{"no error", nil, "", false},
		{"transient is retried", driver.Transientf("connection reset"), "", true},
		{"transient beats its cause", driver.Transient(fmt.Errorf("x: %w", driver.ErrUserNotFound)), "", true},
		{"no guest channel", fmt.Errorf("x: %w", driver.ErrNoGuestChannel), CodeNoGuestChannel, false},
		{"guest not alive", fmt.Errorf("x: %w", driver.ErrGuestNotAlive), CodeGuestNotAlive, false},
		{"user not found", fmt.Errorf("x: %w", driver.ErrUserNotFound), CodeUserNotFound, false},
		{"machine not found", fmt.Errorf("x: %w", driver.ErrMachineNotFound), CodeMachineNotFound, false},
		{"not running", fmt.Errorf("x: %w", driver.ErrNotRunning), CodeInstanceNotRunning, false},
		{"cancelled is the job's", fmt.Errorf("x: %w", context.Canceled), "", true},
		{"deadline is the job's", fmt.Errorf("x: %w", context.DeadlineExceeded), "", true},
		{"anything else", errors.New("disk on fire"), CodeDriverError, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mapDriverError(tc.err, "a step")
			var f *itemFailure
			switch {
			case tc.code != "":
				if !errors.As(got, &f) || f.code != tc.code {
					t.Errorf("got %v, want a %s failure", got, tc.code)
				}
			case tc.passedOn:
				if got != tc.err {
					t.Errorf("got %v, want %v passed on", got, tc.err)
				}
			default:
				if got != nil {
					t.Errorf("got %v, want nil", got)
				}
			}
		})
	}
}

func TestZeroConfigFieldsTakeTheDefaults(t *testing.T) {
	d := DefaultConfig()
	if got := (Config{}).withDefaults(); got != d {
		t.Errorf("zero config: %+v, want the defaults %+v", got, d)
	}
	c := Config{PollInterval: time.Millisecond, MaxAttempts: 2}.withDefaults()
	if c.PollInterval != time.Millisecond || c.MaxAttempts != 2 || c.BootTimeout != d.BootTimeout {
		t.Errorf("set fields are kept, the others defaulted: %+v", c)
	}
}
