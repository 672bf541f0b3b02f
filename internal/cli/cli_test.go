package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// testAPI is the real server in process (servertest) that the CLI tests
// talk to, with simulated machines whose faults give the failure paths.
type testAPI struct {
	s   *servertest.Server
	env map[string]string
}

func startAPI(t *testing.T, opts ...servertest.Option) *testAPI {
	t.Helper()
	s := servertest.Start(t, opts...)
	return &testAPI{s: s, env: map[string]string{
		envServer:    s.URL,
		envKeyID:     s.Admin.ID,
		envKeySecret: s.Admin.Secret,
	}}
}

// addInstance registers a running instance and returns its id.
func (api *testAPI) addInstance(t *testing.T, name string) string {
	t.Helper()
	return api.add(t, servertest.Machine{Name: name, Running: true}).ID
}

// add registers a simulated machine as an instance.
func (api *testAPI) add(t *testing.T, m servertest.Machine) apiv1.Instance {
	t.Helper()
	return api.s.AddMachine(m)
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI with args, stdin and the API's environment (plus extra).
func (api *testAPI) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCLI(t, api.env, stdin, args...)
}

func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRoot(strings.NewReader(stdin), &stdout, &stderr, func(k string) string { return env[k] })
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	code := Execute(ctx, root)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestArgumentValidation(t *testing.T) {
	api := startAPI(t)
	api.addInstance(t, "web-1")
	before := api.s.Requests()
	tests := []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
	}{
		{"no instance", "", []string{"reset-password", "--generate"}, "needs at least 1"},
		{"no password flag exists", "", []string{"reset-password", "--password", "Hunter2-Secret", "ins-web-1"}, "unknown flag: --password"},
		{"no password= flag either", "", []string{"reset-password", "--password=Hunter2-Secret", "ins-web-1"}, "unknown flag: --password"},
		{"stdin and generate exclusive", "Abcdefgh-123\n", []string{"reset-password", "--password-stdin", "--generate", "ins-web-1"}, "none of the others can be"},
		{"bad mode", "", []string{"reset-password", "--generate", "--mode", "sideways", "ins-web-1"}, "--mode must be auto, online or offline"},
		{"no password source off a terminal", "", []string{"reset-password", "ins-web-1"}, "no password: use --password-stdin or --generate"},
		{"empty stdin", "", []string{"reset-password", "--password-stdin", "ins-web-1"}, "no password on standard input"},
		{"bad stop mode", "", []string{"stop", "--mode", "gentle", "ins-web-1"}, "--mode must be soft, hard or soft-then-hard"},
		{"start has no mode", "", []string{"start", "--mode", "hard", "ins-web-1"}, "unknown flag: --mode"},
		{"bad output", "", []string{"-o", "yaml", "instances", "list"}, "--output must be table or json"},
		{"show needs one id", "", []string{"instances", "show"}, "takes 1 argument"},
		{"keys create needs a name", "", []string{"keys", "create"}, "--name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := api.run(t, tt.stdin, tt.args...)
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.wantErr)
			}
			if strings.Contains(r.stdout+r.stderr, "Hunter2-Secret") {
				t.Error("a password given as a flag value was echoed")
			}
		})
	}
	if got := api.s.Requests() - before; got != 0 {
		t.Errorf("invalid commands sent %d requests to the server", got)
	}
}

func TestModesAccepted(t *testing.T) {
	api := startAPI(t)
	id := api.addInstance(t, "web-1")
	for _, mode := range []string{"auto", "online", "offline"} {
		if r := api.run(t, "", "reset-password", "--generate", "--force-stop", "--wait", "--mode", mode, id); r.code != 0 {
			t.Errorf("--mode %s: exit %d: %s", mode, r.code, r.stderr)
		}
	}
	for _, mode := range []string{"soft", "hard", "soft-then-hard"} {
		if r := api.run(t, "", "reboot", "--wait", "--mode", mode, id); r.code != 0 {
			t.Errorf("reboot --mode %s: exit %d: %s", mode, r.code, r.stderr)
		}
	}
}

func TestResetPasswordFromStdinIsNotPrinted(t *testing.T) {
	api := startAPI(t)
	in := api.add(t, servertest.Machine{Name: "web-1"})
	const pw = `Tr0ub4dor&"3\x`
	r := api.run(t, pw+"\r\nnext line is not read\n", "reset-password", "--password-stdin", "--wait", in.ID)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !api.s.CheckPassword(in, "root", pw) {
		t.Errorf("the machine's password is not the first line of stdin")
	}
	if strings.Contains(r.stdout+r.stderr, pw) || strings.Contains(r.stdout+r.stderr, "Tr0ub4dor") {
		t.Errorf("password leaked:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	op := opID(t, r.stdout)
	// Which steps show in between depends on how fast the machine is;
	// the start and the end always do.
	for _, want := range []string{"Operation " + op + " accepted", in.ID + " web-1 succeeded",
		op + " reset_password succeeded: 1 succeeded of 1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	api.s.AssertNoSecret(pw)
}

// opID is the id of the operation a command said it started.
func opID(t *testing.T, stdout string) string {
	t.Helper()
	m := regexp.MustCompile(`Operation (op-[a-z0-9]+) accepted`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no operation accepted in:\n%s", stdout)
	}
	return m[1]
}

func TestWaitExitsTwoOnFailedItem(t *testing.T) {
	api := startAPI(t)
	ok := api.addInstance(t, "web-1")
	bad := api.add(t, servertest.Machine{Name: "web-2", Running: true, Faults: sim.Faults{AgentDead: true}}).ID
	r := api.run(t, "", "reset-password", "--generate", "--mode", "online", "--wait", ok, bad)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2; stdout %s; stderr %s", r.code, r.stdout, r.stderr)
	}
	op := opID(t, r.stdout)
	for _, want := range []string{
		ok + " web-1 succeeded",
		bad + " web-2 failed: " + core.CodeGuestNotAlive + ": ",
		op + " reset_password partial: 1 succeeded, 1 failed of 2",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "1 of 2 item(s) failed") {
		t.Errorf("stderr %q", r.stderr)
	}
	// The generated password is shown exactly once, on stdout.
	m := regexp.MustCompile(`Generated password \(shown once\): (\S+)`).FindAllStringSubmatch(r.stdout, -1)
	if len(m) != 1 {
		t.Fatalf("generated password printed %d times:\n%s", len(m), r.stdout)
	}
	generated := m[0][1]
	if strings.Contains(r.stderr, generated) {
		t.Error("generated password on stderr")
	}
	if shown := api.run(t, "", "-o", "json", "operations", "show", op); strings.Contains(shown.stdout, generated) {
		t.Error("the server shows the generated password again")
	}
	api.s.AssertNoSecret(generated)
}

func TestOperationsWaitExitCodes(t *testing.T) {
	eng := servertest.FastEngine()
	eng.ShutdownTimeout = 200 * time.Millisecond
	api := startAPI(t, servertest.WithEngine(eng))
	in := api.add(t, servertest.Machine{Name: "web-1", Running: true})
	r := api.run(t, "", "stop", in.ID)
	if r.code != 0 || !strings.Contains(r.stdout, "operations wait op-") {
		t.Fatalf("stop: %+v", r)
	}
	stop := opID(t, r.stdout)
	if r := api.run(t, "", "operations", "wait", stop); r.code != 0 || !strings.Contains(r.stdout, in.ID+" web-1 succeeded") {
		t.Errorf("wait: %+v", r)
	}
	if err := api.s.Sim().SetFaults(t.Context(), in.Power.Address, sim.Faults{HangShutdown: true}); err != nil {
		t.Fatal(err)
	}
	if r := api.run(t, "", "start", "--wait", in.ID); r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	r = api.run(t, "", "reboot", "--mode", "soft", in.ID)
	if r.code != 0 {
		t.Fatalf("reboot: %+v", r)
	}
	reboot := opID(t, r.stdout)
	if r := api.run(t, "", "operations", "wait", reboot); r.code != 2 {
		t.Errorf("wait on a failed operation: exit %d: %+v", r.code, r)
	}
	r = api.run(t, "", "operations", "show", reboot)
	if r.code != 0 || !strings.Contains(r.stdout, "SHUTDOWN_TIMEOUT") {
		t.Errorf("show: %+v", r)
	}
	r = api.run(t, "", "operations", "list", "--instance", in.ID)
	if r.code != 0 || !strings.Contains(r.stdout, stop) || !strings.Contains(r.stdout, reboot) {
		t.Errorf("list: %+v", r)
	}
}

func TestJSONOutput(t *testing.T) {
	api := startAPI(t)
	id := api.addInstance(t, "web-1")
	api.addInstance(t, "db-1")

	r := api.run(t, "", "-o", "json", "instances", "list", "--name-prefix", "web")
	var list apiv1.InstanceList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != 0 {
		t.Fatalf("instances list: %v, %+v", err, r)
	}
	if len(list.Instances) != 1 || list.Instances[0].ID != id {
		t.Errorf("instances = %+v", list.Instances)
	}

	r = api.run(t, "", "reset-password", "-o", "json", "--generate", "--wait", id)
	var op apiv1.Operation
	if err := json.Unmarshal([]byte(r.stdout), &op); err != nil || r.code != 0 {
		t.Fatalf("reset: %v, %+v", err, r)
	}
	if op.Status != apiv1.OperationSucceeded || op.GeneratedPassword == "" || len(op.Items) != 1 {
		t.Errorf("operation = %+v", op)
	}

	r = api.run(t, "", "-o", "json", "operations", "show", op.ID)
	var shown apiv1.Operation
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.ID != op.ID || shown.GeneratedPassword != "" {
		t.Errorf("operations show: %v, %+v", err, shown)
	}

	r = api.run(t, "", "-o", "json", "version")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["goVersion"] == "" {
		t.Errorf("version: %v %q", err, r.stdout)
	}
}

func TestPagination(t *testing.T) {
	api := startAPI(t)
	for i := range 5 {
		api.addInstance(t, fmt.Sprintf("n%d", i))
	}
	names := regexp.MustCompile(`(?m)\bn[0-4]\b`)
	r := api.run(t, "", "instances", "list", "--limit", "2")
	next := regexp.MustCompile(`--cursor (\S+)\)`).FindStringSubmatch(r.stderr)
	if len(names.FindAllString(r.stdout, -1)) != 2 || next == nil {
		t.Fatalf("one page: %+v", r)
	}
	r = api.run(t, "", "instances", "list", "--limit", "2", "--all")
	if len(names.FindAllString(r.stdout, -1)) != 5 || r.stderr != "" {
		t.Errorf("all pages: %+v", r)
	}
	r = api.run(t, "", "-o", "json", "instances", "list", "--limit", "3", "--cursor", next[1])
	var list apiv1.InstanceList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Instances) != 3 || list.NextCursor != "" ||
		list.Instances[0].Name != "n2" {
		t.Errorf("last page: %v %+v", err, list)
	}
}

func TestAPIErrorsArePrinted(t *testing.T) {
	api := startAPI(t)
	r := api.run(t, "", "instances", "show", "ins-nope")
	if r.code != 1 {
		t.Errorf("exit %d", r.code)
	}
	for _, want := range []string{"INSTANCE_NOT_FOUND", `instance "ins-nope" not found`, "request id ", "HTTP 404"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
	r = api.run(t, "", "reset-password", "--generate", "ins-aaaaaaaa", "ins-bbbbbbbb")
	if r.code != 1 || !strings.Contains(r.stderr, core.CodeInstanceNotFound) ||
		!strings.Contains(r.stderr, `details: {"unknownIds":["ins-aaaaaaaa","ins-bbbbbbbb"]}`) {
		t.Errorf("reset of unknown instances: %+v", r)
	}

	env := map[string]string{envServer: api.env[envServer], envKeyID: api.s.Admin.ID, envKeySecret: "Not-The-Secret-42"}
	r = runCLI(t, env, "", "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "UNAUTHENTICATED") || strings.Contains(r.stderr, "Not-The-Secret-42") {
		t.Errorf("bad key: %+v", r)
	}
}

func TestCredentials(t *testing.T) {
	api := startAPI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-credentials")
	creds, _ := json.Marshal(credentialsFile{KeyID: api.s.Admin.ID, Secret: api.s.Admin.Secret, Server: api.env[envServer]})
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "", "--credentials", file, "tenants", "list"); r.code != 0 || !strings.Contains(r.stdout, core.AdminTenant) {
		t.Errorf("--credentials: %+v", r)
	}
	if r := runCLI(t, map[string]string{envCredentials: file}, "", "keys", "list"); r.code != 0 {
		t.Errorf("$%s: %+v", envCredentials, r)
	}
	if r := runCLI(t, map[string]string{envKeyID: "k"}, "", "keys", "list"); r.code != 1 || !strings.Contains(r.stderr, "set both") {
		t.Errorf("half a key: %+v", r)
	}
	if r := runCLI(t, nil, "", "keys", "list"); r.code != 1 || !strings.Contains(r.stderr, "no API key") {
		t.Errorf("no key: %+v", r)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte(`{"keyId":"k","secret":"TopSecretValue`), 0o600)
	if r := runCLI(t, nil, "", "--credentials", bad, "keys", "list"); r.code != 1 || strings.Contains(r.stderr, "TopSecretValue") {
		t.Errorf("bad file: %+v", r)
	}
}

func TestAdminCommands(t *testing.T) {
	api := startAPI(t)
	r := api.run(t, "", "-o", "json", "keys", "create", "--name", "ci")
	var k apiv1.KeyCreated
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil || k.Secret == "" {
		t.Fatalf("keys create: %v %+v", err, r)
	}
	// The new key works, and stops working once revoked.
	env := map[string]string{envServer: api.env[envServer], envKeyID: k.ID, envKeySecret: k.Secret}
	if r := runCLI(t, env, "", "tenants", "list"); r.code != 0 {
		t.Errorf("new key refused: %+v", r)
	}
	if r := api.run(t, "", "keys", "revoke", k.ID, "key-missing"); r.code != 1 ||
		!strings.Contains(r.stdout, "Revoked "+k.ID) || !strings.Contains(r.stderr, "KEY_NOT_FOUND") {
		t.Errorf("revoke: %+v", r)
	}
	if r := runCLI(t, env, "", "tenants", "list"); r.code != 1 {
		t.Errorf("revoked key accepted: %+v", r)
	}
	if r := api.run(t, "", "keys", "list"); r.code != 0 || !strings.Contains(r.stdout, k.ID) {
		t.Errorf("keys list: %+v", r)
	}
	if r := api.run(t, "", "tenants", "create", "acme"); r.code != 0 || !strings.Contains(r.stdout, "acme") {
		t.Errorf("tenants create: %+v", r)
	}
	if r := api.run(t, "", "audit", "list", "--all"); r.code != 0 || !strings.Contains(r.stdout, "key.create") {
		t.Errorf("audit list: %+v", r)
	}
	if r := api.run(t, "", "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "fleetpass ") {
		t.Errorf("version: %+v", r)
	}
}

func TestReadPasswordLine(t *testing.T) {
	r := strings.NewReader("first\r\nsecond\n")
	pw, err := readPasswordLine(r)
	if err != nil || string(pw) != "first" {
		t.Fatalf("got %q, %v", pw, err)
	}
	if r.Len() != len("second\n") {
		t.Errorf("read past the first line: %d bytes left", r.Len())
	}
	if pw, err := readPasswordLine(strings.NewReader("no newline")); err != nil || string(pw) != "no newline" {
		t.Errorf("got %q, %v", pw, err)
	}
	if _, err := readPasswordLine(strings.NewReader(strings.Repeat("x", maxPasswordBytes+1))); err == nil {
		t.Error("overlong password accepted")
	}
}

func TestPlainRenderer(t *testing.T) {
	op := &apiv1.Operation{ID: "op-7", Kind: apiv1.KindResetPassword, Status: apiv1.OperationRunning, Items: []apiv1.Item{
		{InstanceID: "ins-a", InstanceName: "web-1", State: apiv1.ItemPending, Step: apiv1.StepQueued},
		{InstanceID: "ins-b", InstanceName: "web-2", State: apiv1.ItemPending, Step: apiv1.StepQueued},
	}}
	var out bytes.Buffer
	r := &plainRenderer{w: &out}
	p := newProgress(op, time.Now())
	r.update(p, p.order)
	items := []apiv1.Item{
		{InstanceID: "ins-a", State: apiv1.ItemRunning, Step: apiv1.StepQueued}, // line unchanged: none
		{InstanceID: "ins-a", State: apiv1.ItemRunning, Step: apiv1.StepShuttingDown},
		{InstanceID: "ins-a", State: apiv1.ItemRunning, Step: apiv1.StepShuttingDown}, // repeated: no line
		{InstanceID: "ins-b", State: apiv1.ItemRunning, Step: apiv1.StepApplying},
		{InstanceID: "ins-a", State: apiv1.ItemRunning, Step: apiv1.StepForceStopping, Message: "graceful shutdown timed out"},
		{InstanceID: "ins-b", State: apiv1.ItemSucceeded, Step: apiv1.StepDone},
		{InstanceID: "ins-a", State: apiv1.ItemFailed, Step: apiv1.StepWaitingGuest, ErrorCode: "AGENT_NOT_ALIVE", Message: "no agent"},
	}
	for _, it := range items {
		if p.applyItem(it) {
			r.update(p, []string{it.InstanceID})
		}
	}
	final := *op
	final.Status = apiv1.OperationPartial
	final.Items = []apiv1.Item{
		{InstanceID: "ins-a", InstanceName: "web-1", State: apiv1.ItemFailed, Step: apiv1.StepWaitingGuest, ErrorCode: "AGENT_NOT_ALIVE", Message: "no agent"},
		{InstanceID: "ins-b", InstanceName: "web-2", State: apiv1.ItemSucceeded, Step: apiv1.StepDone},
	}
	r.update(p, p.applyOperation(&final))
	r.finish(p)

	want := `ins-a web-1 queued
ins-b web-2 queued
ins-a web-1 shutting down
ins-b web-2 applying
ins-a web-1 force stopping (graceful shutdown timed out)
ins-b web-2 succeeded
ins-a web-1 failed: AGENT_NOT_ALIVE: no agent
op-7 reset_password partial: 1 succeeded, 1 failed of 2
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	if err := waitResult(&final); exitCode(err) != 2 {
		t.Errorf("exit code %d for a partial operation", exitCode(err))
	}
	final.Status, final.Items = apiv1.OperationSucceeded, final.Items[1:]
	if err := waitResult(&final); err != nil {
		t.Errorf("waitResult of a success = %v", err)
	}
}

func TestLiveRendererRedrawsInPlace(t *testing.T) {
	op := &apiv1.Operation{ID: "op-1", Kind: apiv1.KindStop, Status: apiv1.OperationRunning, Items: []apiv1.Item{
		{InstanceID: "ins-a", InstanceName: "web-1", State: apiv1.ItemPending, Step: apiv1.StepQueued},
	}}
	var out bytes.Buffer
	start := time.Now()
	r := &liveRenderer{w: &out, width: 80, now: func() time.Time { return start.Add(3 * time.Second) }}
	p := newProgress(op, start)
	r.update(p, p.order)
	first := out.String()
	if strings.Contains(first, "\x1b[") && strings.Contains(first, "\x1b[3A") {
		t.Errorf("first draw moved the cursor up: %q", first)
	}
	p.applyItem(apiv1.Item{InstanceID: "ins-a", State: apiv1.ItemSucceeded, Step: apiv1.StepDone})
	r.update(p, []string{"ins-a"})
	second := out.String()[len(first):]
	if !strings.HasPrefix(second, "\x1b[3A") {
		t.Errorf("redraw does not go back over the 3 lines drawn: %q", second)
	}
	for _, want := range []string{"INSTANCE", "ins-a", "web-1", "done", "succeeded", "op-1 stop running: 1 succeeded of 1 (3s)"} {
		if !strings.Contains(second, want) {
			t.Errorf("redraw lacks %q: %q", want, second)
		}
	}
}

// A server (or a proxy in front of it) without the event stream: --wait
// follows the operation by polling instead.
func TestWaitFollowsByPollingWhenEventsAreMissing(t *testing.T) {
	api := startAPI(t)
	id := api.addInstance(t, "web-1")
	target, err := url.Parse(api.s.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var refused atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/events") {
			refused.Add(1)
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	env := maps.Clone(api.env)
	env[envServer] = front.URL
	r := runCLI(t, env, "", "reset-password", "--generate", "--wait", id)
	if r.code != 0 || !strings.Contains(r.stdout, id+" web-1 succeeded") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if refused.Load() == 0 {
		t.Error("the CLI never asked for the event stream: the test proves nothing")
	}
}
