package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// An error about one request field names it in details.field
// (apiv1.DetailField) as well as in the message, whose text is unchanged:
// a client names the field its own way (the CLI as a flag) without reading
// the message.
func TestErrorsNameTheirFieldInDetails(t *testing.T) {
	s := servertest.Start(t)
	in := s.AddMachine(servertest.Machine{Name: "web", Running: true})
	for _, c := range []struct {
		name, path string
		body       any
		field      string
	}{
		{"reset mode", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Mode: "sideways", Generate: true}, "mode"},
		{"reset batch", "/v1/password-resets", apiv1.PasswordReset{Generate: true}, "instanceIds"},
		{"stop mode", "/v1/power-actions", apiv1.PowerAction{Action: "stop", InstanceIDs: []string{in.ID}, StopMode: "gently"}, "stopMode"},
		{"token ttl", "/v1/agent-tokens", apiv1.AgentTokenCreate{TTL: "10000h"}, "ttl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.Do(s.Admin, "POST", c.path, c.body)
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			e := r.ErrBody().Error
			if got := e.Details[apiv1.DetailField]; got != c.field {
				t.Errorf("details.field = %v, want %q (%+v)", got, c.field, e)
			}
			if !strings.HasPrefix(e.Message, c.field+": ") {
				t.Errorf("the message %q does not start with the field", e.Message)
			}
		})
	}
	// An error about no one field has no details.field.
	r := s.Do(s.Admin, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: []string{"ins-nope"}, Generate: true})
	if _, ok := r.ErrBody().Error.Details[apiv1.DetailField]; ok || r.Status == http.StatusAccepted {
		t.Errorf("an unknown instance: %d %s", r.Status, r.Body)
	}
}
