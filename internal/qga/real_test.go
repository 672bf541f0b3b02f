package qga_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/guesttest"
	"github.com/fleetpass/fleetpass/internal/qga"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// These tests drive Debian's real qemu-ga inside a guesttest guest, so that
// guest-set-user-password changes the guest's private /etc, not the host's.
// They are skipped under -short and fail without the tools.

func realContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestRealAgent(t *testing.T) {
	g := guesttest.Start(t, guesttest.Options{
		Users: []guesttest.UserSpec{{Name: "dave", Password: "Old-pw-123"}},
		QGA:   true,
	})
	ch := &qga.Channel{}
	ref := g.Ref()
	ctx := realContext(t)

	t.Run("ping", func(t *testing.T) {
		if err := ch.Ping(ctx, ref); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("set password", func(t *testing.T) {
		if err := ch.SetPassword(ctx, ref, "dave", []byte("Fresh-pw-789")); err != nil {
			t.Fatal(err)
		}
		if err := g.CheckLogin("dave", "Fresh-pw-789"); err != nil {
			t.Fatalf("login with the new password: %v", err)
		}
	})

	t.Run("missing user", func(t *testing.T) {
		err := ch.SetPassword(ctx, ref, "ghost", []byte("Fresh-pw-789"))
		if !errors.Is(err, driver.ErrUserNotFound) {
			t.Fatalf("got %v, want ErrUserNotFound", err)
		}
		if strings.Contains(err.Error(), "Fresh-pw-789") || strings.Contains(err.Error(), "RnJlc2gtcHctNzg5") {
			t.Errorf("error holds the password: %v", err)
		}
	})

	// qemu-ga keeps its JSON parser's state from one client to the next:
	// a client that died in the middle of a command leaves a half object
	// that garbles the next client's first command, unless that client
	// flushes it with 0xFF first (checked with qemu-ga 7.2).
	t.Run("resync after interrupted clients", func(t *testing.T) {
		for _, leftover := range []string{
			`{"execute":"guest-ping","arguments":{"x":"half a str`,
			"\x00\x01garbage",
		} {
			// The client hangs up politely, reading what it was sent:
			// qemu-ga quits when a connection is reset (see hangUp).
			c, err := net.Dial("unix", ref.Address)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte(leftover)); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.UnixConn).CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			if err := ch.Ping(ctx, ref); err != nil {
				t.Fatalf("Ping after a client left %q: %v", leftover, err)
			}
		}
	})

	t.Run("client gone before the answer", func(t *testing.T) {
		// A client that gives up (a timeout, a crash) while the agent
		// works. The command still runs. If the answer was written before
		// the client closed, the connection is reset and qemu-ga 7.2 quits
		// (then restarts, see "agent restarted"); if after, its write fails
		// with EPIPE and it carries on.
		line, err := qga.SetUserPasswordCommand("dave", []byte("Gone-pw-123"), false)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", ref.Address)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Write(line)
		c.Close()
		clear(line)
		if err != nil {
			t.Fatal(err)
		}
		// The agent runs one command at a time: once it answers a ping,
		// the orphaned command has run.
		if err := pollUntil(ctx, func() bool { return ch.Ping(ctx, ref) == nil }); err != nil {
			t.Fatalf("Ping after a client left before its answer: %v", err)
		}
		if err := g.CheckLogin("dave", "Gone-pw-123"); err != nil {
			t.Fatalf("the password a client sent before leaving: %v", err)
		}
	})

	t.Run("one client at a time", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range cap(errs) {
			wg.Go(func() {
				if i%2 == 0 {
					errs <- ch.Ping(ctx, ref)
				} else {
					errs <- ch.SetPassword(ctx, ref, "dave", []byte(fmt.Sprintf("Conc-pw-%d", i)))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("host commands blocked", func(t *testing.T) {
		// guest-fstrim is the harmless one of the commands guesttest
		// blocks because they would act on the host.
		c, err := net.Dial("unix", ref.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conn := qga.NewConn(c)
		if err := conn.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		var agentErr *qga.Error
		err = qga.Exec(ctx, conn, "guest-fstrim", nil, nil)
		if !errors.As(err, &agentErr) {
			t.Fatalf("guest-fstrim: %v, want the agent's refusal", err)
		}
		t.Logf("guest-fstrim: %v", err)
		var info struct{ Version string }
		if err := qga.Exec(ctx, conn, "guest-info", nil, &info); err != nil || info.Version == "" {
			t.Fatalf("guest-info on the same connection: %+v, %v", info, err)
		}
		t.Logf("qemu-ga %s", info.Version)
	})

	t.Run("agent stopped", func(t *testing.T) {
		g.StopQGA()
		start := time.Now()
		err := ch.Ping(ctx, ref)
		if !errors.Is(err, driver.ErrGuestNotAlive) {
			t.Fatalf("Ping: %v, want ErrGuestNotAlive", err)
		}
		if d := time.Since(start); d > qga.DefaultSyncTimeout+5*time.Second {
			t.Errorf("Ping took %v", d)
		}
		err = ch.SetPassword(ctx, ref, "dave", []byte("Fresh-pw-789"))
		if !errors.Is(err, driver.ErrGuestNotAlive) || driver.IsTransient(err) {
			t.Fatalf("SetPassword: %v, want ErrGuestNotAlive", err)
		}
		g.StartQGA()
		if err := ch.Ping(ctx, ref); err != nil {
			t.Fatalf("Ping after StartQGA: %v", err)
		}
	})

	// qemu-ga 7.2 in unix-listen mode quits when a client hangs up with
	// an answer unread (its next read fails with ECONNRESET); like
	// Debian's unit, guesttest restarts it.
	t.Run("agent restarted", func(t *testing.T) {
		if out, err := g.Run("pkill", "-KILL", "-x", "qemu-ga"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if err := pollUntil(ctx, func() bool { return ch.Ping(ctx, ref) == nil }); err != nil {
			t.Fatalf("qemu-ga did not come back: %v", err)
		}
	})

}

// At debug level (-v) qemu-ga logs every command line it reads. A Linux
// guest is sent a hash, so neither the password nor its base64 form may
// show there; the command's name must (else the level was too low for the
// scan to mean anything), and so must the base64 of a password sent in
// clear, as to a Windows guest (else the scan could not see one).
func TestRealAgentAtDebugLevelNeverSeesALinuxGuestsPassword(t *testing.T) {
	g := guesttest.Start(t, guesttest.Options{
		Users:      []guesttest.UserSpec{{Name: "erin", Password: "Old-pw-123"}},
		QGA:        true,
		QGAVerbose: true,
	})
	ch := &qga.Channel{}
	ref := g.Ref()
	if ref.OSType != driver.OSLinux {
		t.Fatalf("guesttest's ref is of a %q guest, want linux", ref.OSType)
	}
	ctx := realContext(t)
	before := len(g.QGALog())
	pw := testutil.NewPassword()
	if err := ch.SetPassword(ctx, ref, "erin", []byte(pw)); err != nil {
		t.Fatal(err)
	}
	if err := g.CheckLogin("erin", pw); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	if err := g.CheckLogin("erin", "Old-pw-123"); !errors.Is(err, guesttest.ErrAuthFailed) {
		t.Fatalf("login with the old password: %v, want it refused", err)
	}
	log := g.QGALog()[before:]
	if !strings.Contains(log, "guest-set-user-password") {
		t.Fatalf("qemu-ga's log does not show guest-set-user-password: the scan below would prove nothing (%d bytes logged)", len(log))
	}
	if testutil.ContainsSecret([]byte(log), pw) {
		t.Error("qemu-ga's log holds the password sent to a Linux guest")
	}

	// The control: a password sent in clear shows in this log.
	clearPW := testutil.NewPassword()
	windows := ref
	windows.OSType = "windows"
	if err := ch.SetPassword(ctx, windows, "erin", []byte(clearPW)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.QGALog(), base64.StdEncoding.EncodeToString([]byte(clearPW))) {
		t.Error("a password sent in clear does not show in qemu-ga's debug log: the scan above cannot see one")
	}
}

// pollUntil calls f until it returns true or ctx ends.
func pollUntil(ctx context.Context, f func() bool) error {
	for !f() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
