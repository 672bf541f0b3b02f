package qga

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

const qemu72Failure = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to set user password\"}}\n"

// userAgent answers guest-set-user-password with setAnswer and runs a fake
// getent through guest-exec that exits with getentExit after one poll.
func userAgent(setAnswer string, getentExit int, execAllowed bool) *fakeAgent {
	var polls atomic.Int32
	return &fakeAgent{handle: func(execute string, args json.RawMessage) string {
		switch execute {
		case "guest-set-user-password":
			return setAnswer
		case "guest-exec":
			if !execAllowed {
				return "{\"error\": {\"class\": \"GenericError\", \"desc\": \"The command guest-exec has been disabled for this instance\"}}\n"
			}
			var a struct {
				Path string
				Arg  []string
			}
			if err := json.Unmarshal(args, &a); err != nil || a.Path != "getent" || len(a.Arg) != 2 || a.Arg[0] != "passwd" {
				return "{\"error\": {\"class\": \"GenericError\", \"desc\": \"unexpected guest-exec\"}}\n"
			}
			return "{\"return\": {\"pid\": 4242}}\n"
		case "guest-exec-status":
			if polls.Add(1) == 1 {
				return "{\"return\": {\"exited\": false}}\n"
			}
			return fmt.Sprintf("{\"return\": {\"exitcode\": %d, \"exited\": true}}\n", getentExit)
		}
		return "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n"
	}}
}

func TestSetUserPassword(t *testing.T) {
	password := []byte("N3w-Passw0rd!")
	f := userAgent("{\"return\": {}}\n", 0, true)
	c := f.pipe(t)
	ctx := testContext(t)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := SetUserPassword(ctx, c, "alice", password, false); err != nil {
		t.Fatalf("SetUserPassword: %v", err)
	}
	lines := f.lines()
	last := lines[len(lines)-1]
	var cmd struct {
		Execute   string
		Arguments map[string]any
	}
	if err := json.Unmarshal(last, &cmd); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"username": "alice",
		"password": base64.StdEncoding.EncodeToString(password),
		"crypted":  false,
	}
	if cmd.Execute != "guest-set-user-password" || fmt.Sprint(cmd.Arguments) != fmt.Sprint(want) {
		t.Errorf("agent got %s", last)
	}
	if string(password) != "N3w-Passw0rd!" {
		t.Error("SetUserPassword changed the caller's password buffer")
	}
}

func TestSetUserPasswordErrors(t *testing.T) {
	for _, tc := range []struct {
		name        string
		answer      string
		getentExit  int
		execAllowed bool
		notFound    bool
		probed      bool
	}{
		{name: "qemu-ga 7.2, user missing", answer: qemu72Failure, getentExit: 2, execAllowed: true, notFound: true, probed: true},
		{name: "qemu-ga 7.2, user exists", answer: qemu72Failure, getentExit: 0, execAllowed: true, probed: true},
		{name: "qemu-ga 7.2, getent fails otherwise", answer: qemu72Failure, getentExit: 1, execAllowed: true, probed: true},
		{name: "qemu-ga 7.2, guest-exec disabled", answer: qemu72Failure, probed: true},
		{
			name:     "newer qemu-ga says why",
			answer:   "{\"error\": {\"class\": \"GenericError\", \"desc\": \"child process has failed to set user password: chpasswd: line 1: user 'bob' does not exist\\nchpasswd: error detected, changes ignored\\n\"}}\n",
			notFound: true,
		},
		{
			name:     "windows agent",
			answer:   "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Guest agent command failed, error was 'The user name could not be found.'\"}}\n",
			notFound: true,
		},
		{name: "old agent without the command", answer: "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-set-user-password has not been found\"}}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := userAgent(tc.answer, tc.getentExit, tc.execAllowed)
			c := f.pipe(t)
			ctx := testContext(t)
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			err := SetUserPassword(ctx, c, "bob", []byte("Secret-123"), false)
			if err == nil {
				t.Fatal("SetUserPassword succeeded")
			}
			if got := errors.Is(err, driver.ErrUserNotFound); got != tc.notFound {
				t.Errorf("errors.Is(%v, ErrUserNotFound) = %v, want %v", err, got, tc.notFound)
			}
			var agentErr *Error
			if !errors.As(err, &agentErr) {
				t.Errorf("%v does not carry the agent's *Error", err)
			}
			if got := slices.Contains(f.executes(), "guest-exec"); got != tc.probed {
				t.Errorf("probed with guest-exec: %v, want %v", got, tc.probed)
			}
			if !strings.Contains(err.Error(), `"bob"`) {
				t.Errorf("error does not name the user: %v", err)
			}
		})
	}
}

func TestSetUserPasswordNeverLeaksPassword(t *testing.T) {
	password := []byte("Leak3d-Passw0rd")
	b64 := base64.StdEncoding.EncodeToString(password)
	for name, desc := range map[string]string{
		"clear":             "chpasswd: bad password " + string(password),
		"base64":            "cannot decode " + b64,
		"clear, user gone":  "user 'bob' does not exist (password " + string(password) + ")",
		"base64, user gone": "user 'bob' does not exist (password " + b64 + ")",
	} {
		t.Run(name, func(t *testing.T) {
			answer, _ := json.Marshal(map[string]any{"error": map[string]string{"class": "GenericError", "desc": desc}})
			f := userAgent(string(answer)+"\n", 0, true)
			c := f.pipe(t)
			ctx := testContext(t)
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			err := SetUserPassword(ctx, c, "bob", password, false)
			if err == nil {
				t.Fatal("SetUserPassword succeeded")
			}
			msg := err.Error()
			for e := err; e != nil; e = errors.Unwrap(e) {
				msg += "\n" + e.Error()
			}
			if strings.Contains(msg, string(password)) || strings.Contains(msg, b64) {
				t.Errorf("error leaks the password: %s", msg)
			}
			if got, want := errors.Is(err, driver.ErrUserNotFound), strings.Contains(desc, "does not exist"); got != want {
				t.Errorf("ErrUserNotFound = %v, want %v (%v)", got, want, err)
			}
		})
	}
}

func TestScrubKeepsCleanErrors(t *testing.T) {
	err := fmt.Errorf("qga: something: %w", driver.ErrGuestNotAlive)
	if got := scrub(err, []byte("hunter22")); got != err {
		t.Errorf("scrub changed a clean error: %v", got)
	}
	if got := scrub(errors.New("hunter22 aHVudGVyMjI="), []byte("hunter22")); bytes.Contains([]byte(got.Error()), []byte("hunter22")) {
		t.Errorf("scrub kept the password: %v", got)
	}
	// A dropped connection that echoed the password is still worth a retry.
	if got := scrub(driver.Transientf("qga: read: hunter22: %w", driver.ErrGuestNotAlive), []byte("hunter22")); !driver.IsTransient(got) ||
		!errors.Is(got, driver.ErrGuestNotAlive) {
		t.Errorf("scrub made a transient error permanent: %v", got)
	}
}
