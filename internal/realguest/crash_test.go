package realguest

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agenttest"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// serverProc is `fleetpass serve` as a real process.
type serverProc struct {
	cmd  *exec.Cmd
	done chan error
}

// startServerProc starts the server, reading idle instances' states every
// sync; env entries override the default environment.
func startServerProc(t testing.TB, bin, dataDir, addr, logPath, sync string, env ...string) *serverProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--listen", addr, "--rate-limit", "0", "--sync-interval", sync,
		"--log-level", "debug")
	cmd.Env = append(os.Environ(), "FLEETPASS_ADMIN_KEY_ID="+adminKeyID, "FLEETPASS_ADMIN_KEY_SECRET="+adminSecret,
		"FLEETPASS_AGENT_SILENCE=5s", "FLEETPASS_AGENT_POLL_HOLD=1s")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("server not ready: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *serverProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		p.cmd.ProcessState = &os.ProcessState{}
	}
}

func buildServer(t testing.TB) string {
	t.Helper()
	return testutil.BuildBinary(t, "github.com/fleetpass/fleetpass/cmd/fleetpass")
}

// A real server process is killed with SIGKILL in the middle of a batch of
// online resets through the agent channel and started again: the agents
// reconnect, every item finishes once, and every guest has the new
// password.
func TestServerKilledMidBatchLosesNoAgentCommand(t *testing.T) {
	guesttest.EnsureTools(t)
	srvBin, agentBin := buildServer(t), agenttest.Build(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "server.log")
	data := filepath.Join(dir, "data")
	p := startServerProc(t, srvBin, data, addr, logPath, "1s")
	c, err := client.New("http://"+addr, adminKeyID, adminSecret)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreateTenant(ctx, apiv1.TenantCreate{Name: tenant}); err != nil {
		t.Fatal(err)
	}
	old, pw := newPassword(), newPassword()
	const n = 12
	ms := make([]*machine, n)
	for i := range ms {
		g := guesttest.Start(t, guesttest.Options{Users: []guesttest.UserSpec{{Name: user, Password: old}}})
		name := "crash-" + string(rune('a'+i))
		instance, agent := agenttest.Enrol(t, c, g, agentBin, "http://"+addr, tenant, name)
		ms[i] = &machine{name: name, g: g, instance: instance, agentID: agent, agentBin: agentBin}
		if err := ms[i].startAgent(); err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, n)
	for i, m := range ms {
		ids[i] = m.instance
		waitInstance(t, c, m, func(in *apiv1.Instance) bool { return in.State == apiv1.StateRunning && in.GuestAlive })
	}
	argv := testutil.WatchArgv(t, pw)
	// The server process, killed and started again, and the agents.
	argv.Expect(filepath.Base(srvBin), "fleetpass-agent")
	op, err := c.ResetPassword(ctx, apiv1.PasswordReset{InstanceIDs: ids, User: user, Mode: apiv1.ModeOnline, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	// Kill as soon as the batch is accepted, before it can finish.
	p.kill()
	t.Logf("killed the server with the operation %s accepted at %s", op.ID, op.Status)
	// The kill must land mid-batch, or the restart proves nothing: read
	// what the dead server left, through the store.
	if left := itemsLeft(t, filepath.Join(data, "fleetpass.db"), op.ID); left == 0 {
		t.Fatal("every item had ended before the kill: the test proves nothing")
	} else {
		t.Logf("%d of %d items had not ended at the kill", left, n)
	}
	before, _ := os.ReadFile(logPath)
	t.Logf("server log lines before the kill: %d", strings.Count(string(before), "\n"))
	time.Sleep(time.Second)
	startServerProc(t, srvBin, data, addr, logPath, "1s")
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var final *apiv1.Operation
	for {
		final, err = c.WaitOperationFor(wctx, op.ID, 30*time.Second)
		if err == nil && final.Status != apiv1.OperationRunning {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("operation did not finish after the restart: %v", err)
		}
	}
	argv.Check(t)
	if final.Status != apiv1.OperationSucceeded {
		t.Errorf("operation %s after the restart, want %s", final.Status, apiv1.OperationSucceeded)
	}
	for _, m := range ms {
		wantItem(t, final, m, apiv1.ItemSucceeded, "")
		wantLogins(t, m, pw, old)
	}
	logs, _ := os.ReadFile(logPath)
	places := map[string]string{"server log": string(logs)}
	for _, m := range ms {
		places[m.name+" agent log"] = m.agentLogs()
	}
	for where, text := range places {
		if testutil.ContainsSecret([]byte(text), pw) || testutil.ContainsSecret([]byte(text), old) {
			t.Errorf("a password is in the %s", where)
		}
	}
	testutil.AssertNotInDir(t, data, pw)
	testutil.AssertNotInDir(t, data, old)
	if !regexp.MustCompile(`connected to the server`).MatchString(ms[0].agentLogs()) {
		t.Errorf("agent log shows no connection:\n%s", ms[0].agentLogs())
	}
}

func waitInstance(t testing.TB, c *client.Client, m *machine, ok func(*apiv1.Instance) bool) {
	t.Helper()
	agenttest.WaitInstance(t, c, m.instance, time.Minute, "there", ok, m.agentLogs)
}

// itemsLeft is how many items of the operation had not ended in the
// database of a stopped server.
func itemsLeft(t testing.TB, path, opID string) int {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	op, err := st.GetOperation(t.Context(), st.DB, opID)
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, it := range op.Items {
		if it.State != apiv1.ItemSucceeded && it.State != apiv1.ItemFailed {
			left++
		}
	}
	return left
}
