package realguest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// channels are the two guest channels every reset test runs through.
var channels = []struct {
	name     string
	newGuest func(e *env, name, password string) *machine
}{
	{"agent", (*env).newAgentGuest},
	{"qga", (*env).newQGAGuest},
}

func TestNativeResetOnlineChangesTheLoginPassword(t *testing.T) {
	for _, c := range channels {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			old, pw := newPassword(), newPassword()
			m := c.newGuest(e, "online-"+c.name, old)
			argv := testutil.WatchArgv(t, pw)
			argv.Expect(m.process())
			op := e.reset(apiv1.ModeOnline, false, pw, m)
			argv.Check(t)
			wantItem(t, op, m, apiv1.ItemSucceeded, "")
			if !m.g.Running() {
				t.Errorf("an online reset powered the guest off")
			}
			wantLogins(t, m, pw, old)
			e.noSecretsAnywhere(t, []*machine{m}, pw, old)
		})
	}
}

func TestNativeResetOfflineRestartsAndAppliesAtBoot(t *testing.T) {
	for _, c := range channels {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			old, pw := newPassword(), newPassword()
			m := c.newGuest(e, "offline-"+c.name, old)
			argv := testutil.WatchArgv(t, pw)
			argv.Expect(m.process())
			op := e.reset(apiv1.ModeOffline, true, pw, m)
			argv.Check(t)
			wantItem(t, op, m, apiv1.ItemSucceeded, "")
			if !m.g.Running() {
				t.Fatalf("the guest was left powered off")
			}
			wantLogins(t, m, pw, old)
			e.noSecretsAnywhere(t, []*machine{m}, pw, old)
			if c.name == "agent" && !containsAll(m.agentLogs(), "command applied", "ready") {
				t.Errorf("agent log does not show the staged command applied before ready:\n%s", m.agentLogs())
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestNativeResetOfStoppedGuestAppliesStagedPasswordAtBoot(t *testing.T) {
	e := newEnv(t, envOpts{})
	old, pw := newPassword(), newPassword()
	m := e.newAgentGuest("stopped-agent", old)
	m.g.PowerOff()
	e.waitState(m, apiv1.StateStopped)
	op := e.reset(apiv1.ModeAuto, false, pw, m)
	wantItem(t, op, m, apiv1.ItemSucceeded, "")
	wantLogins(t, m, pw, old)
}

func (e *env) waitState(m *machine, state string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		in, err := e.client.GetInstance(e.t.Context(), m.instance)
		if err == nil && in.State == state {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s never reached %s (last %+v, %v)", m.name, state, in, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A batch of 20 guests, half on each channel, one agent killed and two
// guests without the user: the others succeed, those fail, each with its
// own reason.
func TestNativeBatchOfTwentyWithDeadAgentAndMissingUser(t *testing.T) {
	e := newEnv(t, envOpts{})
	old, pw := newPassword(), newPassword()
	ms := make([]*machine, 20)
	for i := range ms {
		// Guests start on the test goroutine (guesttest fails with
		// t.Fatal); enrolment and readiness are waited for together.
		if i%2 == 0 {
			ms[i] = e.agentGuestNoWait(fmt.Sprintf("batch-%02d", i), old)
		} else {
			ms[i] = e.newQGAGuest(fmt.Sprintf("batch-%02d", i), old)
		}
	}
	for _, m := range ms {
		e.waitAlive(m)
	}
	// One guest of each channel lacks the user.
	dead, noUser := ms[4], map[*machine]bool{ms[6]: true, ms[7]: true}
	for m := range noUser {
		if _, err := m.g.Run("userdel", user); err != nil {
			t.Fatal(err)
		}
	}
	// The instance record still says alive until the server notices: the
	// reset is accepted, and its item fails with the liveness error.
	dead.killAgent(t)
	argv := testutil.WatchArgv(t, pw)
	argv.Expect("fleetpass-agent", "qemu-ga")
	op := e.reset(apiv1.ModeOnline, false, pw, ms...)
	argv.Check(t)
	for _, m := range ms {
		switch {
		case m == dead:
			wantItem(t, op, m, apiv1.ItemFailed, engine.CodeGuestNotAlive)
			if err := m.g.CheckLogin(user, old); err != nil {
				t.Errorf("%s: the dead agent's guest lost its old password: %v", m.name, err)
			}
		case noUser[m]:
			wantItem(t, op, m, apiv1.ItemFailed, engine.CodeUserNotFound)
		default:
			wantItem(t, op, m, apiv1.ItemSucceeded, "")
			wantLogins(t, m, pw, old)
		}
	}
	if op.Status != apiv1.OperationPartial {
		t.Errorf("operation status %s, want %s", op.Status, apiv1.OperationPartial)
	}
	e.noSecretsAnywhere(t, ms, pw, old)
}
