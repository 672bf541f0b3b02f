package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

func TestPasswordUTF16ConvertsAndRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string // "" means nil
	}{
		{"ascii", []byte("Abc-123!"), "Abc-123!"},
		{"non-ascii", []byte("Pässwörd€1"), "Pässwörd€1"},
		{"astral", []byte("key🔑Z9"), "key🔑Z9"},
		{"NUL is refused", []byte("ab\x00cd"), ""},
		{"invalid UTF-8 is refused", []byte{'a', 0xff, 'b'}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := passwordUTF16(tc.in)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			want := append(utf16.Encode([]rune(tc.want)), 0)
			if len(got) != len(want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("got %v, want %v", got, want)
				}
			}
		})
	}
}

func TestNetUserResultMapsWindowsStatuses(t *testing.T) {
	tests := []struct {
		status   uint32
		wantCode string
	}{
		{0, agentproto.ResultOK},
		{2221, agentproto.ResultUserNotFound},
		{2245, agentproto.ResultFailed},
		{5, agentproto.ResultFailed},
		{87, agentproto.ResultFailed},
	}
	for _, tc := range tests {
		res := netUserResult("Administrator", tc.status)
		if res.Code != tc.wantCode {
			t.Errorf("status %d: code %s, want %s", tc.status, res.Code, tc.wantCode)
		}
		if tc.status != 0 && res.ExitCode != int(tc.status) {
			t.Errorf("status %d: exit code %d", tc.status, res.ExitCode)
		}
	}
}

func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		url    string
		wantOK bool
	}{
		{"http://127.0.0.1:8080", true},
		{"http://[::1]:8080", true},
		{"http://localhost:8080", true},
		{"http://10.0.0.5:8080", false},
		{"http://fleetpass.example", false},
		{"https://fleetpass.example", true},
		{"ftp://fleetpass.example", false},
	}
	for _, tc := range tests {
		_, err := newHTTPClient(tc.url, "")
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: err %v, want ok=%v", tc.url, err, tc.wantOK)
		}
	}
}

func TestPinnedFingerprintAcceptsOnlyThatCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"commands":[]}`))
	}))
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	good := strings.ToUpper(hex.EncodeToString(sum[:]))
	var colons []string
	for i := 0; i < len(good); i += 2 {
		colons = append(colons, good[i:i+2])
	}
	bad := strings.Repeat("00", 32)
	tests := []struct {
		name, fp string
		wantOK   bool
	}{
		{"pinned, with colons", strings.Join(colons, ":"), true},
		{"pinned, plain hex", strings.ToLower(good), true},
		{"another certificate", bad, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newHTTPClient(srv.URL, tc.fp)
			if err != nil {
				t.Fatal(err)
			}
			var out agentproto.PollResponse
			err = post(context.Background(), c, srv.URL, agentproto.PathPoll, "", agentproto.PollRequest{}, &out)
			if (err == nil) != tc.wantOK {
				t.Fatalf("err %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
	if _, err := normalizeFingerprint("abc"); err == nil {
		t.Error("a short fingerprint was accepted")
	}
}

func TestStateRoundTripsPrivately(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	pub, priv, err := agentproto.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	st := &State{Server: "https://x", AgentID: "agt-1", InstanceID: "ins-1", Tenant: "t", Secret: "s",
		PublicKey: pub[:], PrivateKey: priv[:]}
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.AgentID != st.AgentID || !bytes.Equal(got.PrivateKey, st.PrivateKey) {
		t.Errorf("loaded %+v", got)
	}
	if _, err := LoadState(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "enrol") {
		t.Errorf("missing state: %v, want a hint to enrol", err)
	}
}

// The checks the Windows agent makes before NetUserSetInfo, run here on
// Linux: what reaches the Windows call is a named user and a NUL-terminated
// UTF-16 password.
func TestNetUserArgsRefuseWhatWindowsCannotTake(t *testing.T) {
	tests := []struct {
		name, user string
		password   []byte
		refused    bool
	}{
		{"a user and a password", "Administrator", []byte("Pässw0rd-Ω"), false},
		{"no user", "", []byte("Passw0rd!"), true},
		{"a NUL in the user", "Admin\x00istrator", []byte("Passw0rd!"), true},
		{"a NUL in the password", "Administrator", []byte("Pass\x00w0rd!"), true},
		{"invalid UTF-8", "Administrator", []byte{'P', 0xff, 'x'}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pw, refused := netUserArgs(tc.user, tc.password)
			if (refused != nil) != tc.refused {
				t.Fatalf("refused %+v, want refused %v", refused, tc.refused)
			}
			if refused != nil {
				if pw != nil || refused.Code != agentproto.ResultFailed || strings.Contains(refused.Message, string(tc.password)) {
					t.Errorf("refusal %+v (password %v)", refused, pw)
				}
				return
			}
			if len(pw) == 0 || pw[len(pw)-1] != 0 {
				t.Errorf("the password is not NUL-terminated: %v", pw)
			}
		})
	}
}
