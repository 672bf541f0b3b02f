package realbmc

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func rawClient(b *testing.B, s *machine) *client.Client {
	c, err := client.NewClient(s.bmc.Host, s.bmc.Port, s.bmc.User, s.bmc.Password)
	if err != nil {
		b.Fatal(err)
	}
	c.WithCipherSuiteID(types.CipherSuiteID3)
	c.WithTimeout(time.Second).WithRetry(2)
	c.WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	if err := c.Connect(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// BenchmarkOfflineResetOfABareMetalServer alternates, on one stand-in
// server behind ipmi_sim, between two ways of doing the same offline reset
// of the running server:
//
//   - the floor, by hand: a soft off with raw go-ipmi, its status polled
//     every 50 ms (the engine's poll in these tests) until off; power on;
//     the agent's liveness polled every 50 ms through the API until it is
//     back; the password set through the agent (an online reset, POST
//     until succeeded);
//   - fleetpass: POST /v1/password-resets (offline, with consent) until
//     the operation succeeded.
//
// Every reset is verified by SSH. Also times power round trips through the
// API (POST /v1/power-actions until succeeded) against the raw commands.
//
//	go test -run '^$' -bench OfflineResetOfABareMetalServer -benchtime 5x -v ./internal/realbmc/
func BenchmarkOfflineResetOfABareMetalServer(b *testing.B) {
	e := newEnv(b)
	old := newPassword()
	s := e.newServer("bm-bench", old)
	raw := rawClient(b, s)
	ctx := context.Background()
	status := func() bool {
		st, err := raw.GetChassisStatus(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return st.PowerIsOn
	}
	control := func(c chassis.ChassisControl) {
		if _, err := raw.ChassisControl(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	poll := func(ok func() bool) {
		deadline := time.Now().Add(2 * time.Minute)
		for !ok() {
			if time.Now().After(deadline) {
				b.Fatal("timed out")
			}
			time.Sleep(50 * time.Millisecond) // the engine's poll in these tests
		}
	}
	alive := func() bool {
		in, err := e.client.GetInstance(ctx, s.instance)
		return err == nil && in.GuestAlive
	}
	var floors, fps []time.Duration
	steps := map[string][]time.Duration{}
	pw := old
	for b.Loop() {
		// The floor.
		next := newPassword()
		t0 := time.Now()
		control(chassis.ChassisControlSoftShutdown)
		poll(func() bool { return !status() })
		t1 := time.Now()
		control(chassis.ChassisControlPowerUp)
		poll(alive)
		t2 := time.Now()
		op, err := e.client.ResetPassword(ctx, apiv1.PasswordReset{InstanceIDs: []string{s.instance}, User: user, Mode: apiv1.ModeOnline, Password: next})
		if err != nil {
			b.Fatal(err)
		}
		wantItem(b, e.wait(op.ID), apiv1.ItemSucceeded, "")
		t3 := time.Now()
		floors = append(floors, t3.Sub(t0))
		steps["off"] = append(steps["off"], t1.Sub(t0))
		steps["on-until-agent"] = append(steps["on-until-agent"], t2.Sub(t1))
		steps["set"] = append(steps["set"], t3.Sub(t2))
		b.StopTimer()
		wantLogins(b, s, next, pw)
		pw = next
		b.StartTimer()

		// fleetpass.
		next = newPassword()
		t0 = time.Now()
		wantItem(b, e.reset(s, apiv1.ModeOffline, true, next), apiv1.ItemSucceeded, "")
		fps = append(fps, time.Since(t0))
		b.StopTimer()
		wantLogins(b, s, next, pw)
		pw = next
		e.waitAlive(s)
		b.StartTimer()
	}
	floor, fp := median(floors), median(fps)
	for k, v := range steps {
		b.ReportMetric(median(v).Seconds(), "floor-"+k+"-s")
	}
	b.ReportMetric(floor.Seconds(), "floor-s")
	b.ReportMetric(fp.Seconds(), "fleetpass-s")
	b.ReportMetric(100*(fp-floor).Seconds()/floor.Seconds(), "overhead-%")
	js, _ := json.Marshal(map[string]any{"floors": floors, "fleetpass": fps})
	b.Logf("runs (ns): %s", js)

	// Power round trips through the API against the raw commands.
	var rawOn, rawOff, apiOn, apiOff []time.Duration
	for range 5 {
		t0 := time.Now()
		status()
		control(chassis.ChassisControlPowerDown)
		rawOff = append(rawOff, time.Since(t0))
		t0 = time.Now()
		status()
		control(chassis.ChassisControlPowerUp)
		rawOn = append(rawOn, time.Since(t0))
		e.waitAlive(s)
		t0 = time.Now()
		wantItem(b, e.power(apiv1.ActionStop, apiv1.StopHard, s), apiv1.ItemSucceeded, "")
		apiOff = append(apiOff, time.Since(t0))
		t0 = time.Now()
		wantItem(b, e.power(apiv1.ActionStart, "", s), apiv1.ItemSucceeded, "")
		apiOn = append(apiOn, time.Since(t0))
		e.waitAlive(s)
	}
	b.ReportMetric(float64(median(rawOff).Microseconds())/1000, "raw-off-ms")
	b.ReportMetric(float64(median(rawOn).Microseconds())/1000, "raw-on-ms")
	b.ReportMetric(float64(median(apiOff).Microseconds())/1000, "api-stop-hard-ms")
	b.ReportMetric(float64(median(apiOn).Microseconds())/1000, "api-start-ms")
}
