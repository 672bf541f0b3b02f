package qga

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func FuzzParseAnswer(f *testing.F) {
	for _, seed := range []string{
		`{"return": {}}`,
		"\xff{\"return\": 1234}\n",
		`{"error": {"class": "GenericError", "desc": "child process has failed to set user password"}}`,
		`{"return": {"exitcode": 2, "exited": true}}`,
		`{"return": null}`,
		`{"error": null}`,
		`{"return": 1, "error": {}}`,
		`{}`,
		`[]`,
		"",
		"\xff\xff",
		`{"return": "\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ret, err := ParseAnswer(line)
		var agentErr *Error
		switch {
		case err == nil:
			if !json.Valid(ret) {
				t.Fatalf("return value %q is not valid JSON", ret)
			}
			// What was accepted survives a round trip.
			again, err := ParseAnswer(append(append([]byte(`{"return":`), ret...), '}'))
			if err != nil || !bytes.Equal(bytes.TrimSpace(again), bytes.TrimSpace(ret)) {
				t.Fatalf("round trip of %q: %q, %v", ret, again, err)
			}
		case errors.As(err, &agentErr):
			if ret != nil {
				t.Fatalf("error answer with a return value %q", ret)
			}
			_ = agentErr.Error()
		default:
			if ret != nil {
				t.Fatalf("malformed answer with a return value %q", ret)
			}
		}
	})
}

// FuzzSync feeds whatever stale bytes a channel may hold before the agent's
// answer to our sync: Sync must always find that answer, and the next
// answer must be the next command's.
func FuzzSync(f *testing.F) {
	for _, seed := range []string{
		"",
		"{\"return\": {}}\n",
		"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n",
		"\xff{\"return\": 77}\n",
		`{"return": {"pid`,
		"\x00\x01\xfe\xff",
		"\n\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, stale []byte) {
		const id = 123456789
		// Stale data ends where the agent's own answer begins, with its
		// sentinel.
		in := append(bytes.Clone(stale), "\xff{\"return\": 123456789}\n{\"return\": {\"ok\": 1}}\n"...)
		c := NewConn(rwNoDeadline{bytes.NewReader(in), io.Discard})
		if err := c.syncID(t.Context(), id); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		var got map[string]int
		if err := c.Do(t.Context(), []byte("{\"execute\":\"guest-ping\"}\n"), &got); err != nil {
			// The only way to fail: the stale bytes themselves held our
			// answer, so the stream is one answer early.
			if !strings.Contains(string(stale), "123456789") {
				t.Fatalf("Do after Sync: %v", err)
			}
			return
		}
		if got["ok"] != 1 && !strings.Contains(string(stale), "123456789") {
			t.Fatalf("answer after Sync: %v", got)
		}
	})
}
