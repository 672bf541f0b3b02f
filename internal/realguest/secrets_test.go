package realguest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

// argvWatch reads every process's argv (/proc/*/cmdline) until stopped,
// looking for any of the passwords.
type argvWatch struct {
	mu      sync.Mutex
	secrets [][]byte
	found   []string
	scans   int
	cancel  context.CancelFunc
	done    chan struct{}
}

func watchArgv(t *testing.T) *argvWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &argvWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			w.scan()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *argvWatch) add(secret string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secrets = append(w.secrets, []byte(secret))
}

func (w *argvWatch) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	w.mu.Lock()
	secrets := w.secrets
	w.mu.Unlock()
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				found = append(found, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	w.mu.Lock()
	w.found = append(w.found, found...)
	w.scans++
	w.mu.Unlock()
}

func (w *argvWatch) stop() {
	w.cancel()
	<-w.done
}

// check stops the watch and fails t if a password was seen in an argv.
func (w *argvWatch) check(t *testing.T) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.found) > 0 {
		t.Errorf("a password appeared in a process's arguments (%d times), e.g. in %s", len(w.found), redact(w.found[0], w.secrets))
	}
	if w.scans < 1 {
		t.Errorf("the argv watch ran only %d scans", w.scans)
	}
}

func redact(s string, secrets [][]byte) string {
	for _, p := range secrets {
		s = strings.ReplaceAll(s, string(p), "[password]")
	}
	return s
}

// noSecretsAnywhere fails t if any password is in the server's log, an
// agent's or qemu-ga's log, or the database files (records, the WAL).
func (e *env) noSecretsAnywhere(t testing.TB, ms []*machine, passwords ...string) {
	t.Helper()
	// What fleetpass writes, at the levels that would show a leak: the
	// server logs at debug, the agents run with --log-level debug. qemu-ga's
	// own log is not scanned: at its default level it logs no command, and
	// at debug it logs every command it reads, passwords included, by its
	// design and beyond fleetpass's reach.
	places := map[string]string{"server log": e.logs.String()}
	for _, m := range ms {
		places[m.name+" agent log"] = m.agentLogs()
		places[m.name+" sshd log"] = m.g.SSHDLog()
	}
	for where, text := range places {
		for _, pw := range passwords {
			if testutil.ContainsSecret([]byte(text), pw) {
				t.Errorf("a password is in the %s", where)
			}
		}
	}
	for _, pw := range passwords {
		testutil.AssertNotInDir(t, e.dir, pw)
	}
	if !strings.Contains(e.logs.String(), "agent command acknowledged") && len(ms) > 0 && ms[0].agentID != "" {
		t.Errorf("the server log holds no acknowledgement: is it logging at all?")
	}
}
