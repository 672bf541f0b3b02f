//go:build !windows

package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

// fakeTools writes a fake getent and chpasswd: getent knows the users in
// known; chpasswd copies its standard input to a file, then runs script,
// in which {stdin} names that file.
func fakeTools(t *testing.T, known []string, script string) (lookPaths, string) {
	t.Helper()
	dir := t.TempDir()
	got := filepath.Join(dir, "stdin")
	getent := "#!/bin/sh\ncase \"$3\" in\n"
	for _, u := range known {
		getent += u + ") echo " + u + ":x:1000:1000::/home/" + u + ":/bin/sh; exit 0;;\n"
	}
	getent += "esac\nexit 2\n"
	chp := "#!/bin/sh\ncat >" + got + "\necho \"args:$*\" >" + got + ".args\n" + strings.ReplaceAll(script, "{stdin}", got) + "\n"
	for name, body := range map[string]string{"getent": getent, "chpasswd": chp} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return lookPaths{getent: filepath.Join(dir, "getent"), chpasswd: filepath.Join(dir, "chpasswd")}, got
}

func TestChpasswdGetsTheLineOnStdinAndReportsEachOutcome(t *testing.T) {
	const pw = "S3cret-Pw!x"
	tests := []struct {
		name     string
		user     string
		script   string
		wantCode string
		wantExit int
		wantMsg  string
		wantLine bool
	}{
		{name: "success", user: "alice", script: "exit 0", wantCode: agentproto.ResultOK, wantLine: true},
		{name: "unknown user, as Debian's chpasswd words it, is classified by getent", user: "ghost",
			script:   "echo \"chpasswd: (user ghost) pw_locate() failed\" >&2; echo 'chpasswd: error detected, changes ignored' >&2; exit 1",
			wantCode: agentproto.ResultUserNotFound, wantExit: 1, wantMsg: "does not exist", wantLine: true},
		{name: "failure reports exit code and stderr without the password", user: "alice",
			// A (hypothetical) chatty PAM module echoing its input.
			script:   "echo \"chpasswd: PAM: Authentication token manipulation error for $(cat {stdin})\" >&2; exit 1",
			wantCode: agentproto.ResultFailed, wantExit: 1, wantMsg: "[redacted]", wantLine: true},
		{name: "chpasswd's own words for a missing user are enough", user: "alice",
			script:   "echo \"chpasswd: user 'alice' does not exist\" >&2; exit 1",
			wantCode: agentproto.ResultUserNotFound, wantExit: 1, wantLine: true},
		{name: "user name with a colon is refused", user: "al:ice", script: "exit 0", wantCode: agentproto.ResultFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, got := fakeTools(t, []string{"alice"}, tc.script)
			password := []byte(pw)
			res := chpasswd(context.Background(), p, tc.user, password)
			if res.Code != tc.wantCode || res.ExitCode != tc.wantExit {
				t.Fatalf("result %+v, want code %s exit %d", res, tc.wantCode, tc.wantExit)
			}
			if !strings.Contains(res.Message, tc.wantMsg) {
				t.Errorf("message %q, want it to contain %q", res.Message, tc.wantMsg)
			}
			if strings.Contains(res.Message, pw) {
				t.Errorf("message shows the password: %q", res.Message)
			}
			line, err := os.ReadFile(got)
			if tc.wantLine {
				if err != nil || string(line) != tc.user+":"+pw+"\n" {
					t.Errorf("chpasswd read %q (%v), want the user:password line", line, err)
				}
				args, _ := os.ReadFile(got + ".args")
				if bytes.Contains(args, []byte(pw)) {
					t.Errorf("chpasswd's arguments hold the password: %q", args)
				}
			} else if err == nil {
				t.Errorf("chpasswd ran, want it not to")
			}
		})
	}
}
