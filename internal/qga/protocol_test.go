package qga

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// testTimeout is generous: these tests must pass on a loaded 2-core machine.
const testTimeout = 20 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestCommand(t *testing.T) {
	got, err := Command("guest-ping", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"execute":"guest-ping"}` + "\n"; string(got) != want {
		t.Errorf("Command(guest-ping) = %q, want %q", got, want)
	}
	got, err = Command("guest-sync-delimited", map[string]int64{"id": 42})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"execute":"guest-sync-delimited","arguments":{"id":42}}` + "\n"; string(got) != want {
		t.Errorf("Command(guest-sync-delimited) = %q, want %q", got, want)
	}
}

func TestSetUserPasswordCommand(t *testing.T) {
	password := []byte(`pa"ss\wörd!@#$%^+*()`)
	line, err := SetUserPasswordCommand(`we"ird user`, password, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var cmd struct {
		Execute   string
		Arguments struct {
			Username string
			Password string
			Crypted  *bool
		}
	}
	if err := json.Unmarshal(line, &cmd); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if cmd.Execute != "guest-set-user-password" || cmd.Arguments.Username != `we"ird user` ||
		cmd.Arguments.Crypted == nil || *cmd.Arguments.Crypted {
		t.Errorf("decoded %+v", cmd)
	}
	pw, err := base64.StdEncoding.DecodeString(cmd.Arguments.Password)
	if err != nil || !bytes.Equal(pw, password) {
		t.Errorf("password decodes to %q, %v", pw, err)
	}
	if bytes.Contains(line, password) {
		t.Error("the clear password is in the command")
	}

	for _, tc := range []struct {
		user     string
		password string
	}{
		{"", "secret"},
		{"a:b", "secret"},
		{"a\nb", "secret"},
		{"a\x00b", "secret"},
		{strings.Repeat("u", 300), "secret"},
		{"root", ""},
	} {
		if _, err := SetUserPasswordCommand(tc.user, []byte(tc.password), false); err == nil {
			t.Errorf("SetUserPasswordCommand(%q, %q) succeeded", tc.user, tc.password)
		} else if tc.password != "" && strings.Contains(err.Error(), tc.password) {
			t.Errorf("error holds the password: %v", err)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	for _, tc := range []struct {
		line      string
		ret       string // want return value; "" for an error
		class     string // want an *Error of this class
		malformed bool
	}{
		{line: `{"return": {}}`, ret: `{}`},
		{line: "\xff{\"return\": 1234}\n", ret: `1234`},
		{line: `  {"return": [1, 2]}  `, ret: `[1, 2]`},
		{line: `{"return": {}, "id": "x"}`, ret: `{}`},
		{line: `{"error": {"class": "GenericError", "desc": "child process has failed to set user password"}}`, class: "GenericError"},
		{line: `{"error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}`, class: "CommandNotFound"},
		{line: ``, malformed: true},
		{line: `garbage`, malformed: true},
		{line: `[1]`, malformed: true},
		{line: `{}`, malformed: true},
		{line: `{"return": 1, "error": {"class": "x", "desc": "y"}}`, malformed: true},
		{line: `{"return": 1} trailing`, malformed: true},
		{line: `{"error": "text"}`, malformed: true},
		{line: `{"return": `, malformed: true},
	} {
		ret, err := ParseAnswer([]byte(tc.line))
		var agentErr *Error
		switch {
		case tc.malformed:
			if err == nil || errors.As(err, &agentErr) {
				t.Errorf("ParseAnswer(%q) = %s, %v; want a malformed-answer error", tc.line, ret, err)
			}
		case tc.class != "":
			if !errors.As(err, &agentErr) || agentErr.Class != tc.class {
				t.Errorf("ParseAnswer(%q) = %s, %v; want *Error of class %s", tc.line, ret, err, tc.class)
			}
		default:
			if err != nil || string(ret) != tc.ret {
				t.Errorf("ParseAnswer(%q) = %s, %v; want %s", tc.line, ret, err, tc.ret)
			}
		}
	}
}

func TestSyncSkipsStaleData(t *testing.T) {
	for name, stale := range map[string]string{
		"nothing": "",
		// qemu-ga's own complaint about the 0xFF byte we send first.
		"parse error":   "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n",
		"stale answers": "{\"return\": {}}\n{\"return\": 7}\n\xff{\"return\": 8}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n",
		"garbage":       "\x00\x01\x02 not json at all \xfe\n\n\r\n}}}{{{\n",
		// An interrupted earlier answer with no newline: our answer follows
		// on the same line, after its sentinel.
		"partial line": `{"return": {"pid": 12`,
		"too long":     strings.Repeat("x", maxAnswer+10) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeAgent{beforeSync: stale, handle: func(string, json.RawMessage) string { return "{\"return\": {}}\n" }}
			c := f.pipe(t)
			ctx := testContext(t)
			if err := c.Sync(ctx); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			// The stream is in step: the next answer is the command's.
			var ret map[string]any
			if err := Exec(ctx, c, "guest-ping", nil, &ret); err != nil {
				t.Fatalf("ping after sync: %v", err)
			}
		})
	}
}

func TestSyncWithoutSentinel(t *testing.T) {
	// An agent that answers guest-sync-delimited without the sentinel is
	// still understood.
	f := &fakeAgent{syncAnswer: "{\"return\": %d}\n"}
	if err := f.pipe(t).Sync(testContext(t)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func TestSyncSendsFlushByte(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 256)
		n, _ := io.ReadAtLeast(server, buf, 1)
		got <- buf[:n]
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_ = NewConn(client).Sync(ctx) // nobody answers
	b := <-got
	if len(b) == 0 || b[0] != 0xFF || !bytes.Contains(b, []byte(`"execute":"guest-sync-delimited"`)) {
		t.Errorf("first bytes sent: %q", b)
	}
}

func TestSyncTimeout(t *testing.T) {
	c := (&fakeAgent{muteSync: true}).pipe(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Sync(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync on a silent agent: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Sync took %v", d)
	}
}

func TestSyncCancel(t *testing.T) {
	c := (&fakeAgent{muteSync: true}).pipe(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := c.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync: %v, want Canceled", err)
	}
}

func TestSyncEOF(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		buf := make([]byte, 4096)
		_, _ = server.Read(buf)
		_, _ = server.Write([]byte(`{"return": {"half`))
		server.Close()
	}()
	err := NewConn(client).Sync(testContext(t))
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Sync: %v, want unexpected EOF", err)
	}
}

func TestDo(t *testing.T) {
	f := &fakeAgent{handle: func(execute string, _ json.RawMessage) string {
		switch execute {
		case "guest-info":
			return "\n{\"return\": {\"version\": \"7.2.22\"}}\n"
		case "guest-broken":
			return "nonsense\n"
		case "guest-wrong-type":
			return "{\"return\": 5}\n"
		default:
			return "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command " + execute + " has not been found\"}}\n"
		}
	}}
	c := f.pipe(t)
	ctx := testContext(t)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var info struct{ Version string }
	if err := Exec(ctx, c, "guest-info", nil, &info); err != nil || info.Version != "7.2.22" {
		t.Errorf("guest-info: %+v, %v", info, err)
	}
	var agentErr *Error
	err := Exec(ctx, c, "guest-nosuch", nil, nil)
	if !errors.As(err, &agentErr) || agentErr.Class != "CommandNotFound" {
		t.Errorf("guest-nosuch: %v, want CommandNotFound", err)
	}
	if err := Exec(ctx, c, "guest-broken", nil, nil); err == nil || errors.As(err, &agentErr) {
		t.Errorf("guest-broken: %v, want a protocol error", err)
	}
	if err := Exec(ctx, c, "guest-wrong-type", nil, &info); err == nil {
		t.Error("guest-wrong-type decoded into a struct")
	}
}

func TestDoCancel(t *testing.T) {
	f := &fakeAgent{} // answers the sync, then nothing
	c := f.pipe(t)
	if err := c.Sync(testContext(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := Exec(ctx, c, "guest-ping", nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec: %v, want Canceled", err)
	}
	// A context that is already done sends nothing.
	before := len(f.executes())
	if err := Exec(ctx, c, "guest-ping", nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec: %v, want Canceled", err)
	}
	if after := len(f.executes()); after != before {
		t.Errorf("a command was sent on a cancelled context")
	}
}

// rwNoDeadline is a transport without SetDeadline.
type rwNoDeadline struct {
	io.Reader
	io.Writer
}

func TestConnWithoutDeadlines(t *testing.T) {
	id := int64(77)
	in := strings.NewReader("junk\n\xff{\"return\": 77}\n{\"return\": {}}\n")
	var out bytes.Buffer
	c := NewConn(rwNoDeadline{in, &out})
	ctx := testContext(t)
	if err := c.syncID(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := Ping(ctx, c); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out.Bytes(), []byte("\xff{")) {
		t.Errorf("sent %q", out.Bytes())
	}
}
