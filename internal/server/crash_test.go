package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
)

// buildBinary builds cmd/fleetpass once per test binary run.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetpass")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fleetpass/fleetpass/cmd/fleetpass")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fleetpass: %v\n%s", err, out)
	}
	return bin
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a fleetpass server running as a real process.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	addr string
	log  *os.File
	done chan error
}

const crashKeyID, crashSecret = "fpk-crashtest", "crash-test-admin-secret-0123456789"

func startProc(t testing.TB, bin, dataDir, addr string, logPath string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", addr, "--rate-limit", "0",
		"--sync-interval", "1h"}, args...)...)
	cmd.Env = append(os.Environ(), "FLEETPASS_ADMIN_KEY_ID="+crashKeyID, "FLEETPASS_ADMIN_KEY_SECRET="+crashSecret)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, addr: addr, log: logf, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		logf.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("server exited at start: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("server did not become ready")
	return nil
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil // for Cleanup
}

func (p *proc) api(method, path string, body any, out any) int {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, "http://"+p.addr+path, rd)
	req.SetBasicAuth(crashKeyID, crashSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			p.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// TestKillingTheServerMidBatchFinishesEveryItemOnRestart kills a real
// server process with SIGKILL twice while a batch of 100 offline resets is
// shutting machines down and booting them, restarts it each time, and
// checks that the batch ends with every item applied once, every machine
// running again with the new password, and the password nowhere on disk or
// in the logs.
func TestKillingTheServerMidBatchFinishesEveryItemOnRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "server.log")
	addr := freePort(t)
	args := []string{"--sim-instances", "100", "--sim-boot-time", "1500ms", "--sim-shutdown-time", "1500ms"}
	if url := storetest.DatabaseURL(t); url != "" {
		args = append(args, "--database-url", url)
	}
	p := startProc(t, bin, dataDir, addr, logPath, args...)

	var list apiv1.InstanceList
	p.api("GET", "/v1/instances?tenant=load&limit=1000", nil, &list)
	if len(list.Instances) != 100 {
		t.Fatalf("%d load instances", len(list.Instances))
	}
	const password = "Crash-Resume-pw-77"
	var op apiv1.Operation
	if code := p.api("POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(list.Instances...),
		Mode: apiv1.ModeOffline, ForceStop: true, Password: password}, &op); code != 202 {
		t.Fatalf("reset: %d", code)
	}

	// First kill: while machines are shutting down.
	time.Sleep(900 * time.Millisecond)
	p.kill()
	assertSomeMachines(t, dataDir, func(s sim.Snapshot) bool { return s.Power != driver.PowerRunning },
		"the first kill should catch machines on their way down")

	// Second kill: while machines are booting again.
	p = startProc(t, bin, dataDir, addr, logPath, args...)
	time.Sleep(2200 * time.Millisecond)
	p.kill()

	p = startProc(t, bin, dataDir, addr, logPath, args...)
	deadline := time.Now().Add(90 * time.Second)
	for op.Status == apiv1.OperationRunning || op.Status == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the batch did not finish after the restarts: %+v", op.Summary)
		}
		p.api("GET", "/v1/operations/"+op.ID+"/wait?timeout=20s", nil, &op)
	}
	if op.Status != apiv1.OperationSucceeded || op.Summary.Succeeded != 100 || op.Summary.Failed != 0 || op.Summary.Total != 100 {
		t.Fatalf("operation %s %+v", op.Status, op.Summary)
	}
	for _, it := range op.Items {
		if it.State != apiv1.ItemSucceeded || it.Step != apiv1.StepDone {
			t.Errorf("item %+v", it)
		}
	}
	p.api("GET", "/v1/instances?tenant=load&limit=1000", nil, &list)
	for _, in := range list.Instances {
		if in.State != apiv1.StateRunning || in.Busy || in.LatestOperation == nil || in.LatestOperation.State != apiv1.OpStateSuccess {
			t.Errorf("instance %s: state %s busy %v latest %+v", in.Name, in.State, in.Busy, in.LatestOperation)
		}
	}

	// A graceful stop ends the process cleanly.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- nil
		if err != nil {
			t.Errorf("SIGTERM: exit %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop on SIGTERM")
	}

	f, err := sim.Open(context.Background(), filepath.Join(dataDir, "sim-fleet.db"), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snaps, _ := f.List(context.Background())
	for _, s := range snaps {
		ok, _ := f.CheckPassword(context.Background(), s.ID, "root", []byte(password))
		if s.Power != driver.PowerRunning || !ok {
			t.Errorf("machine %s: power %s, password set %v", s.ID, s.Power, ok)
		}
	}
	logs, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logs), "resumed work left by the previous run") {
		t.Errorf("the restarts did not resume orphaned work:\n%s", logs)
	}
	if strings.Contains(string(logs), password) {
		t.Error("the password is in the server's log")
	}
	assertNotInDir(t, dataDir, password)
	if storetest.OnPostgres() {
		assertNotInPostgres(t, password)
	}
}

// assertNotInPostgres checks that secret is nowhere in the PostgreSQL
// cluster's files: its tables and indexes (base/), its write-ahead log
// (pg_wal/) and its server log.
func assertNotInPostgres(t testing.TB, secret string) {
	t.Helper()
	c := pgtest.Shared(t)
	if err := c.Exec(context.Background(), "postgres", "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(c.Data, "base"), filepath.Join(c.Data, "pg_wal")} {
		assertNotInDir(t, dir, secret)
	}
	if data, err := os.ReadFile(c.Log); err != nil || bytes.Contains(data, []byte(secret)) {
		t.Errorf("the password is in PostgreSQL's log (or the log cannot be read: %v)", err)
	}
}

func assertSomeMachines(t testing.TB, dataDir string, pred func(sim.Snapshot) bool, msg string) {
	t.Helper()
	f, err := sim.Open(context.Background(), filepath.Join(dataDir, "sim-fleet.db"), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snaps, _ := f.List(context.Background())
	n := 0
	for _, s := range snaps {
		if pred(s) {
			n++
		}
	}
	if n == 0 {
		t.Fatal(msg)
	}
	t.Logf("%d of %d machines matched at the kill", n, len(snaps))
}

func assertNotInDir(t testing.TB, dir, secret string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err == nil && bytes.Contains(data, []byte(secret)) {
			t.Errorf("the password is in %s", filepath.Base(path))
		}
		return nil
	})
}
