package realbmc

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
)

// argvWatch reads every process's argv (/proc/*/cmdline) until stopped,
// looking for any of the secrets.
type argvWatch struct {
	mu      sync.Mutex
	secrets [][]byte
	found   []string
	scans   int
	cancel  context.CancelFunc
	done    chan struct{}
}

func watchArgv(t *testing.T, secrets ...string) *argvWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &argvWatch{cancel: cancel, done: make(chan struct{})}
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

func (w *argvWatch) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		for _, s := range w.secrets {
			if bytes.Contains(b, s) {
				found = append(found, p)
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

func (w *argvWatch) check(t *testing.T) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.found) > 0 {
		t.Errorf("a secret appeared in a process's arguments (%d times), e.g. in %s", len(w.found), w.found[0])
	}
	if w.scans < 10 {
		t.Errorf("the argv watch ran only %d scans", w.scans)
	}
}

// TestSecretsAppearNowhere: the BMC password and a new login password are
// in no log (server, agent, sshd), no record (the database and its WAL,
// the operation, the instance as the API shows it, the audit log) and no
// process's arguments, through registration, a BMC rotation, a refused
// registration and an offline reset.
func TestSecretsAppearNowhere(t *testing.T) {
	e := newEnv(t)
	old := newPassword()
	s := e.newUnregistered("bm-secrets", old)
	pw := newPassword()
	const rotated, wrong = "Rot4ted-bmc-pw", "Wr0ng-bmc-pw"
	secrets := []string{s.bmc.Password, pw, rotated, wrong}
	w := watchArgv(t, secrets...)

	res := e.cli(wrong+"\n", "instances", "add", s.name, "--os", "linux", "--ipmi", s.bmc.Addr(), "--ipmi-user", s.bmc.User,
		"--ipmi-password-stdin")
	if res.err == nil {
		t.Fatal("registration with a wrong BMC password succeeded")
	}
	res = e.cli(s.bmc.Password+"\n", "instances", "add", s.name, "--os", "linux", "--ipmi", s.bmc.Addr(), "--ipmi-user", s.bmc.User,
		"--ipmi-password-stdin", "-o", "json")
	if res.err != nil {
		t.Fatalf("instances add: %v", res.err)
	}
	list, err := e.client.ListInstances(t.Context(), client.InstanceFilter{})
	if err != nil || len(list.Instances) != 1 {
		t.Fatalf("instances: %v", err)
	}
	s.instance = list.Instances[0].ID
	e.enrol(s)
	e.waitAlive(s)

	if err := s.bmc.SetPassword(rotated); err != nil {
		t.Fatal(err)
	}
	if res := e.cli(rotated+"\n", "instances", "set-bmc", s.instance, "--ipmi-password-stdin"); res.err != nil {
		t.Fatalf("set-bmc: %v", res.err)
	}
	op := e.reset(s, apiv1.ModeOffline, true, pw)
	wantItem(t, op, apiv1.ItemSucceeded, "")
	wantLogins(t, s, pw, old)
	w.check(t)

	places := map[string]string{"server log": e.logs.String(), "agent log": s.chassis.agentLogs(), "sshd log": s.g.SSHDLog()}
	var outputs []string
	for _, args := range [][]string{{"instances", "show", s.instance, "-o", "json"}, {"operations", "show", op.ID, "-o", "json"},
		{"audit", "-o", "json"}} {
		r := e.cli("", args...)
		if r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
		outputs = append(outputs, r.stdout)
	}
	places["API answers"] = strings.Join(outputs, "\n")
	files, _ := filepath.Glob(filepath.Join(e.dataDir, "fleetpass.db*"))
	if len(files) == 0 {
		t.Fatal("no database files found")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		places[filepath.Base(f)] = string(b)
	}
	for where, text := range places {
		for _, secret := range secrets {
			for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)),
				base64.RawStdEncoding.EncodeToString([]byte(secret))} {
				if strings.Contains(text, form) {
					t.Errorf("a secret is in the %s", where)
				}
			}
		}
	}
	if !strings.Contains(e.logs.String(), "agent command acknowledged") {
		t.Error("the server log holds no acknowledgement: is it logging at all?")
	}
}
