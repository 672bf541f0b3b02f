package agentcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

func TestMainCommands(t *testing.T) {
	var gotToken string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.EnrollRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		gotToken = req.Token
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(agentproto.EnrollResponse{AgentID: "agt-x", InstanceID: "ins-abcdefgh", Tenant: "acme", Secret: "s"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantOut  string
	}{
		{"no command shows usage", nil, "", 2, "Usage"},
		{"unknown command", []string{"frobnicate"}, "", 2, "unknown command"},
		{"version", []string{"version"}, "", 0, "fleetpass-agent"},
		{"enroll needs a server and a token", []string{"enroll", "--state", state}, "", 1, "needs --server"},
		{"run before enrolment says to enrol", []string{"run", "--state", state}, "", 1, "enrol"},
		{"enroll reads the token from stdin", []string{"enroll", "--server", srv.URL, "--token-file", "-", "--state", state}, "fpat_tok\n", 0, "enrolled: instance ins-abcdefgh"},
		{"enroll refuses to overwrite an identity", []string{"enroll", "--server", srv.URL, "--token", "t", "--state", state}, "", 1, "enrolled already"},
		{"plain http to another host is refused", []string{"enroll", "--server", "http://192.0.2.1:8080", "--token", "t", "--state", state + "2"}, "", 1, "loopback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Main(context.Background(), tc.args, strings.NewReader(tc.stdin), &out, &out)
			if code != tc.wantCode || !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("exit %d, output %q; want %d and %q", code, out.String(), tc.wantCode, tc.wantOut)
			}
		})
	}
	if gotToken != "fpat_tok" {
		t.Errorf("server got token %q", gotToken)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi, err)
	}
}
