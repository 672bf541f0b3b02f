package ipmi_test

import (
	"context"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/fleetpass/fleetpass/internal/ipmitest"
)

// BenchmarkPowerRoundTrips times the driver's calls against raw go-ipmi
// calls on one session to the same ipmi_sim, alternating in one run:
//
//	go test -run '^$' -bench PowerRoundTrips -benchtime 200x ./internal/driver/ipmi/
//
// The driver reads the power status before each command (so that a second
// Start or Stop changes nothing), so its Start and Stop are compared with a
// raw status read plus the command.
func BenchmarkPowerRoundTrips(b *testing.B) {
	ipmitest.EnsureTools(b)
	h := &harness{bmcs: map[string]*bmc{}}
	h.d = newDriver(h)
	b.Cleanup(h.d.Close)
	m := h.newBMC(b)
	ctx := context.Background()
	raw, err := client.NewClient(m.sim.Host, m.sim.Port, m.sim.User, m.sim.Password)
	if err != nil {
		b.Fatal(err)
	}
	raw.WithCipherSuiteID(types.CipherSuiteID3)
	raw.WithTimeout(time.Second).WithRetry(2)
	raw.WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	if err := raw.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close(ctx) })
	// Warm the driver's session.
	if _, err := h.d.State(ctx, m.ref); err != nil {
		b.Fatal(err)
	}
	rawStatus := func() bool {
		st, err := raw.GetChassisStatus(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return st.PowerIsOn
	}
	rawControl := func(c chassis.ChassisControl) {
		if _, err := raw.ChassisControl(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("status/raw", func(b *testing.B) {
		for b.Loop() {
			rawStatus()
		}
	})
	b.Run("status/fleetpass", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.d.State(ctx, m.ref); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("on-off/raw", func(b *testing.B) {
		for b.Loop() {
			rawStatus()
			rawControl(chassis.ChassisControlPowerUp)
			rawStatus()
			rawControl(chassis.ChassisControlPowerDown)
		}
	})
	b.Run("on-off/fleetpass", func(b *testing.B) {
		for b.Loop() {
			if err := h.d.Start(ctx, m.ref); err != nil {
				b.Fatal(err)
			}
			if err := h.d.Stop(ctx, m.ref); err != nil {
				b.Fatal(err)
			}
		}
	})
}
