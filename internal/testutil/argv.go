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
	// seen counts, for each expected process name, the scans that saw a
	// process of that name.
	seen   map[string]int
	cancel context.CancelFunc
	done   chan struct{}
}

// MinSightings is how many scans must have seen each expected process
// (Expect): a single one may have raced the process's start or end, and
// proves little about the time the secret passed through it.
const MinSightings = 3

// WatchArgv starts a watch for the secrets; it stops
// when t ends, or at Check. Name the processes the secrets pass through
// with Expect: Check fails a watch that expects none.
func WatchArgv(t testing.TB, secrets ...string) *ArgvWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &ArgvWatch{cancel: cancel, done: make(chan struct{}), seen: map[string]int{}}
	for _, s := range secrets {
		w.secrets = append(w.secrets, []byte(s))
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

// Expect makes Check also require that at least MinSightings scans saw a
// process of each name (the base name of its argv[0], as ps shows it):
// the processes the secrets pass through, such as the agent or qemu-ga. A
// watch that never overlapped them would pass without having looked.
func (w *ArgvWatch) Expect(names ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range names {
		if _, ok := w.seen[n]; !ok {
			w.seen[n] = 0
		}
	}
}

func (w *ArgvWatch) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	w.mu.Lock()
	secrets := w.secrets
	w.mu.Unlock()
	var found []string
	names := map[string]bool{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue // the process ended, or is a kernel thread
		}
		arg0, _, _ := bytes.Cut(b, []byte{0})
		names[filepath.Base(string(arg0))] = true
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				found = append(found, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	w.mu.Lock()
	w.found = append(w.found, found...)
	w.scans++
	for n := range w.seen {
		if names[n] {
			w.seen[n]++
		}
	}
	w.mu.Unlock()
}

func (w *ArgvWatch) stop() {
	w.cancel()
	<-w.done
}

// Check stops the watch and fails t if a secret was seen in an argv, or if
// the watch proved nothing: it expected no process, or saw an expected one
// in fewer than MinSightings scans.
func (w *ArgvWatch) Check(t testing.TB) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.found) > 0 {
		t.Errorf("a secret appeared in a process's arguments (%d times), e.g. in %s", len(w.found), redact(w.found[0], w.secrets))
	}
	if len(w.seen) == 0 {
		t.Error("the argv watch expected no process: name the ones the secrets pass through (Expect)")
	}
	names := make([]string, 0, len(w.seen))
	for n := range w.seen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if w.seen[n] < MinSightings {
			t.Errorf("the argv watch saw %s in %d of its %d scans, want at least %d: it did not watch the process the secrets passed through",
				n, w.seen[n], w.scans, MinSightings)
		}
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
