package driver_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

func TestScrubWithholdsThePasswordAndKeepsWhatTheEngineClassifiesBy(t *testing.T) {
	pw := []byte("pAbc123XYZ9x!")
	const b64 = "cEFiYzEyM1hZWjl4IQ=="
	plain := fmt.Errorf("op: %w", errors.New("agent said no"))
	if got := driver.Scrub(plain, pw, "withheld"); got != plain {
		t.Errorf("Scrub changed an error without the password: %v", got)
	}
	tests := []struct {
		name      string
		err       error
		is        error
		transient bool
	}{
		{"clear text", fmt.Errorf("op: %w: bad password pAbc123XYZ9x! for root", driver.ErrUserNotFound), driver.ErrUserNotFound, false},
		{"base64", fmt.Errorf("op: echo %s", b64), nil, false},
		{"transient stays transient", driver.Transientf("op: %w: %s", driver.ErrGuestNotAlive, pw), driver.ErrGuestNotAlive, true},
		{"transient with no sentinel", driver.Transient(fmt.Errorf("connection reset after %s", pw)), nil, true},
		{"no guest channel", fmt.Errorf("%w: %s", driver.ErrNoGuestChannel, pw), driver.ErrNoGuestChannel, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := driver.Scrub(tc.err, pw, "withheld")
			if leak := fmt.Sprintf("%v %+v", got, got); strings.Contains(leak, string(pw)) || strings.Contains(leak, b64) {
				t.Fatalf("scrubbed error still shows the password: %s", leak)
			}
			if !strings.Contains(got.Error(), "withheld") {
				t.Errorf("scrubbed error %q does not say the message was withheld", got)
			}
			if tc.is != nil && !errors.Is(got, tc.is) {
				t.Errorf("scrubbed error %v does not wrap %v", got, tc.is)
			}
			if driver.IsTransient(got) != tc.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", got, !tc.transient, tc.transient)
			}
		})
	}
}
