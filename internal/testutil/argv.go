package testutil

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// ArgvWatch reads every process's argv (/proc/*/cmdline) until stopped,
// looking for any of its secrets: a password passed to a command line is
// readable by every user of the machine.
type ArgvWatch struct {
	mu      sync.Mutex
	secrets [][]byte
	found   []string
	scans   int
	cancel  context.CancelFunc
	done    chan struct{}
}

// WatchArgv starts a watch for the secrets (more can be added); it stops
// when t ends, or at Check.
func WatchArgv(t testing.TB, secrets ...string) *ArgvWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &ArgvWatch{cancel: cancel, done: make(chan struct{})}
	for _, s := range secrets {
		w.Add(s)
	}
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

// Add watches for one more secret.
func (w *ArgvWatch) Add(secret string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secrets = append(w.secrets, []byte(secret))
}

func (w *ArgvWatch) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	w.mu.Lock()
	secrets := w.secrets
	w.mu.Unlock()
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue // the process ended, or is a kernel thread
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

func (w *ArgvWatch) stop() {
	w.cancel()
	<-w.done
}

// Check stops the watch and fails t if a secret was seen in an argv, or if
// the watch never completed a scan (it would have proved nothing).
func (w *ArgvWatch) Check(t testing.TB) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.found) > 0 {
		t.Errorf("a secret appeared in a process's arguments (%d times), e.g. in %s", len(w.found), redact(w.found[0], w.secrets))
	}
	if w.scans < 1 {
		t.Errorf("the argv watch ran only %d scans", w.scans)
	}
}

func redact(s string, secrets [][]byte) string {
	for _, p := range secrets {
		s = strings.ReplaceAll(s, string(p), "[secret]")
	}
	return s
}

// AssertNoSecretIn fails t if any secret, in any of its Forms, is in the
// text of any of the places (a log, an API answer), named by their keys.
func AssertNoSecretIn(t testing.TB, places map[string]string, secrets ...string) {
	t.Helper()
	names := make([]string, 0, len(places))
	for where := range places {
		names = append(names, where)
	}
	sort.Strings(names)
	for _, where := range names {
		for _, secret := range secrets {
			if ContainsSecret([]byte(places[where]), secret) {
				t.Errorf("a secret is in the %s", where)
			}
		}
	}
}
