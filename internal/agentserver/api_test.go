package agentserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agent"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
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
		_, tok, _ := f.postToken("fpk-acme", "acme-secret-0123456789", apiv1.AgentTokenCreate{TTL: "50ms"})
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
