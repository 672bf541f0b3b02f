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
		line, err := qga.SetUserPasswordCommand("dave", []byte("Gone-pw-123"))
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

	log := g.QGALog()
	for _, pw := range []string{"Fresh-pw-789", "Conc-pw-1", "Conc-pw-3", "Conc-pw-5", "Conc-pw-7"} {
		if strings.Contains(log, pw) || strings.Contains(log, base64.StdEncoding.EncodeToString([]byte(pw))) {
			t.Errorf("qemu-ga's log holds password %s:\n%s", pw, log)
		}
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
