package server_test

// The security review of tenant boundaries, revocation, console sign-in and
// the data directory: each test is an attack or a failure seen from
// outside, named after it (go test -run Security ./internal/server).

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/consoletest"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/engine"
)

// A tenant key names another tenant's machine (its sim address) in a new
// instance, to reset its password: refused, and the victim's machine keeps
// its one record.
func TestSecurity_TenantRegistersAnotherTenantsMachine(t *testing.T) {
	e := newEnv(t, envOpts{})
	victim := e.addMachine(machineOpts{name: "db-1", tenant: "acme", running: true})
	mallory := e.newKey("mallory")
	for _, link := range []apiv1.DriverLink{victim.Power, {Driver: "sim", Address: "m-anything"}} {
		r := e.do(mallory, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "mine", OSType: "linux", Power: link, Guest: link})
		if r.status != http.StatusForbidden || r.errCode() != core.CodeLinkForbidden {
			t.Fatalf("a tenant registering links: %d %s, want 403 %s", r.status, r.errCode(), core.CodeLinkForbidden)
		}
	}
	var list apiv1.InstanceList
	e.mustDo(mallory, "GET", "/v1/instances", nil, http.StatusOK, &list)
	if len(list.Instances) != 0 {
		t.Fatalf("mallory has instances: %+v", list.Instances)
	}
	// Even the operator cannot make a second record of one machine.
	for _, which := range []string{"power", "guest"} {
		req := apiv1.InstanceCreate{Name: "copy", Tenant: "mallory", OSType: "linux",
			Power: apiv1.DriverLink{Driver: "sim", Address: "m-other-" + which}, Guest: apiv1.DriverLink{Driver: "sim", Address: "m-other2-" + which}}
		if which == "power" {
			req.Power = victim.Power
		} else {
			req.Guest = victim.Guest
		}
		r := e.do(e.admin, "POST", "/v1/instances", req)
		if r.status != http.StatusConflict || r.errCode() != core.CodeLinkInUse || r.errBody().Error.Details["link"] != which {
			t.Errorf("a second record of the %s link: %d %s, want 409 %s", which, r.status, r.body, core.CodeLinkInUse)
		}
	}
}

// The qga channel is given a socket path outside the operator's
// directories (another VM's socket, a system service's): refused when the
// link is made, and never dialled.
func TestSecurity_QGASocketOutsideTheOperatorsDirectories(t *testing.T) {
	allowed, err := os.MkdirTemp("", "fpqga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(allowed) })
	outside := t.TempDir()
	// A link inside the allowed directory that leads out of it.
	if err := os.Symlink(outside, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{qgaDirs: []string{allowed}})
	if err := e.srv.Sim().Add(context.Background(), sim.Machine{ID: "m-q"}); err != nil {
		t.Fatal(err)
	}
	_ = e.srv.Service().EnsureTenant(context.Background(), "acme")
	for i, path := range []string{
		filepath.Join(outside, "vm.sock"),
		"/run/systemd/private",
		filepath.Join(allowed, "..", filepath.Base(outside), "vm.sock"),
		filepath.Join(allowed, "escape", "vm.sock"),
		"relative.sock",
	} {
		r := e.do(e.admin, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "q", Tenant: "acme", OSType: "linux",
			Power: apiv1.DriverLink{Driver: "sim", Address: fmt.Sprintf("m-q%d", i)}, Guest: apiv1.DriverLink{Driver: "qga", Address: path}})
		if r.status != http.StatusBadRequest || r.errCode() != core.CodeInvalidArgument {
			t.Errorf("qga socket %s: %d %s, want 400 INVALID_ARGUMENT", path, r.status, r.body)
		}
	}
	r := e.do(e.admin, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "q", Tenant: "acme", OSType: "linux",
		Power: apiv1.DriverLink{Driver: "sim", Address: "m-q"}, Guest: apiv1.DriverLink{Driver: "qga", Address: filepath.Join(allowed, "vm.sock")}})
	if r.status != http.StatusCreated {
		t.Errorf("a socket under --qga-socket-dir: %d %s, want 201", r.status, r.body)
	}
	// A server without --qga-socket-dir dials no socket at all.
	e2 := newEnv(t, envOpts{})
	_ = e2.srv.Service().EnsureTenant(context.Background(), "acme")
	r = e2.do(e2.admin, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "q", Tenant: "acme", OSType: "linux",
		Power: apiv1.DriverLink{Driver: "sim", Address: "m-q"}, Guest: apiv1.DriverLink{Driver: "qga", Address: filepath.Join(allowed, "vm.sock")}})
	if r.status != http.StatusBadRequest {
		t.Errorf("a qga socket on a server without --qga-socket-dir: %d %s, want 400", r.status, r.body)
	}
}

// A record whose link names a libvirt host of another tenant (written
// behind the API's back, by an old version or by hand) is not acted on:
// the engine checks the links before every action.
func TestSecurity_EngineActsOnlyOnTheInstancesOwnLinks(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	svc := e.srv.Service()
	for _, tn := range []string{"acme", "other"} {
		if err := svc.EnsureTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	st := e.srv.Store()
	var in apiv1.Instance
	err := st.InTx(ctx, func(tx *sql.Tx) error {
		h := apiv1.Host{ID: "hst-otherhost", Driver: core.LibvirtDriver, URI: "qemu+ssh://other.example/system", Tenant: "other",
			Name: "other", MaxConcurrency: 4, DefaultOSType: "linux"}
		if err := st.CreateHost(ctx, tx, &h); err != nil {
			return err
		}
		link := apiv1.DriverLink{Driver: core.LibvirtDriver, Host: h.ID, Address: "4a3f2c1e-0000-4000-8000-000000000001"}
		in = apiv1.Instance{ID: core.NewID("ins", 10), Tenant: "acme", Name: "stolen", OSType: "linux", AdminUser: "root",
			State: apiv1.StateStopped, Power: link, Guest: link}
		return st.CreateInstance(ctx, tx, &in)
	})
	if err != nil {
		t.Fatal(err)
	}
	op := e.wait(e.admin, e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: []string{in.ID}, Password: goodPW, Mode: apiv1.ModeOffline}).ID)
	it := itemOf(op, in.ID)
	if it.ErrorCode != engine.CodeLinkMismatch {
		t.Fatalf("item = %+v, want %s", it, engine.CodeLinkMismatch)
	}
}

// An admin's batch over two tenants' instances would file everything
// under the first tenant: refused, naming the tenants.
func TestSecurity_AdminBatchAcrossTenants(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.addMachine(machineOpts{name: "a", tenant: "acme"})
	b := e.addMachine(machineOpts{name: "b", tenant: "globex"})
	for _, path := range []string{"/v1/password-resets", "/v1/power-actions"} {
		var body any = apiv1.PasswordReset{InstanceIDs: ids(a, b), Password: goodPW}
		if path == "/v1/power-actions" {
			body = apiv1.PowerAction{Action: apiv1.ActionStart, InstanceIDs: ids(a, b)}
		}
		r := e.do(e.admin, "POST", path, body)
		if r.status != http.StatusBadRequest || r.errCode() != core.CodeCrossTenantBatch {
			t.Fatalf("%s across tenants: %d %s, want 400 %s", path, r.status, r.body, core.CodeCrossTenantBatch)
		}
		if got := fmt.Sprint(r.errBody().Error.Details["tenants"]); got != "[acme globex]" {
			t.Errorf("details.tenants = %s", got)
		}
	}
	// One tenant's batch is that tenant's operation, which it sees.
	acme := e.newKey("acme")
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(a), Password: goodPW})
	if op.Tenant != "acme" {
		t.Errorf("operation tenant %q, want acme", op.Tenant)
	}
	e.mustDo(acme, "GET", "/v1/operations/"+op.ID, nil, http.StatusOK, nil)
}

// The admin revokes a tenant's key and deletes its instance: the tenant's
// own audit trail shows both, with the admin as the actor.
func TestSecurity_AdminActionsOnATenantAreInItsAudit(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "gone", tenant: "acme"})
	watcher, victim := e.newKey("acme"), e.newKey("acme")
	e.mustDo(e.admin, "DELETE", "/v1/keys/"+victim.id, nil, http.StatusNoContent, nil)
	e.mustDo(e.admin, "DELETE", "/v1/instances/"+in.ID, nil, http.StatusNoContent, nil)
	var audit apiv1.AuditList
	e.mustDo(watcher, "GET", "/v1/audit", nil, http.StatusOK, &audit)
	found := map[string]bool{}
	for _, a := range audit.Entries {
		if a.Actor.ID == e.admin.id {
			found[a.Action+" "+a.Target] = true
		}
	}
	for _, want := range []string{"key.revoke " + victim.id, "instance.delete " + in.ID} {
		if !found[want] {
			t.Errorf("acme's audit lacks %q by the admin: %+v", want, audit.Entries)
		}
	}
}

// A driver failure's text names other systems (here a socket path): the
// tenant reads a message without it; the admin reads it in detail.
func TestSecurity_ItemMessagesCarryNoOtherSystemsIdentifiers(t *testing.T) {
	dir, err := os.MkdirTemp("", "fpqga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := newEnv(t, envOpts{qgaDirs: []string{dir}})
	ctx := context.Background()
	in := e.addMachine(machineOpts{name: "q1", tenant: "acme", running: true})
	// A record (written behind the API's back) whose socket is outside
	// the operator's directories: the driver refuses it, saying where.
	sock := filepath.Join(t.TempDir(), "secret-host-path.sock")
	st := e.srv.Store()
	if err := st.SetInstanceGuest(ctx, st.DB, in.ID, apiv1.DriverLink{Driver: "qga", Address: sock}); err != nil {
		t.Fatal(err)
	}
	acme := e.newKey("acme")
	op := e.wait(acme, e.reset(acme, apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW, Mode: apiv1.ModeOnline}).ID)
	it := itemOf(op, in.ID)
	if it.State != apiv1.ItemFailed {
		t.Fatalf("item = %+v, want failed", it)
	}
	raw := e.do(acme, "GET", "/v1/operations/"+op.ID, nil)
	if strings.Contains(string(raw.body), sock) || strings.Contains(string(raw.body), "secret-host-path") {
		t.Errorf("the tenant reads the socket path: %s", raw.body)
	}
	var adminView apiv1.Operation
	e.mustDo(e.admin, "GET", "/v1/operations/"+op.ID, nil, http.StatusOK, &adminView)
	if !strings.Contains(itemOf(adminView, in.ID).Detail, "secret-host-path") {
		t.Logf("tenant view: %s", raw.body)
		t.Errorf("the admin's detail = %q, want the driver's words", itemOf(adminView, in.ID).Detail)
	}
}

// openStream opens /v1/events (or any long request) and reports when it
// ends.
func openStream(t *testing.T, req *http.Request) <-chan struct{} {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	return done
}

// A revoked key, a signed-out console session, or the other sessions of a
// user who changed the password, kept their open event streams and long
// polls, and with them the tenant's live events.
func TestSecurity_RevocationEndsOpenStreams(t *testing.T) {
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "slow", tenant: "acme", running: true, shutdown: time.Hour, faults: sim.Faults{HangShutdown: true}})
	k := e.newKey("acme")
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: ids(in), Password: goodPW, Mode: apiv1.ModeOffline, ForceStop: true})

	get := func(path string) *http.Request {
		req, _ := http.NewRequest("GET", e.url+path, nil)
		req.SetBasicAuth(k.id, k.secret)
		return req
	}
	stream := openStream(t, get("/v1/events"))
	waitDone := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(get("/v1/operations/" + op.ID + "/wait?timeout=5m"))
		if err != nil {
			waitDone <- 0
			return
		}
		resp.Body.Close()
		waitDone <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // both requests are open
	e.mustDo(e.admin, "DELETE", "/v1/keys/"+k.id, nil, http.StatusNoContent, nil)
	select {
	case <-stream:
	case <-time.After(5 * time.Second):
		t.Error("the revoked key's event stream is still open 5 s after the revocation")
	}
	select {
	case status := <-waitDone:
		if status != http.StatusUnauthorized {
			t.Errorf("the revoked key's long poll ended with %d, want 401", status)
		}
	case <-time.After(5 * time.Second):
		t.Error("the revoked key's long poll is still open 5 s after the revocation")
	}

	// A console session's stream ends when it signs out.
	e.consoleUser("olga", "acme", false)
	jar := signInClient(t, e, "olga", consolePassword, "")
	req, _ := http.NewRequest("GET", e.url+"/console/api/v1/events", nil)
	resp, err := jar.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	consoleStream := make(chan struct{})
	go func() {
		defer close(consoleStream)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	time.Sleep(300 * time.Millisecond)
	// Signing out from another tab of the same session.
	out, _ := http.NewRequest("POST", e.url+"/console/api/sign-out", nil)
	out.Header.Set("Origin", e.url)
	out.Header.Set("X-CSRF-Token", jar.csrf)
	if r, err := jar.client.Do(out); err != nil || r.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %v %v", r, err)
	}
	select {
	case <-consoleStream:
	case <-time.After(5 * time.Second):
		t.Error("the signed-out session's event stream is still open 5 s after signing out")
	}

	// A password change ends the user's other sessions and their streams.
	here := signInClient(t, e, "olga", consolePassword, "")
	there := signInClient(t, e, "olga", consolePassword, "")
	req, _ = http.NewRequest("GET", e.url+"/console/api/v1/events", nil)
	resp, err = there.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	otherStream := make(chan struct{})
	go func() {
		defer close(otherStream)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	time.Sleep(300 * time.Millisecond)
	change, _ := http.NewRequest("POST", e.url+"/console/api/password",
		strings.NewReader(`{"current":"`+consolePassword+`","new":"Another-Console-pw-77"}`))
	change.Header.Set("Content-Type", "application/json")
	change.Header.Set("Origin", e.url)
	change.Header.Set("X-CSRF-Token", here.csrf)
	if r, err := here.client.Do(change); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("password change: %v %v", r, err)
	}
	select {
	case <-otherStream:
	case <-time.After(5 * time.Second):
		t.Error("another session's event stream is still open 5 s after the password change")
	}
}

// signedIn is an HTTP client with a console session.
type signedIn struct {
	client *http.Client
	csrf   string
}

// signInClient signs in to the console as user from forwardedFor (sent as
// X-Forwarded-For when not empty) and returns the client with its cookie.
func signInClient(t *testing.T, e *env, user, pw, forwardedFor string) signedIn {
	t.Helper()
	status, body, hdr, c := consoleSignIn(e, user, pw, forwardedFor)
	if status != http.StatusOK {
		t.Fatalf("sign-in as %s: %d %s", user, status, body)
	}
	var info struct {
		CSRFToken string `json:"csrfToken"`
	}
	_ = json.Unmarshal(body, &info)
	_ = hdr
	return signedIn{client: c, csrf: info.CSRFToken}
}

// consoleSignIn posts one sign-in and answers its status, body, headers
// and a client carrying the session cookie, if any.
func consoleSignIn(e *env, user, pw, forwardedFor string) (int, []byte, http.Header, *http.Client) {
	body, _ := json.Marshal(map[string]string{"user": user, "password": pw})
	req, _ := http.NewRequest("POST", e.url+"/console/api/sign-in", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", e.url)
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, c
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header, c
}

// Machines whose guest channel never answers, many of them in one tenant,
// held up every other tenant's new instances (the PENDING pass waited for
// the full pass).
func TestSecurity_HungGuestsOfOneTenantDelayAnother(t *testing.T) {
	dir, err := os.MkdirTemp("", "fphung")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := newEnv(t, envOpts{qgaDirs: []string{dir}, syncInterval: 500 * time.Millisecond})
	ctx := context.Background()
	st := e.srv.Store()
	if err := e.srv.Service().EnsureTenant(ctx, "hung"); err != nil {
		t.Fatal(err)
	}
	// 100 guest agent sockets that accept and never answer.
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	err = st.InTx(ctx, func(tx *sql.Tx) error {
		for i := range 100 {
			sock := filepath.Join(dir, fmt.Sprintf("h%03d.sock", i))
			ln, err := net.Listen("unix", sock)
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
			addr := fmt.Sprintf("m-hung-%03d", i)
			if err := e.srv.Sim().Add(ctx, sim.Machine{ID: addr, Running: true}); err != nil {
				return err
			}
			in := apiv1.Instance{ID: core.NewID("ins", 10), Tenant: "hung", Name: addr, OSType: "linux", AdminUser: "root",
				State: apiv1.StateRunning, Power: apiv1.DriverLink{Driver: "sim", Address: addr},
				Guest: apiv1.DriverLink{Driver: "qga", Address: sock}}
			if err := st.CreateInstance(ctx, tx, &in); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the full pass is busy with the hung tenant
	// Another tenant's new machine is seen running promptly.
	addr := "m-fresh"
	if err := e.srv.Sim().Add(ctx, sim.Machine{ID: addr, Running: true}); err != nil {
		t.Fatal(err)
	}
	p := core.Principal{Kind: "key", ID: "test", Tenant: "fresh", Admin: true}
	_ = e.srv.Service().EnsureTenant(ctx, "fresh")
	in, err := e.srv.Service().RegisterInstance(ctx, p, apiv1.InstanceCreate{Name: "fresh", Tenant: "fresh", OSType: "linux",
		Power: apiv1.DriverLink{Driver: "sim", Address: addr}, Guest: apiv1.DriverLink{Driver: "sim", Address: addr}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := e.instance(e.admin, in.ID)
		if got.State == apiv1.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new instance of another tenant is still %s 15 s after registration, behind the hung tenant's machines", got.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A tenant registers machines without end: past the quota, refused with
// its own code.
func TestSecurity_InstanceQuotaPerTenant(t *testing.T) {
	e := newEnv(t, envOpts{maxPerTenant: 2})
	e.addMachine(machineOpts{name: "one", tenant: "acme"})
	e.addMachine(machineOpts{name: "two", tenant: "acme"})
	if err := e.srv.Sim().Add(context.Background(), sim.Machine{ID: "m-three"}); err != nil {
		t.Fatal(err)
	}
	link := apiv1.DriverLink{Driver: "sim", Address: "m-three"}
	r := e.do(e.admin, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "three", Tenant: "acme", OSType: "linux", Power: link, Guest: link})
	if r.status != http.StatusForbidden || r.errCode() != core.CodeInstanceQuota {
		t.Fatalf("third instance past a quota of 2: %d %s, want 403 %s", r.status, r.body, core.CodeInstanceQuota)
	}
	// Another tenant is not affected.
	r = e.do(e.admin, "POST", "/v1/instances", apiv1.InstanceCreate{Name: "three", Tenant: "admin", OSType: "linux", Power: link, Guest: link})
	if r.status != http.StatusCreated {
		t.Errorf("another tenant's first instance: %d %s", r.status, r.body)
	}
}

// A leaked enrolment token could not be withdrawn, and answers carrying a
// token or an agent secret could be kept by a cache.
func TestSecurity_EnrolmentTokensListedRevokedAndNeverCached(t *testing.T) {
	e := newEnv(t, envOpts{})
	acme, other := e.newKey("acme"), e.newKey("other")
	var tok apiv1.AgentTokenCreated
	r := e.mustDo(acme, "POST", "/v1/agent-tokens", apiv1.AgentTokenCreate{InstanceName: "web-9"}, http.StatusCreated, &tok)
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("token answer Cache-Control %q, want no-store", cc)
	}
	var list apiv1.AgentTokenList
	e.mustDo(acme, "GET", "/v1/agent-tokens", nil, http.StatusOK, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].ID != tok.ID || list.Tokens[0].State != apiv1.TokenActive {
		t.Fatalf("tokens = %+v", list.Tokens)
	}
	if strings.Contains(string(e.do(acme, "GET", "/v1/agent-tokens", nil).body), tok.Token) {
		t.Error("the list shows the token itself")
	}
	e.mustDo(other, "GET", "/v1/agent-tokens", nil, http.StatusOK, &list)
	if len(list.Tokens) != 0 {
		t.Errorf("another tenant lists acme's tokens: %+v", list.Tokens)
	}
	if r := e.do(other, "DELETE", "/v1/agent-tokens/"+tok.ID, nil); r.status != http.StatusNotFound || r.errCode() != core.CodeAgentTokenNotFound {
		t.Errorf("another tenant revoking acme's token: %d %s", r.status, r.body)
	}
	e.mustDo(acme, "DELETE", "/v1/agent-tokens/"+tok.ID, nil, http.StatusNoContent, nil)
	enrol := func(token string) reply {
		return e.do(key{}, "POST", agentproto.PathEnroll, agentproto.EnrollRequest{Token: token, Hostname: "web-9", OS: "linux",
			Version: "test", PublicKey: make([]byte, 32)})
	}
	if r := enrol(tok.Token); r.status != http.StatusUnauthorized {
		t.Errorf("enrolling with a revoked token: %d %s, want 401", r.status, r.body)
	}
	e.mustDo(acme, "GET", "/v1/agent-tokens", nil, http.StatusOK, &list)
	if list.Tokens[0].State != apiv1.TokenRevoked {
		t.Errorf("token state %q, want revoked", list.Tokens[0].State)
	}
	var fresh apiv1.AgentTokenCreated
	e.mustDo(acme, "POST", "/v1/agent-tokens", apiv1.AgentTokenCreate{}, http.StatusCreated, &fresh)
	r = enrol(fresh.Token)
	if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("enrolment answer: %d Cache-Control %q, want 201 no-store", r.status, r.header.Get("Cache-Control"))
	}
}

// 30 wrong passwords sent at once were all checked: the count was read
// before any of them was added.
func TestSecurity_ParallelWrongPasswordsCheckedPastTheLimit(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.consoleUser("pat", "acme", false)
	var checked, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, _, _ := consoleSignIn(e, "pat", fmt.Sprintf("wrong-password-%d", i), "")
			switch status {
			case http.StatusUnauthorized:
				checked.Add(1)
			case http.StatusTooManyRequests:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := checked.Load(); n > core.PairFailureLimit {
		t.Errorf("%d of 30 parallel wrong passwords were checked, want at most %d", n, core.PairFailureLimit)
	}
	if checked.Load()+refused.Load() != 30 {
		t.Errorf("checked %d + refused %d, want 30", checked.Load(), refused.Load())
	}
}

// rssMB is this process's resident memory in MiB.
func rssMB(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

// 100 sign-ins at once, from 100 addresses behind a trusted proxy, each
// made the server verify an argon2id hash of 19 MiB at the same time.
func TestSecurity_ParallelSignInsGrowMemory(t *testing.T) {
	if testing.Short() {
		// A memory bound: meaningless under -race (which the short run
		// uses), whose shadow memory multiplies every figure.
		t.Skip("measures the process's memory; not under -short")
	}
	e := newEnv(t, envOpts{trustedProxies: []string{"127.0.0.1/32", "::1/128"}})
	debug.FreeOSMemory()
	base := rssMB(t)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if m := int64(rssMB(t)); m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	statuses := make([]int, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _, _ = consoleSignIn(e, fmt.Sprintf("nobody-%d", i), "Wrong-password-123", fmt.Sprintf("198.51.100.%d", i+1))
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	t.Logf("RSS %d MiB before, peak %d MiB during 100 parallel sign-ins", base, peak.Load())
	if peak.Load() >= 300 {
		t.Errorf("peak RSS %d MiB during 100 parallel sign-ins, want under 300", peak.Load())
	}
	for i, s := range statuses {
		if s != http.StatusUnauthorized && s != http.StatusTooManyRequests {
			t.Errorf("sign-in %d: %d, want 401 or 429", i, s)
		}
	}
}

// 60 wrong passwords from one address locked the user out from everywhere
// for 15 minutes; guesses from many addresses slow the user down, capped at
// a minute, with Retry-After.
func TestSecurity_LockoutLocksTheRightfulUserOut(t *testing.T) {
	e := newEnv(t, envOpts{trustedProxies: []string{"127.0.0.1/32", "::1/128"}})
	e.consoleUser("rita", "acme", false)
	var offset atomic.Int64
	e.srv.Store().SetClock(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
	for i := range 60 {
		if s, body, _, _ := consoleSignIn(e, "rita", fmt.Sprintf("guess-%d", i), "203.0.113.66"); s != http.StatusUnauthorized && s != http.StatusTooManyRequests {
			t.Fatalf("guess %d: %d %s", i, s, body)
		}
	}
	if s, body, _, _ := consoleSignIn(e, "rita", consolePassword, "198.51.100.7"); s != http.StatusOK {
		t.Fatalf("the right password from another address after 60 wrong from one: %d %s, want 200", s, body)
	}
	// Guesses from 60 addresses slow the user down: the answer says how
	// long to wait (at most a minute), and after that the right password
	// signs in.
	for i := range 60 {
		consoleSignIn(e, "rita", fmt.Sprintf("guess-%d", i), fmt.Sprintf("192.0.2.%d", i+1))
	}
	start := offset.Load()
	for {
		s, body, hdr, _ := consoleSignIn(e, "rita", consolePassword, "198.51.100.7")
		if s == http.StatusOK {
			break
		}
		if s != http.StatusTooManyRequests {
			t.Fatalf("the right password during guesses: %d %s", s, body)
		}
		secs, err := strconv.Atoi(hdr.Get("Retry-After"))
		if err != nil || secs < 1 || secs > int(core.MaxUserDelay/time.Second)+1 {
			t.Fatalf("Retry-After %q: want 1 to 61 seconds", hdr.Get("Retry-After"))
		}
		offset.Add(int64(time.Duration(secs) * time.Second))
		if waited := time.Duration(offset.Load() - start); waited > 2*time.Minute {
			t.Fatalf("the rightful user still cannot sign in after %s", waited)
		}
	}
}

// A password typed into the user box reached the log with a failed
// sign-in.
func TestSecurity_FailedSignInLogsNoTypedPassword(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.consoleUser("sam", "acme", false)
	const typed = "Typed-Into-The-Name-Box-99"
	consoleSignIn(e, typed, "whatever", "")
	consoleSignIn(e, "sam", "not-the-password", "")
	logs := e.logs.String()
	if strings.Contains(logs, typed) {
		t.Error("the log holds the text typed into the user box")
	}
	if !strings.Contains(logs, "user=sam") {
		t.Error("the log does not name the existing user whose sign-in failed")
	}
}

// With a data directory others may read, the server created its database
// readable by everyone (the umask's 0644).
func TestSecurity_DataDirReadableByOthers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{dataDir: dir})
	e.addMachine(machineOpts{name: "x"})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %04o, want 0700", fi.Mode().Perm())
	}
	if !strings.Contains(e.logs.String(), "made it private") {
		t.Error("no warning that the data directory was made private")
	}
	entries, _ := os.ReadDir(dir)
	for _, ent := range entries {
		info, err := ent.Info()
		if err != nil || !ent.Type().IsRegular() {
			continue
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o, want 0600", ent.Name(), info.Mode().Perm())
		}
	}
	if len(entries) < 3 {
		t.Errorf("data dir holds %d files; the test looks at none", len(entries))
	}
}

// An admin's console selection over two tenants would have been filed
// under one of them: the console sends one reset per tenant and shows each
// operation.
func TestSecurity_ConsoleSplitsAnAdminsSelectionPerTenant(t *testing.T) {
	if testing.Short() {
		t.Skip("drives Chromium")
	}
	t.Parallel()
	e := newEnv(t, envOpts{})
	a := e.addMachine(machineOpts{name: "acme-01", tenant: "acme"})
	g := e.addMachine(machineOpts{name: "globex-01", tenant: "globex"})
	e.consoleUser("root-op", core.AdminTenant, true)
	b := newBrowser(t, e, 1280, 900)
	b.SignIn("root-op", consolePassword)
	b.WaitList()
	for _, in := range []apiv1.Instance{a, g} {
		b.Do("select "+in.Name, consoletest.Click(consoletest.Row(in.ID)+" .row-select"))
	}
	b.Do("batch reset", consoletest.Click("#batch-reset"), consoletest.Visible("#reset-dialog #reset-password"))
	const pw = "Split-Tenants-2024"
	b.Do("type", consoletest.TypeIn("#reset-password", pw), consoletest.TypeIn("#reset-confirm", pw))
	b.Do("submit", consoletest.Click("#reset-submit"))
	b.WaitFor("split notice", `document.querySelector("#split-notice") !== null`)
	b.Screenshot("split-per-tenant")
	if n := b.Eval(`String(document.querySelectorAll("#split-notice li").length)`); n != "2" {
		t.Errorf("the notice lists %s operations, want 2", n)
	}
	b.WaitOperationEnd()
	// The other tenant's operation is one click away.
	b.Do("other operation", consoletest.Click("#split-notice a"))
	b.WaitFor("other operation's page", `document.querySelector("#split-notice li span") !== null && document.querySelectorAll("#progress tbody tr").length === 1`)
	b.WaitOperationEnd()
	for _, in := range []apiv1.Instance{a, g} {
		if !e.checkPassword(in, "root", pw) {
			t.Errorf("%s did not get the new password", in.Name)
		}
	}
	var ops apiv1.OperationList
	e.mustDo(e.admin, "GET", "/v1/operations", nil, http.StatusOK, &ops)
	tenants := map[string]bool{}
	for _, op := range ops.Operations {
		tenants[op.Tenant] = true
	}
	if !tenants["acme"] || !tenants["globex"] {
		t.Errorf("operations in tenants %v, want one in acme and one in globex", tenants)
	}
}
