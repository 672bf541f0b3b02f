package qga

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fakeAgent plays qemu-ga's part of the protocol for unit tests.
type fakeAgent struct {
	// beforeSync is written just before the answer to guest-sync-delimited,
	// as stale data would be.
	beforeSync string
	// syncAnswer, when set, replaces the answer to guest-sync-delimited;
	// %d is the id.
	syncAnswer string
	// muteSync makes the agent ignore guest-sync-delimited, as a chardev
	// socket with no agent behind it does.
	muteSync bool
	// handle answers every other command; an empty answer means silence.
	handle func(execute string, args json.RawMessage) string

	mu       sync.Mutex
	commands []string // executes received, in order
	raw      [][]byte // raw command lines received
	conns    int      // connections served to their end
}

func (f *fakeAgent) serve(t testing.TB, conn net.Conn) {
	defer func() {
		conn.Close()
		f.mu.Lock()
		f.conns++
		f.mu.Unlock()
	}()
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				t.Logf("fake agent: read: %v", err)
			}
			return
		}
		line = bytes.TrimLeft(line, "\xff")
		var cmd struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &cmd); err != nil {
			t.Errorf("fake agent: bad command line: %v", err)
			return
		}
		f.mu.Lock()
		f.commands = append(f.commands, cmd.Execute)
		f.raw = append(f.raw, bytes.Clone(line))
		f.mu.Unlock()
		var answer string
		if cmd.Execute == "guest-sync-delimited" && f.muteSync {
			continue
		} else if cmd.Execute == "guest-sync-delimited" {
			var a struct{ ID int64 }
			if err := json.Unmarshal(cmd.Arguments, &a); err != nil {
				t.Errorf("fake agent: bad sync arguments: %v", err)
				return
			}
			format := "\xff{\"return\": %d}\n"
			if f.syncAnswer != "" {
				format = f.syncAnswer
			}
			answer = f.beforeSync + fmt.Sprintf(format, a.ID)
		} else if f.handle != nil {
			answer = f.handle(cmd.Execute, cmd.Arguments)
		}
		if answer == "" {
			continue
		}
		if _, err := io.WriteString(conn, answer); err != nil {
			return
		}
	}
}

func (f *fakeAgent) executes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func (f *fakeAgent) lines() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.raw...)
}

// pipe returns a Conn whose peer is f.
func (f *fakeAgent) pipe(t testing.TB) *Conn {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.serve(t, server)
	}()
	t.Cleanup(func() {
		client.Close()
		<-done
	})
	return NewConn(client)
}

// listen serves f on a unix socket and returns its path. Connections are
// served one at a time, as qemu-ga does.
func (f *fakeAgent) listen(t testing.TB) string {
	// A short path: sun_path holds 108 bytes, and t.TempDir's names grow
	// with the test's name.
	dir, err := os.MkdirTemp("", "qga")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.serve(t, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		os.RemoveAll(dir)
	})
	return path
}
