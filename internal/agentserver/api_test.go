package agentserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/store"
)

func (f *fixture) postToken(keyID, secret string, req apiv1.AgentTokenCreate) (int, apiv1.AgentTokenCreated, string) {
	f.t.Helper()
	b, _ := json.Marshal(req)
	r, err := http.NewRequest(http.MethodPost, f.url+"/v1/agent-tokens", bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	if keyID != "" {
		r.SetBasicAuth(keyID, secret)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out apiv1.AgentTokenCreated
	var eb apiv1.ErrorBody
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	_ = json.Unmarshal(raw, &out)
	_ = json.Unmarshal(raw, &eb)
	return resp.StatusCode, out, eb.Error.Code
}

func TestAgentTokensAreAuthenticatedTenantBoundAndSingleUse(t *testing.T) {
	f := newFixture(t, fastConfig())
	ctx := context.Background()
	if err := f.svc.InsertKey(ctx, "fpk-admin", "admin-secret-0123456789", core.AdminTenant, "admin", true); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.InsertKey(ctx, "fpk-acme", "acme-secret-0123456789", "acme", "acme", false); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.EnsureTenant(ctx, "other"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		key        [2]string
		req        apiv1.AgentTokenCreate
		wantStatus int
		wantCode   string
		wantTenant string
	}{
		{"no key is refused", [2]string{}, apiv1.AgentTokenCreate{}, 401, core.CodeUnauthenticated, ""},
		{"wrong secret is refused", [2]string{"fpk-acme", "nope"}, apiv1.AgentTokenCreate{}, 401, core.CodeUnauthenticated, ""},
		{"a tenant key gets its own tenant", [2]string{"fpk-acme", "acme-secret-0123456789"}, apiv1.AgentTokenCreate{InstanceName: "web-01"}, 201, "", "acme"},
		{"a tenant key cannot enrol into another tenant", [2]string{"fpk-acme", "acme-secret-0123456789"}, apiv1.AgentTokenCreate{Tenant: "other"}, 404, core.CodeTenantNotFound, ""},
		{"an admin key names the tenant", [2]string{"fpk-admin", "admin-secret-0123456789"}, apiv1.AgentTokenCreate{Tenant: "other"}, 201, "", "other"},
		{"a bad ttl is refused", [2]string{"fpk-admin", "admin-secret-0123456789"}, apiv1.AgentTokenCreate{Tenant: "other", TTL: "forever"}, 400, core.CodeInvalidArgument, ""},
		{"a ttl past 30 days is refused", [2]string{"fpk-admin", "admin-secret-0123456789"}, apiv1.AgentTokenCreate{Tenant: "other", TTL: "800h"}, 400, core.CodeInvalidArgument, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, tok, code := f.postToken(tc.key[0], tc.key[1], tc.req)
			if status != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.wantStatus, tc.wantCode)
			}
			if tc.wantTenant != "" && (tok.Tenant != tc.wantTenant || tok.Token == "" || !tok.ExpiresAt.After(time.Now())) {
				t.Fatalf("token %+v", tok)
			}
		})
	}

	t.Run("a token enrols once, into its tenant and under its name", func(t *testing.T) {
		_, tok, _ := f.postToken("fpk-acme", "acme-secret-0123456789", apiv1.AgentTokenCreate{InstanceName: "db-7"})
		st, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: tok.Token, Hostname: "host-a"})
		if err != nil {
			t.Fatal(err)
		}
		in, err := f.svc.GetInstance(ctx, core.Principal{Tenant: "acme"}, st.InstanceID)
		if err != nil {
			t.Fatal(err)
		}
		if in.Name != "db-7" || in.Tenant != "acme" || in.Guest.Driver != core.AgentGuestDriver ||
			in.Power.Driver != core.ManualPowerDriver || in.OSType != "linux" || in.AdminUser != "root" {
			t.Errorf("enrolled instance %+v", in)
		}
		if _, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: tok.Token, Hostname: "host-b"}); err == nil {
			t.Error("the token enrolled a second machine")
		}
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		status, tok, code := f.postToken("fpk-acme", "acme-secret-0123456789", apiv1.AgentTokenCreate{TTL: "50ms"})
		if status != http.StatusCreated || tok.Token == "" {
			// Else the refusal below would prove nothing.
			t.Fatalf("creating a short-lived token: %d %q", status, code)
		}
		time.Sleep(100 * time.Millisecond)
		if _, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: tok.Token, Hostname: "late"}); err == nil {
			t.Error("an expired token enrolled a machine")
		}
	})

	t.Run("deleting the instance revokes its agent", func(t *testing.T) {
		_, tok, _ := f.postToken("fpk-acme", "acme-secret-0123456789", apiv1.AgentTokenCreate{})
		st, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: tok.Token, Hostname: "gone"})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DeleteInstance(ctx, core.Principal{Tenant: "acme"}, st.InstanceID); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := agent.Run(rctx, st, agent.Options{}); err == nil || rctx.Err() != nil {
			t.Errorf("agent of a deleted instance: Run = %v, want a refusal before the deadline", err)
		}
	})
}

// poll sends one poll as the enrolled agent and decodes the answer.
func (f *fixture) poll(ctx context.Context, st *agent.State, ready bool) agentproto.PollResponse {
	f.t.Helper()
	b, _ := json.Marshal(agentproto.PollRequest{Session: "s1", Ready: ready})
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+agentproto.PathPoll, bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+st.AgentID+":"+st.Secret)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("poll: status %d", resp.StatusCode)
	}
	var out agentproto.PollResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func TestAnIdlePollRechecksByReadingAndTakesOnlyWhatAnotherReplicaStored(t *testing.T) {
	cfg := agentserver.Config{Silence: 30 * time.Second, PollHold: 600 * time.Millisecond, AckTimeout: 30 * time.Second,
		Recheck: 20 * time.Millisecond}
	f := newFixture(t, cfg)
	counts := agentserver.CountQueue(f.api)
	ctx := context.Background()
	st, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: f.token("idle"), Hostname: "idle"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("an idle held poll takes once and then only reads", func(t *testing.T) {
		before := counts.Takes.Load()
		if got := f.poll(ctx, st, true); len(got.Commands) != 0 {
			t.Fatalf("idle poll got %d commands", len(got.Commands))
		}
		if takes := counts.Takes.Load() - before; takes != 1 {
			t.Errorf("an idle poll took commands %d times, want once (each take is a write)", takes)
		}
		if counts.Reads.Load() == 0 {
			t.Error("the held poll never rechecked the database")
		}
	})

	t.Run("a command stored without a wake-up arrives at a recheck", func(t *testing.T) {
		// A second channel over the same database stands for another
		// replica: its wake-ups do not reach this poll.
		other := agentserver.NewChannel(f.store, cfg)
		ref := driver.Ref{InstanceID: st.InstanceID, Address: st.AgentID}
		// The agent must be alive for a set-password: one ready poll.
		f.poll(ctx, st, true)
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = other.SetPassword(sctx, ref, "root", []byte("Another-replica-1")) }()
		got := f.poll(ctx, st, true)
		if len(got.Commands) != 1 || got.Commands[0].User != "root" {
			t.Fatalf("poll got %+v, want the other replica's command", got.Commands)
		}
	})
}

// ack sends an acknowledgement as the agent and returns the status and
// error code.
func (f *fixture) ack(st *agent.State, a agentproto.Ack) (int, string) {
	f.t.Helper()
	b, _ := json.Marshal(a)
	r, err := http.NewRequest(http.MethodPost, f.url+agentproto.PathAck, bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+st.AgentID+":"+st.Secret)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb apiv1.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code
}

func TestAnAgentAcknowledgesOnlyCommandsItWasSent(t *testing.T) {
	f := newFixture(t, fastConfig())
	ctx := context.Background()
	enrol := func(name string) *agent.State {
		st, err := agent.Enroll(ctx, agent.EnrollOptions{Server: f.url, Token: f.token(name), Hostname: name})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b := enrol("a"), enrol("b")
	sealed, err := agentproto.Seal(a.PublicKey, []byte("Never-Sent-Pw-1"))
	if err != nil {
		t.Fatal(err)
	}
	queue := core.NewAgentQueue(f.store)
	const id = "cmd-acktest0000001"
	if err := queue.Queue(ctx, store.AgentCommand{ID: id, AgentID: a.AgentID, Kind: agentproto.KindSetPassword,
		User: "root", Sealed: sealed}); err != nil {
		t.Fatal(err)
	}
	ok := agentproto.Ack{ID: id, Result: agentproto.ResultOK}

	steps := []struct {
		name       string
		by         *agent.State
		ack        agentproto.Ack
		wantStatus int
		wantCode   string
	}{
		{"a command not sent yet is refused", a, ok, http.StatusConflict, core.CodeCommandNotSent},
		{"another agent's command is refused", b, ok, http.StatusConflict, core.CodeCommandNotSent},
		{"an unknown result is refused", a, agentproto.Ack{ID: id, Result: "maybe"}, http.StatusBadRequest, core.CodeInvalidArgument},
	}
	for _, s := range steps {
		if status, code := f.ack(s.by, s.ack); status != s.wantStatus || code != s.wantCode {
			t.Errorf("%s: %d %q, want %d %q", s.name, status, code, s.wantStatus, s.wantCode)
		}
	}
	if cmd, err := queue.Command(ctx, id); err != nil || cmd.State != store.CommandPending {
		t.Fatalf("after the refused acks the command is %+v (%v), want still pending", cmd, err)
	}

	if got := f.poll(ctx, a, false); len(got.Commands) != 1 || got.Commands[0].ID != id {
		t.Fatalf("poll got %+v, want the command", got.Commands)
	}
	steps = []struct {
		name       string
		by         *agent.State
		ack        agentproto.Ack
		wantStatus int
		wantCode   string
	}{
		{"another agent still cannot acknowledge it once sent", b, ok, http.StatusConflict, core.CodeCommandNotSent},
		{"its agent acknowledges it once sent", a, ok, http.StatusNoContent, ""},
		{"a second acknowledgement changes nothing", a, agentproto.Ack{ID: id, Result: agentproto.ResultFailed}, http.StatusNoContent, ""},
		{"an unknown (superseded) command is nothing to wait for", a, agentproto.Ack{ID: "cmd-gone", Result: agentproto.ResultOK}, http.StatusNoContent, ""},
	}
	for _, s := range steps {
		if status, code := f.ack(s.by, s.ack); status != s.wantStatus || code != s.wantCode {
			t.Errorf("%s: %d %q, want %d %q", s.name, status, code, s.wantStatus, s.wantCode)
		}
	}
	if cmd, err := queue.Command(ctx, id); err != nil || cmd.State != agentproto.ResultOK {
		t.Errorf("the command is %+v (%v), want acknowledged ok", cmd, err)
	}
}
