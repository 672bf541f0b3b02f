package qga

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

func TestChannelPingAndSetPassword(t *testing.T) {
	f := userAgent("{\"return\": {}}\n", 0, true)
	f.handle = func(orig func(string, json.RawMessage) string) func(string, json.RawMessage) string {
		return func(execute string, args json.RawMessage) string {
			if execute == "guest-ping" {
				return "{\"return\": {}}\n"
			}
			return orig(execute, args)
		}
	}(f.handle)
	f.beforeSync = "{\"return\": {\"stale\": true}}\n"
	ref := driver.Ref{InstanceID: "ins-test", Address: f.listen(t)}
	ch := &Channel{}
	ctx := testContext(t)
	if err := ch.Ping(ctx, ref); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := ch.SetPassword(ctx, ref, "alice", []byte("Secret-123")); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	// One connection per call, each closed, each resynchronised.
	want := []string{"guest-sync-delimited", "guest-ping", "guest-sync-delimited", "guest-set-user-password"}
	if got := f.executes(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("agent got %v, want %v", got, want)
	}
	deadline := time.Now().Add(testTimeout)
	for {
		f.mu.Lock()
		conns := f.conns
		f.mu.Unlock()
		if conns == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections closed, want 2", conns)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChannelNotAlive(t *testing.T) {
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A socket file nobody listens on any more.
	stale := filepath.Join(dir, "stale")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	// A listener that accepts and closes at once.
	hangup := filepath.Join(dir, "hangup")
	hl, err := net.Listen("unix", hangup)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	for name, path := range map[string]string{
		"missing":  filepath.Join(dir, "nothing-here"),
		"refused":  stale,
		"hangup":   hangup,
		"silent":   (&fakeAgent{muteSync: true}).listen(t),
		"not unix": dir,
	} {
		t.Run(name, func(t *testing.T) {
			ch := &Channel{SyncTimeout: 300 * time.Millisecond}
			ref := driver.Ref{InstanceID: "ins-x", Address: path}
			start := time.Now()
			for _, call := range []func() error{
				func() error { return ch.Ping(testContext(t), ref) },
				func() error { return ch.SetPassword(testContext(t), ref, "alice", []byte("Secret-123")) },
			} {
				err := call()
				if !errors.Is(err, driver.ErrGuestNotAlive) {
					t.Errorf("got %v, want ErrGuestNotAlive", err)
				}
				if driver.IsTransient(err) {
					t.Errorf("%v is transient; the agent never answered", err)
				}
				if err != nil && !strings.Contains(err.Error(), "ins-x") {
					t.Errorf("error does not name the instance: %v", err)
				}
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestChannelAgentDiesMidCommand(t *testing.T) {
	// Synchronises, then says nothing to the command: the password may or
	// may not be set.
	f := &fakeAgent{}
	ref := driver.Ref{Address: f.listen(t)}
	ch := &Channel{Timeout: 500 * time.Millisecond}
	err := ch.SetPassword(testContext(t), ref, "alice", []byte("Secret-123"))
	if !errors.Is(err, driver.ErrGuestNotAlive) || !driver.IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a transient ErrGuestNotAlive after a deadline", err)
	}
	if strings.Contains(err.Error(), "Secret-123") {
		t.Errorf("error holds the password: %v", err)
	}
}

func TestChannelCancel(t *testing.T) {
	ref := driver.Ref{Address: (&fakeAgent{muteSync: true}).listen(t)}
	ch := &Channel{}
	for name, call := range map[string]func(context.Context) error{
		"ping":         func(ctx context.Context) error { return ch.Ping(ctx, ref) },
		"set password": func(ctx context.Context) error { return ch.SetPassword(ctx, ref, "alice", []byte("Secret-123")) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			err := call(ctx)
			if !errors.Is(err, context.Canceled) || errors.Is(err, driver.ErrGuestNotAlive) || driver.IsTransient(err) {
				t.Fatalf("got %v, want only Canceled", err)
			}
		})
	}

	// Cancelled while the agent works on the command.
	f := &fakeAgent{}
	ref = driver.Ref{Address: f.listen(t)}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	for _, call := range []func() error{
		func() error { return ch.SetPassword(ctx, ref, "alice", []byte("Secret-123")) },
		func() error { return ch.Ping(ctx, ref) },
	} {
		if err := call(); !errors.Is(err, context.Canceled) || errors.Is(err, driver.ErrGuestNotAlive) {
			t.Errorf("got %v, want only Canceled", err)
		}
	}
}

func TestChannelBadInput(t *testing.T) {
	f := &fakeAgent{}
	path := f.listen(t)
	ch := &Channel{}
	ctx := testContext(t)
	if err := ch.Ping(ctx, driver.Ref{InstanceID: "ins-1"}); !errors.Is(err, driver.ErrMachineNotFound) {
		t.Errorf("Ping without an address: %v", err)
	}
	for _, user := range []string{"", "a:b", "a\nb"} {
		if err := ch.SetPassword(ctx, driver.Ref{Address: path}, user, []byte("Secret-123")); err == nil {
			t.Errorf("SetPassword(%q) succeeded", user)
		}
	}
	if err := ch.SetPassword(ctx, driver.Ref{Address: path}, "alice", nil); err == nil {
		t.Error("SetPassword with an empty password succeeded")
	}
	if got := f.executes(); len(got) != 0 {
		t.Errorf("bad input reached the agent: %v", got)
	}
}

func TestChannelBusy(t *testing.T) {
	// A listener that never accepts, with the smallest backlog: once the
	// backlog is full, connecting fails with EAGAIN, as with a qemu-ga busy
	// with other clients.
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "busy")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil || i > 100 {
			t.Fatalf("filling the backlog: %v after %d connections", err, i)
		}
		defer c.Close()
	}
	// Long enough for at least one dial to meet the full backlog on a
	// loaded machine: with 300 ms, a run at load average 18 reached the
	// deadline before its first dial, which says nothing of the agent.
	ch := &Channel{SyncTimeout: 2 * time.Second}
	err = ch.Ping(testContext(t), driver.Ref{Address: path})
	if !errors.Is(err, driver.ErrGuestNotAlive) || !driver.IsTransient(err) || !errors.Is(err, errBusy) {
		t.Fatalf("got %v, want a transient ErrGuestNotAlive (busy)", err)
	}
}

func TestChannelLateAnswerIsRead(t *testing.T) {
	// The answer comes after the client gave up. The client must read it
	// before closing: a unix socket closed with unread data resets the
	// agent's connection, and qemu-ga 7.2 quits on that.
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "late")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	result := make(chan error, 1)
	go func() {
		result <- func() error {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			defer c.Close()
			br := bufio.NewReader(c)
			line, err := br.ReadBytes('\n')
			if err != nil {
				return err
			}
			var sync struct{ Arguments struct{ ID int64 } }
			if err := json.Unmarshal(bytes.TrimLeft(line, "\xff"), &sync); err != nil {
				return err
			}
			fmt.Fprintf(c, "\xff{\"return\": %d}\n", sync.Arguments.ID)
			if _, err := br.ReadBytes('\n'); err != nil { // the command
				return err
			}
			time.Sleep(450 * time.Millisecond) // the client gives up at 300ms
			if _, err := io.WriteString(c, "{\"return\": {}}\n"); err != nil {
				return fmt.Errorf("write the late answer: %w", err)
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				return fmt.Errorf("after the late answer, read gave %v, want EOF", err)
			}
			return nil
		}()
	}()
	ch := &Channel{Timeout: 300 * time.Millisecond}
	err = ch.SetPassword(testContext(t), driver.Ref{Address: path}, "alice", []byte("Secret-123"))
	if !driver.IsTransient(err) {
		t.Errorf("SetPassword: %v, want a transient error", err)
	}
	if err := <-result; err != nil {
		t.Errorf("agent side: %v", err)
	}
}
