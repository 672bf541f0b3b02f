package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/server"
)

// TestSecurity_ControlCharactersInNamesAreEscapedNotSentToTheTerminal pins
// issue 10 item 12: a name such as "\x1b[2J" (clear screen) that reaches the
// CLI, from an older server or a hostile one, prints as text.
func TestSecurity_ControlCharactersInNamesAreEscapedNotSentToTheTerminal(t *testing.T) {
	api := startAPI(t)
	const id = "ins-evil"
	api.fake.AddInstance(id, "evil\x1b[2J\u009b31m\x07", apiv1.StateRunning)
	for _, args := range [][]string{{"instances", "list"}, {"instances", "show", id}} {
		r := api.run(t, "", args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		if strings.ContainsAny(r.stdout, "\x1b\x07") || strings.Contains(r.stdout, "\u009b") {
			t.Fatalf("%v printed a control character: %q", args, r.stdout)
		}
		if !strings.Contains(r.stdout, `evil\x1b[2J\u009b31m\x07`) {
			t.Fatalf("%v: the name is not shown escaped: %q", args, r.stdout)
		}
	}
}

// TestSecurity_TheDemosDeadAgentMachineFailsWithinAbout15Seconds pins issue
// 10 item 20: `serve --demo` used the production guest timeout (5 min), so
// the demo's dead-agent machine took five minutes to fail.
func TestSecurity_TheDemosDeadAgentMachineFailsWithinAbout15Seconds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the demo's guest timeout (about 15 s)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		var out, errOut bytes.Buffer
		root := newRoot(strings.NewReader(""), &out, &errOut, func(string) string { return "" })
		root.SetArgs([]string{"serve", "--demo", "--listen", addr, "--data-dir", dir, "--log-level", "error"})
		done <- Execute(ctx, root)
	}()
	t.Cleanup(func() { cancel(); <-done })
	env := map[string]string{envServer: "http://" + addr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "admin-credentials"))
		var creds server.Credentials
		if err == nil && json.Unmarshal(data, &creds) == nil && creds.Secret != "" {
			env[envKeyID], env[envKeySecret] = creds.KeyID, creds.Secret
			if r := runCLI(t, env, "", "instances", "list", "--name-prefix", "legacy-agent-dead", "-o", "json"); r.code == 0 {
				var list apiv1.InstanceList
				if json.Unmarshal([]byte(r.stdout), &list) == nil && len(list.Instances) == 1 {
					id := list.Instances[0].ID
					start := time.Now()
					r := runCLI(t, env, "", "reset-password", id, "--mode", "offline", "--force-stop", "--generate", "--wait", "-o", "json")
					took := time.Since(start)
					if r.code != 2 || !strings.Contains(r.stdout, "GUEST_TIMEOUT") {
						t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
					}
					if took > 30*time.Second {
						t.Fatalf("the dead-agent machine failed after %s, want about 15 s", took)
					}
					t.Logf("the dead-agent machine failed after %s", took.Round(time.Second))
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the demo server did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
