package servertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Proc is a fleetpass server running as a real process (`fleetpass serve`
// built with testutil.BuildBinary): for tests that kill servers with
// SIGKILL, or run several replicas as an operator would.
type Proc struct {
	t testing.TB
	// Cmd is the process; Addr its listen address; Key the admin key its
	// requests use.
	Cmd  *exec.Cmd
	Addr string
	Key  Key
	// KilledAt is when Kill ended the process: the simulated machines'
	// transitions are computed from timestamps, so their state as of then
	// is what the kill interrupted.
	KilledAt time.Time

	log    *os.File
	client *http.Client
	done   chan error
	exited bool
	err    error
}

// LaunchProc starts `bin serve` on dataDir and addr with args (after the
// test defaults: no rate limit, no periodic sync), its output appended to
// logPath, and key as the bootstrap admin key of an empty database. It
// does not wait for the server: see WaitReady. The process is killed when
// the test ends.
func LaunchProc(t testing.TB, bin string, key Key, dataDir, addr, logPath string, args ...string) *Proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", addr, "--rate-limit", "0",
		"--sync-interval", "1h"}, args...)...)
	cmd.Env = append(os.Environ(), "FLEETPASS_ADMIN_KEY_ID="+key.ID, "FLEETPASS_ADMIN_KEY_SECRET="+key.Secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p := &Proc{t: t, Cmd: cmd, Addr: addr, Key: key, log: logf, done: make(chan error, 1), client: keepAliveClient(t)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		p.Wait(time.Minute)
		logf.Close()
	})
	return p
}

// StartProc is LaunchProc, then WaitReady.
func StartProc(t testing.TB, bin string, key Key, dataDir, addr, logPath string, args ...string) *Proc {
	t.Helper()
	p := LaunchProc(t, bin, key, dataDir, addr, logPath, args...)
	p.WaitReady()
	return p
}

// WaitReady waits until the server answers /readyz with 200, failing the
// test if it exits first or takes more than a minute.
func (p *Proc) WaitReady() {
	p.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if p.Wait(50*time.Millisecond) == nil && p.exited {
			p.t.Fatalf("server %s exited at start: %v", p.Addr, p.err)
		}
	}
	p.t.Fatalf("server %s did not become ready", p.Addr)
}

// errRunning is Wait's answer for a process still running.
var errRunning = errors.New("still running")

// Wait waits up to d for the process to exit and returns nil once it has
// (its exit status is ExitErr), errRunning otherwise.
func (p *Proc) Wait(d time.Duration) error {
	if p.exited {
		return nil
	}
	select {
	case err := <-p.done:
		p.exited, p.err = true, err
		return nil
	case <-time.After(d):
		return errRunning
	}
}

// ExitErr is how the process ended (nil: status 0), once Wait saw it end.
func (p *Proc) ExitErr() error { return p.err }

// Kill ends the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	p.Wait(time.Minute)
	p.KilledAt = time.Now()
}

// Terminate stops the process gracefully (SIGTERM), waiting up to d, and
// returns its exit status; an error if it did not stop in time.
func (p *Proc) Terminate(d time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if p.Wait(d) != nil {
		return fmt.Errorf("server %s did not stop within %s of SIGTERM", p.Addr, d)
	}
	return p.err
}

// API calls the server's native API as its admin key, decoding the answer
// into out (when not nil), and returns the status.
func (p *Proc) API(method, path string, body any, out any) int {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, "http://"+p.Addr+path, rd)
	req.SetBasicAuth(p.Key.ID, p.Key.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
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
