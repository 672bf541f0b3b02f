package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/console"
	"github.com/fleetpass/fleetpass/internal/consoletest"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// The console's tests drive a real Chromium (Debian's chromium package,
// installed by scripts/install-test-deps.sh) against the whole server in
// process. Each saves screenshots of its steps in its artifact directory
// (go test -artifacts), or under $FLEETPASS_SCREENSHOTS.

const consolePassword = consoletest.Password

// browser is a Chromium on e's console.
type browser = consoletest.Browser

func newBrowser(t *testing.T, e *env, w, h int) *browser { return consoletest.New(t, e.url, w, h) }

// consoleUser makes a console user who has already chosen consolePassword.
func (e *env) consoleUser(name, tenant string, admin bool) {
	e.t.Helper()
	e.s.ConsoleUser(name, tenant, admin, consolePassword)
}

func TestConsoleSingleResetOfStoppedInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "web-01", boot: 200 * time.Millisecond})
	e.addMachine(machineOpts{name: "db-01", running: true})
	e.consoleUser("alice", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("alice", consolePassword)
	b.WaitList()
	b.Screenshot("instance-list")
	b.OpenRowReset(in.ID)
	// All selected instances are stopped: Reset Password is on step one.
	if n := b.Eval(`String(document.querySelectorAll("#reset-next").length)`); n != "0" {
		t.Errorf("a stopped instance's dialog shows Next")
	}
	if got := b.Eval(`document.querySelector("#reset-user").value`); got != "root" {
		t.Errorf("OS default user = %q, want root", got)
	}
	// Keyboard focus stays in the dialog.
	for range 12 {
		b.Do("tab", chromedp.KeyEvent("\t"))
	}
	if b.Eval(`String(document.getElementById("reset-dialog").contains(document.activeElement))`) != "true" {
		t.Errorf("Tab moved the focus out of the dialog")
	}
	const pw = "Blue-Harbor-71x!"
	b.Do("type the password", consoletest.TypeIn("#reset-password", pw))
	b.WaitFor("rules met", `[...document.querySelectorAll("#reset-rules li")].every(li => li.dataset.state === "ok")`)
	b.Do("confirm", consoletest.TypeIn("#reset-confirm", pw))
	b.Screenshot("dialog-filled")
	b.Do("submit", consoletest.Click("#reset-submit"))
	b.WaitFor("progress view", `document.querySelector("#progress") !== null`)
	b.Screenshot("progress")
	b.WaitOperationEnd()
	b.Screenshot("progress-done")
	if s := b.ItemState(in.ID); s != "succeeded" {
		t.Fatalf("item state %q, want succeeded", s)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Errorf("the instance did not get the new password")
	}
	b.AssertNoTrace(pw)
	// The history and the instance's page show the operation.
	b.Do("operations page", chromedp.Navigate(b.Base+"/console/#/operations"))
	b.WaitFor("operations list", `document.querySelector("#operations tbody tr") !== null`)
	b.Screenshot("operations")
	b.Do("instance page", chromedp.Navigate(b.Base+"/console/#/instances/"+in.ID))
	b.WaitFor("instance operations", `document.querySelector("#instance-operations tbody tr") !== null`)
	b.Screenshot("instance-detail")
	b.AssertNoTrace(pw)
}

func TestConsoleBatchResetNeedsConsent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	r1 := e.addMachine(machineOpts{name: "app-01", running: true, shutdown: 100 * time.Millisecond})
	r2 := e.addMachine(machineOpts{name: "app-02", running: true, os: sim.Windows})
	s1 := e.addMachine(machineOpts{name: "app-03"})
	e.consoleUser("bob", "acme", false)
	b := newBrowser(t, e, 1280, 900)
	b.SignIn("bob", consolePassword)
	b.WaitList()
	if b.Eval(`String(document.querySelector("#batch-reset").disabled)`) != "true" {
		t.Errorf("Reset Password above the list is enabled with nothing selected")
	}
	for _, in := range []apiv1.Instance{r1, r2, s1} {
		b.Do("select "+in.Name, consoletest.Click(consoletest.Row(in.ID)+" .row-select"))
	}
	b.Screenshot("selected")
	b.Do("batch reset", consoletest.Click("#batch-reset"), consoletest.Visible("#reset-dialog #reset-password"))
	// Windows among them: the strictest rule (12+ characters) applies.
	const pw = "Quiet-Meadow-2024"
	b.Do("type", consoletest.TypeIn("#reset-password", pw), consoletest.TypeIn("#reset-confirm", pw))
	b.Screenshot("step1")
	b.Do("next", consoletest.Click("#reset-next"), consoletest.Visible("#reset-step2"))
	running := b.Eval(`[...document.querySelectorAll("#reset-running li")].map(li => li.dataset.id).sort().join(",")`)
	want := []string{r1.ID, r2.ID}
	if running != strings.Join(sortedCopy(want), ",") {
		t.Errorf("step 2 lists %q, want the running %v", running, want)
	}
	if b.Eval(`String(document.querySelector("#reset-submit").disabled)`) != "true" {
		t.Fatalf("Reset Password is enabled before consent")
	}
	b.Screenshot("step2-no-consent")
	b.Do("agree", consoletest.Click("#reset-consent"))
	b.WaitFor("enabled", `!document.querySelector("#reset-submit").disabled`)
	b.Screenshot("step2-consent")
	b.Do("submit", consoletest.Click("#reset-submit"))
	b.WaitFor("progress view", `document.querySelector("#progress") !== null`)
	b.WaitOperationEnd()
	b.Screenshot("done")
	for _, in := range []apiv1.Instance{r1, r2, s1} {
		if s := b.ItemState(in.ID); s != "succeeded" {
			t.Errorf("%s: %s, want succeeded", in.Name, s)
		}
		if !e.checkPassword(in, in.AdminUser, pw) {
			t.Errorf("%s did not get the password", in.Name)
		}
	}
	b.AssertNoTrace(pw)
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestConsolePasswordMistakes(t *testing.T) {
	t.Parallel()
	cfg := servertest.FastEngine()
	cfg.BootTimeout = time.Minute // keeps the busy instance busy while the dialog is used
	e := newEnv(t, envOpts{engine: cfg})
	in := e.addMachine(machineOpts{name: "files-01"})
	busy := e.addMachine(machineOpts{name: "files-02", boot: 20 * time.Second})
	e.consoleUser("carol", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("carol", consolePassword)
	b.WaitList()

	// A mismatched confirmation is shown beside the field; nothing is sent.
	b.OpenRowReset(in.ID)
	b.Do("mismatch", consoletest.TypeIn("#reset-password", "Green-Valley-88"), consoletest.TypeIn("#reset-confirm", "Green-Valley-89"), consoletest.Click("#reset-submit"))
	b.WaitFor("mismatch error", `!document.querySelector("#reset-confirm-error").hidden`)
	if got := b.Eval(`document.querySelector("#reset-confirm-error").textContent`); got != "The passwords do not match." {
		t.Errorf("confirmation error %q", got)
	}
	b.Screenshot("mismatch")

	// A rule violation: too short, no digit; the rules say which.
	b.ClearInputs("#reset-password", "#reset-confirm")
	b.Do("short", consoletest.TypeIn("#reset-password", "short"), consoletest.TypeIn("#reset-confirm", "short"))
	b.WaitFor("length rule broken", `document.querySelector('#reset-rules li[data-rule="length"]').dataset.state === "bad"`)
	b.Do("submit", consoletest.Click("#reset-submit"))
	b.WaitFor("rule error", `!document.querySelector("#reset-password-error").hidden`)
	// The error points at the rules, which are listed once, each marked.
	if got := b.Eval(`document.querySelector("#reset-password-error").textContent`); !strings.Contains(got, "marked ✗ below") {
		t.Errorf("rule error %q does not point at the marked rules", got)
	}
	if got := b.Eval(`document.querySelector('#reset-rules li[data-rule="length"]').textContent`); !strings.Contains(got, "characters long") {
		t.Errorf("the length rule reads %q", got)
	}
	b.Screenshot("rule-violation")
	var ops apiv1.OperationList
	e.mustDo(e.admin, "GET", "/v1/operations", nil, http.StatusOK, &ops)
	if len(ops.Operations) != 0 {
		t.Errorf("%d operations were created by refused forms", len(ops.Operations))
	}
	b.Do("cancel", consoletest.Click("#reset-cancel"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))

	// The server's own refusal of a password reaches the same place: make
	// the page's copy of the rule lax, so only the server catches it.
	b.Eval(`(() => { const orig = window.fetch;
		window.fetch = async (u, init) => {
			const r = await orig(u, init);
			if (!String(u).includes("/password-policy")) return r;
			const s = await r.json();
			s.minLength = 1; s.minClasses = 0;
			return new Response(JSON.stringify(s), {status: 200, headers: {"Content-Type": "application/json"}});
		}; return ""; })()`)
	b.OpenRowReset(in.ID)
	b.Do("lax", consoletest.TypeIn("#reset-password", "abc"), consoletest.TypeIn("#reset-confirm", "abc"), consoletest.Click("#reset-submit"))
	b.WaitFor("server rule error", `document.querySelector("#reset-password-error").textContent.includes("server refused")`)
	if got := b.Eval(`document.querySelector('#reset-rules li[data-rule="length"]').dataset.state`); got != "bad" {
		t.Errorf("the server's refusal does not mark the length rule broken: %q", got)
	}
	if got := b.Eval(`document.querySelector("#reset-submit").textContent`); got != "Reset Password" {
		t.Errorf("after a refusal the button reads %q", got)
	}
	b.Screenshot("server-rule-violation")
	b.Do("cancel", consoletest.Click("#reset-cancel"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))

	// A refusal of the server (the instance is busy) is shown beside the
	// instance, in words.
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: []string{busy.ID}, Password: "Other-pass-1234"})
	b.OpenRowReset(busy.ID)
	b.Do("type", consoletest.TypeIn("#reset-password", "Green-Valley-88"), consoletest.TypeIn("#reset-confirm", "Green-Valley-88"))
	b.Do("consent", consoletest.Click("#reset-next"), consoletest.Visible("#reset-consent"), consoletest.Click("#reset-consent"), consoletest.Click("#reset-submit"))
	b.WaitFor("busy error", `document.querySelector("#reset-instances .inst-error") !== null`)
	if got := b.Eval(`document.querySelector("#reset-instances .inst-error").textContent`); !strings.Contains(got, "Another operation") {
		t.Errorf("busy error %q", got)
	}
	b.Screenshot("busy")
	if op.Status != apiv1.OperationRunning {
		t.Errorf("the other operation is %s; the test needs it running", op.Status)
	}
}

func TestConsoleProgressWithAFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	good := e.addMachine(machineOpts{name: "ok-01", boot: 300 * time.Millisecond})
	dead := e.addMachine(machineOpts{name: "dead-agent-01", faults: sim.Faults{AgentDead: true}})
	e.consoleUser("dave", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("dave", consolePassword)
	b.WaitList()
	b.Do("select", consoletest.Click(consoletest.Row(good.ID)+" .row-select"), consoletest.Click(consoletest.Row(dead.ID)+" .row-select"))
	b.Do("batch reset", consoletest.Click("#batch-reset"), consoletest.Visible("#reset-dialog #reset-password"))
	const pw = "Amber-Lantern-55"
	b.Do("type", consoletest.TypeIn("#reset-password", pw), consoletest.TypeIn("#reset-confirm", pw), consoletest.Click("#reset-submit"))
	b.WaitFor("progress view", `document.querySelector("#progress") !== null`)
	b.Screenshot("progress")
	b.WaitOperationEnd()
	b.Screenshot("progress-one-failed")
	if s := b.ItemState(good.ID); s != "succeeded" {
		t.Errorf("healthy instance: %s", s)
	}
	if s := b.ItemState(dead.ID); s != "failed" {
		t.Fatalf("instance with a dead agent: %s, want failed", s)
	}
	reason := b.Eval(`document.querySelector('#progress tr[data-instance="` + dead.ID + `"] .item-message').textContent`)
	if strings.TrimSpace(reason) == "" {
		t.Errorf("the failed item shows no reason")
	}
	t.Logf("failure reason shown: %s", reason)
	if got := b.Eval(`document.querySelector("#op-status .badge").dataset.state`); got != apiv1.OperationPartial {
		t.Errorf("operation status %q, want partial", got)
	}
	b.AssertNoTrace(pw)
}

func TestConsoleSignInCSRFSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.addMachine(machineOpts{name: "web-01"})
	var creds server.ConsoleCredentials
	data, err := os.ReadFile(filepath.Join(e.dataDir, "console-credentials"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(e.dataDir, "console-credentials")); fi.Mode().Perm() != 0o600 {
		t.Errorf("console-credentials mode %v, want 0600", fi.Mode().Perm())
	}
	if err := json.Unmarshal(data, &creds); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, e, 1280, 800)
	b.Do("open", chromedp.Navigate(b.Base+"/console/"), consoletest.Visible("#signin-user"))
	b.Screenshot("sign-in")
	b.Do("wrong password", consoletest.TypeIn("#signin-user", creds.User), consoletest.TypeIn("#signin-password", "not-the-password"), consoletest.Click("#signin-submit"))
	b.WaitFor("error", `!document.querySelector("#signin-error").hidden`)
	b.Screenshot("sign-in-failed")
	b.ClearInputs("#signin-user")
	b.Do("sign in", consoletest.TypeIn("#signin-user", creds.User), consoletest.TypeIn("#signin-password", creds.Password), consoletest.Click("#signin-submit"))
	// First sign-in: the initial password must be changed.
	b.Do("change form", consoletest.Visible("#cp-new"))
	b.Screenshot("change-password")
	const next = "Fresh-start-pass-2026"
	b.Do("change", consoletest.TypeIn("#cp-current", creds.Password), consoletest.TypeIn("#cp-new", next), consoletest.TypeIn("#cp-confirm", next), consoletest.Click("#cp-submit"))
	b.WaitList()
	b.Screenshot("signed-in")
	ck := b.Cookie(console.CookieName)
	if ck == nil || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict", ck)
	}

	// CSRF: the page's own fetch without the token is refused; so is a
	// request with the token from another origin.
	got := b.Eval(`fetch("/console/api/v1/password-resets", {method: "POST", headers: {"Content-Type": "application/json"},
		body: JSON.stringify({instanceIds: ["ins-aaaaaaaa"], password: "x"})}).then(async r => r.status + " " + (await r.json()).error.code)`)
	if got != "403 CSRF_REFUSED" {
		t.Errorf("POST without the CSRF token: %s", got)
	}
	csrf := b.Eval(`fetch("/console/api/session").then(r => r.json()).then(s => s.csrfToken)`)
	post := func(origin, token string) int {
		req, _ := http.NewRequest("POST", e.url+"/console/api/v1/password-resets", strings.NewReader(`{"instanceIds":[]}`))
		req.Header.Set("Content-Type", "application/json")
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if token != "" {
			req.Header.Set(console.CSRFHeader, token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post("https://evil.example", csrf); s != http.StatusForbidden {
		t.Errorf("cross-origin POST with the token: %d, want 403", s)
	}
	if s := post(e.url, ""); s != http.StatusForbidden {
		t.Errorf("same-origin POST without the token: %d, want 403", s)
	}
	if s := post(e.url, "wrong"+csrf); s != http.StatusForbidden {
		t.Errorf("same-origin POST with a wrong token: %d, want 403", s)
	}
	if s := post(e.url, csrf); s != http.StatusBadRequest { // the empty list is refused by the core
		t.Errorf("same-origin POST with the token: %d, want 400", s)
	}

	b.Do("sign out", consoletest.Click("#sign-out"), consoletest.Visible("#signin-user"))
	b.Screenshot("signed-out")
	req, _ := http.NewRequest("GET", e.url+"/console/api/v1/instances", nil)
	req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the session still works after sign-out: %d", resp.StatusCode)
	}
}

func TestConsoleTenantSeesOnlyItsInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	mine := e.addMachine(machineOpts{name: "acme-web", tenant: "acme"})
	theirs := e.addMachine(machineOpts{name: "globex-web", tenant: "globex"})
	e.consoleUser("erin", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("erin", consolePassword)
	b.WaitList()
	ids := b.Eval(`[...document.querySelectorAll("#instances tbody tr")].map(tr => tr.dataset.id).join(",")`)
	if ids != mine.ID {
		t.Errorf("the list shows %q, want only %s", ids, mine.ID)
	}
	b.Screenshot("own-instances")
	// Badges follow the events stream, without a reload.
	alive := true
	if err := e.srv.Service().SetInstanceObserved(context.Background(), mine.ID, apiv1.StateRunning, &alive); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("live badge", `document.querySelector('`+consoletest.Row(mine.ID)+` .col-state .badge').dataset.state === "RUNNING" &&
		document.querySelector('`+consoletest.Row(mine.ID)+` .col-agent span').dataset.alive === "true"`)
	// Searching by another tenant's instance id finds nothing.
	b.Do("search by id", consoletest.TypeIn("#filter-name", theirs.ID))
	b.WaitFor("no match", `document.querySelector("#list-status").textContent === "No instances match."`)
	b.ClearInputs("#filter-name")
	b.Do("search own id", consoletest.TypeIn("#filter-name", mine.ID))
	b.WaitFor("one match", `document.querySelectorAll("#instances tbody tr").length === 1 && document.querySelector("#list-status").textContent === ""`)
	b.Do("other tenant's instance", chromedp.Navigate(b.Base+"/console/#/instances/"+theirs.ID))
	b.WaitFor("not found", `(document.querySelector("main .form-error") || {}).textContent?.includes("not found")`)
	b.Screenshot("other-tenant-not-found")
	got := b.Eval(`fetch("/console/api/v1/instances/` + theirs.ID + `").then(r => String(r.status))`)
	if got != "404" {
		t.Errorf("GET another tenant's instance: %s, want 404", got)
	}
}

// TestConsoleNarrowOnlineGenerate uses a phone-sized window: the online
// mode (every selected instance has a live agent) and a generated password
// shown once with a copy button.
func TestConsoleNarrowOnlineGenerate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "api-01", running: true})
	e.consoleUser("frank", "acme", false)
	b := newBrowser(t, e, 390, 844)
	b.SignIn("frank", consolePassword)
	b.WaitList()
	b.Screenshot("list-390")
	if w := b.Eval(`String(document.documentElement.scrollWidth <= window.innerWidth + 1)`); w != "true" {
		t.Errorf("the page scrolls sideways at 390 px")
	}
	b.OpenRowReset(in.ID)
	b.Do("online", consoletest.Click("#reset-online"), consoletest.Click("#reset-generate"))
	if n := b.Eval(`String(document.querySelectorAll("#reset-next").length)`); n != "0" {
		t.Errorf("online mode still asks for a shutdown step")
	}
	b.Screenshot("dialog-390")
	b.Do("submit", consoletest.Click("#reset-submit"))
	b.WaitFor("generated password", `document.querySelector("#generated-password") !== null`)
	pw := b.Eval(`document.querySelector("#generated-password").textContent`)
	b.WaitOperationEnd()
	b.Screenshot("generated-390")
	if it := b.Eval(`document.querySelector('#progress tr[data-instance="` + in.ID + `"] .item-message').textContent`); !strings.Contains(it, "Without shutdown") {
		t.Errorf("item mode: %q", it)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Errorf("the generated password was not applied")
	}
	b.Do("saved", consoletest.Click("#hide-password"), chromedp.WaitNotPresent(chromedp.CSS("#generated")))
	b.AssertNoTrace(pw)
}

// TestConsoleSignInLimit checks the durable limit on failed sign-ins.
func TestConsoleSignInLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.consoleUser("gina", "acme", false)
	try := func(pw string) (int, string) {
		body := fmt.Sprintf(`{"user":"gina","password":%s}`, consoletest.JSString(pw))
		req, _ := http.NewRequest("POST", e.url+"/console/api/sign-in", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", e.url)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb apiv1.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb.Error.Code
	}
	if s, _ := try(consolePassword); s != http.StatusOK {
		t.Fatalf("good sign-in: %d", s)
	}
	for i := range core.PairFailureLimit {
		if s, code := try("wrong-" + fmt.Sprint(i)); s != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i, s, code)
		}
	}
	if s, code := try(consolePassword); s != http.StatusTooManyRequests || code != core.CodeSignInLocked {
		t.Fatalf("after %d failures the right password gave %d %s, want 429 %s", core.PairFailureLimit, s, code, core.CodeSignInLocked)
	}
	// Without the Origin of this server, sign-in is refused outright.
	req, _ := http.NewRequest("POST", e.url+"/console/api/sign-in", strings.NewReader(`{}`))
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %d, want 403", resp.StatusCode)
	}
}

// TestConsoleTenThousandInstances pages and searches a tenant of 10,000
// instances: each page is one keyset query, however deep.
func TestConsoleTenThousandInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	svc := e.srv.Service()
	if err := svc.EnsureTenant(ctx, "bulk"); err != nil {
		t.Fatal(err)
	}
	// One transaction straight into the store: registering them one by one
	// through the service would cost seconds and test nothing more here.
	st := e.srv.Store()
	err := st.InTx(ctx, func(tx *sql.Tx) error {
		for i := range 10000 {
			addr := fmt.Sprintf("bulk-%05d", i)
			in := apiv1.Instance{ID: core.NewID("ins", 10), Tenant: "bulk", Name: addr, OSType: "linux", AdminUser: "root",
				State: apiv1.StateStopped, Power: apiv1.DriverLink{Driver: "sim", Address: addr}, Guest: apiv1.DriverLink{Driver: "sim", Address: addr}}
			if err := st.CreateInstance(ctx, tx, &in); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.consoleUser("hank", "bulk", false)
	b := newBrowser(t, e, 1280, 800)
	t0 := time.Now()
	b.SignIn("hank", consolePassword)
	b.WaitList()
	t.Logf("signed in and listed in %v", time.Since(t0))
	b.Do("100 a page", chromedp.SetValue(chromedp.CSS("#page-size"), "100"))
	b.Eval(`(() => { document.querySelector("#page-size").dispatchEvent(new Event("change")); return ""; })()`)
	b.WaitFor("100 rows", `document.querySelectorAll("#instances tbody tr").length === 100`)
	for page := 2; page <= 5; page++ {
		t0 := time.Now()
		first := b.Eval(`document.querySelector("#instances tbody tr").dataset.id`)
		b.Do("next page", consoletest.Click("#page-next"))
		b.WaitFor("page changed", `document.querySelector("#instances tbody tr").dataset.id !== `+consoletest.JSString(first))
		// A time, not a limit: a loaded machine is slow, and the speed of
		// paging is the benchmarks' business.
		t.Logf("page %d in %v", page, time.Since(t0))
	}
	if got := b.Eval(`document.querySelector("#instances tbody tr .col-name").textContent`); got != "bulk-00400" {
		t.Errorf("page 5 starts at %q, want bulk-00400", got)
	}
	t0 = time.Now()
	b.Do("search", consoletest.TypeIn("#filter-name", "bulk-0987"))
	b.WaitFor("search results", `document.querySelectorAll("#instances tbody tr").length === 10`)
	t.Logf("search answered in %v", time.Since(t0))
	b.Screenshot("search")
}

// TestConsoleAdminCreatesUser: an admin creates a tenant's user in the
// Users page; the user must choose a password at the first sign-in and
// then sees that tenant only.
func TestConsoleAdminCreatesUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "web-01", tenant: "acme"})
	e.addMachine(machineOpts{name: "web-02", tenant: "globex"})
	e.consoleUser("root-admin", core.AdminTenant, true)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("root-admin", consolePassword)
	b.WaitList()
	b.Do("users page", consoletest.Click("#nav-users"), consoletest.Visible("#user-form"))
	const initial = "Welcome-aboard-2026"
	b.Do("create", consoletest.TypeIn("#user-name", "ivy"), consoletest.TypeIn("#user-tenant", "acme"), consoletest.TypeIn("#user-password", initial), consoletest.Click("#user-submit"))
	b.WaitFor("created", `document.querySelector('#users tr[data-user="ivy"]') !== null`)
	b.Screenshot("users")
	b.Do("sign out", consoletest.Click("#sign-out"), consoletest.Visible("#signin-user"))
	b.Do("sign in as ivy", consoletest.TypeIn("#signin-user", "ivy"), consoletest.TypeIn("#signin-password", initial), consoletest.Click("#signin-submit"), consoletest.Visible("#cp-new"))
	const mine = "Own-secret-pass-77"
	b.Do("change", consoletest.TypeIn("#cp-current", initial), consoletest.TypeIn("#cp-new", mine), consoletest.TypeIn("#cp-confirm", mine), consoletest.Click("#cp-submit"))
	b.WaitList()
	if ids := b.Eval(`[...document.querySelectorAll("#instances tbody tr")].map(tr => tr.dataset.id).join(",")`); ids != in.ID {
		t.Errorf("ivy sees %q, want only %s", ids, in.ID)
	}
	if b.Eval(`String(document.querySelector("#nav-users").hidden)`) != "true" {
		t.Errorf("a tenant user is offered the Users page")
	}
}

// TestConsoleUnknownUser: a custom user name that does not exist on the
// machine fails that instance, with the reason in words.
func TestConsoleUnknownUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "db-01"})
	e.consoleUser("judy", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("judy", consolePassword)
	b.WaitList()

	// The keyboard alone opens the row menu, the dialog, and closes it,
	// with the focus back where it was.
	more := consoletest.Row(in.ID) + " button.more"
	b.Do("focus More", chromedp.Focus(chromedp.CSS(more)), chromedp.KeyEvent("\r"))
	b.WaitFor("menu focused", `document.activeElement.classList.contains("menu-power")`)
	b.Do("down to Password/key", chromedp.KeyEvent(kb.ArrowDown))
	b.WaitFor("Password/key focused", `document.activeElement.classList.contains("menu-password")`)
	b.Do("open submenu", chromedp.KeyEvent("\r"))
	b.WaitFor("submenu focused", `document.activeElement.classList.contains("menu-reset")`)
	b.Do("choose", chromedp.KeyEvent("\r"), consoletest.Visible("#reset-dialog #reset-password"))
	b.WaitFor("focus in dialog", `document.getElementById("reset-dialog").contains(document.activeElement)`)
	b.Do("escape", chromedp.KeyEvent("\x1b"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))
	b.WaitFor("focus back on More", `document.activeElement.matches(`+consoletest.JSString(more)+`)`)

	b.OpenRowReset(in.ID)
	b.Do("custom user", consoletest.Click("#reset-user-custom"))
	b.WaitFor("editable", `!document.querySelector("#reset-user").readOnly`)
	const pw = "Silver-Harbor-42"
	b.Do("type", consoletest.TypeIn("#reset-user", "nobody"), consoletest.TypeIn("#reset-password", pw), consoletest.TypeIn("#reset-confirm", pw), consoletest.Click("#reset-submit"))
	b.WaitFor("progress view", `document.querySelector("#progress") !== null`)
	b.WaitOperationEnd()
	b.Screenshot("unknown-user")
	if s := b.ItemState(in.ID); s != "failed" {
		t.Fatalf("item %s, want failed", s)
	}
	reason := b.Eval(`document.querySelector('#progress tr[data-instance="` + in.ID + `"] .item-message').textContent`)
	if !strings.Contains(reason, "user does not exist") {
		t.Errorf("reason %q does not say the user does not exist", reason)
	}
	b.AssertNoTrace(pw)
}

// ---- issue 10 item 15: what a new user met on the operation page and in
// the dialog.

func TestConsoleOperationPageCountsLiveSaysWhoAskedAndWhenItShutsDown(t *testing.T) {
	t.Parallel()
	cfg := servertest.FastEngine()
	cfg.ShutdownTimeout = 2 * time.Minute // the slow machine keeps the operation running
	e := newEnv(t, envOpts{engine: cfg})
	stopped := e.addMachine(machineOpts{name: "quick-01"})
	slow := e.addMachine(machineOpts{name: "slow-01", running: true, shutdown: 90 * time.Second})
	var k apiv1.KeyCreated
	e.mustDo(e.admin, "POST", "/v1/keys", apiv1.KeyCreate{Name: "nightly-rotation", Tenant: "acme"}, http.StatusCreated, &k)
	e.consoleUser("erin", "acme", false)
	var op apiv1.Operation
	e.mustDo(key{k.ID, k.Secret}, "POST", "/v1/password-resets", apiv1.PasswordReset{InstanceIDs: ids(stopped, slow),
		Mode: apiv1.ModeOffline, ForceStop: true, Generate: true}, http.StatusAccepted, &op)
	b := newBrowser(t, e, 1280, 800)
	b.SignIn("erin", consolePassword)
	b.WaitList()
	b.Do("operation page", chromedp.Navigate(b.Base+"/console/#/operations/"+op.ID))
	b.WaitFor("quick item done", `(() => { const tr = document.querySelector('#progress tr[data-instance="`+stopped.ID+`"]');
		return tr && tr.dataset.state === "succeeded"; })()`)
	// The slow machine is still shutting down: the counts must already
	// show the finished item.
	b.WaitFor("live count", `document.querySelector("#op-summary").textContent.includes("1 done")`)
	b.Screenshot("live-count")
	if got := b.Eval(`document.querySelector("#op-summary").textContent`); got != "In progress: 1 done, 0 failed, 1 to go." {
		t.Errorf("summary %q", got)
	}
	details := func(id string) string {
		return b.Eval(`document.querySelector('#progress tr[data-instance="` + id + `"] .item-message').textContent`)
	}
	if got := details(slow.ID); !strings.HasPrefix(got, "With shutdown") {
		t.Errorf("the running instance's details %q, want With shutdown", got)
	}
	if got := details(stopped.ID); strings.Contains(got, "With shutdown") {
		t.Errorf("the stopped instance, never shut down, says %q", got)
	}
	if page := b.Eval(`document.querySelector("main").innerText`); !strings.Contains(page, "nightly-rotation") {
		t.Errorf("the page does not name the key that asked: %s", page)
	}
	b.Do("operations list", chromedp.Navigate(b.Base+"/console/#/operations"))
	b.WaitFor("requested by", `[...document.querySelectorAll("#operations td.col-by")].some(td => td.textContent.includes("nightly-rotation"))`)
}

func TestConsoleDialogDropsDeletedAndBusyInstancesAndSpeaksOfOne(t *testing.T) {
	t.Parallel()
	cfg := servertest.FastEngine()
	cfg.ShutdownTimeout = 2 * time.Minute
	e := newEnv(t, envOpts{engine: cfg})
	keep := e.addMachine(machineOpts{name: "keep-01"})
	busy := e.addMachine(machineOpts{name: "busy-01", running: true, shutdown: 90 * time.Second})
	doomed := e.addMachine(machineOpts{name: "doomed-01"})
	lone := e.addMachine(machineOpts{name: "lone-01", running: true})
	e.consoleUser("frank", "acme", false)
	b := newBrowser(t, e, 1280, 900)
	b.SignIn("frank", consolePassword)
	b.WaitList()
	for _, in := range []apiv1.Instance{keep, busy, doomed} {
		b.Do("select "+in.Name, consoletest.Click(consoletest.Row(in.ID)+" .row-select"))
	}
	// Meanwhile: busy-01 gets an operation, doomed-01 is deleted.
	e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "stop", InstanceIDs: ids(busy), StopMode: "soft"}, http.StatusAccepted, nil)
	e.mustDo(e.admin, "DELETE", "/v1/instances/"+doomed.ID, nil, http.StatusNoContent, nil)
	b.Do("batch reset", consoletest.Click("#batch-reset"), consoletest.Visible("#reset-dialog #reset-password"))
	b.Screenshot("dialog-busy")
	if got := b.Eval(`[...document.querySelectorAll("#reset-instances li")].map(li => li.dataset.id).sort().join(",")`); got != strings.Join(sortedCopy(ids(keep, busy)), ",") {
		t.Fatalf("step 1 lists %q: the deleted instance must be left out", got)
	}
	if msg := b.Eval(`(document.getElementById("page-error") || {}).textContent || ""`); !strings.Contains(msg, "doomed-01") {
		t.Errorf("no word of the deleted instance: %q", msg)
	}
	if b.Eval(`String(document.querySelector('#reset-instances li[data-id="`+busy.ID+`"]').dataset.busy === "true")`) != "true" {
		t.Fatalf("the busy instance is not flagged in step 1")
	}
	b.Do("leave the busy one out", consoletest.Click(`#reset-instances li[data-id="`+busy.ID+`"] .inst-drop`))
	if got := b.Eval(`document.querySelector("#reset-summary").textContent`); got != "Reset the password of instance keep-01 ("+keep.ID+")." {
		t.Errorf("summary for one instance: %q", got)
	}
	// A password that breaks rules: the rules show once, marked, not again
	// in the error.
	b.Do("bad password", consoletest.TypeIn("#reset-password", "short"), consoletest.TypeIn("#reset-confirm", "short"), consoletest.Click("#reset-submit"))
	b.WaitFor("password error", `!document.querySelector("#reset-password-error").hidden`)
	if n := b.Eval(`String(document.querySelectorAll("#reset-password-error li").length)`); n != "0" {
		t.Errorf("the error repeats %s rules the list already shows", n)
	}
	if n := b.Eval(`String(document.querySelectorAll("#reset-dialog [data-rule]").length)`); n == "0" {
		t.Fatal("no rules listed")
	}
	b.Do("cancel", consoletest.Click("#reset-cancel"))
	if b.Eval(`String(document.querySelector("#selection-info").textContent)`) == "3 selected" {
		t.Errorf("the selection still counts the deleted instance")
	}
	// One running instance: step 2 speaks of it in the singular.
	b.Do("unselect", chromedp.Navigate(b.Base+"/console/#/operations"))
	b.Do("back", chromedp.Navigate(b.Base+"/console/#/instances"))
	b.WaitList()
	b.OpenRowReset(lone.ID)
	const pw = "Green-Valley-2031"
	b.Do("type", consoletest.TypeIn("#reset-password", pw), consoletest.TypeIn("#reset-confirm", pw), consoletest.Click("#reset-next"), consoletest.Visible("#reset-step2"))
	if got := b.Eval(`document.querySelector("#reset-warning").textContent`); !strings.HasPrefix(got, "This instance is running. To reset its password it will be shut down") {
		t.Errorf("step 2 for one instance: %q", got)
	}
	b.Screenshot("step2-one")
}

// The console's Start, Stop and Reboot: from the toolbar for a selection,
// from a row's More > Instance status menu and from the instance's page.
// A forced stop is offered only with consent (and is forced: it stops a
// machine whose OS ignores shutdowns); a graceful stop of such a machine
// fails with a reason; an admin's selection over two tenants becomes one
// operation per tenant.
func TestConsolePowerActionsFromListMenuAndDetail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	web := e.addMachine(machineOpts{name: "web-01", running: true, shutdown: 100 * time.Millisecond, boot: 100 * time.Millisecond})
	db := e.addMachine(machineOpts{name: "db-01", boot: 100 * time.Millisecond})
	hung := e.addMachine(machineOpts{name: "hung-01", running: true, faults: sim.Faults{HangShutdown: true}})
	stuck := e.addMachine(machineOpts{name: "hung-02", running: true, faults: sim.Faults{HangShutdown: true}})
	other := e.addMachine(machineOpts{name: "globex-01", tenant: "globex", running: true, shutdown: 100 * time.Millisecond})
	e.consoleUser("paula", "acme", false)
	b := newBrowser(t, e, 1280, 900)
	b.SignIn("paula", consolePassword)
	b.WaitList()
	ended := func(b *browser, in apiv1.Instance, want string) {
		t.Helper()
		b.WaitFor("progress view", `document.querySelector("#progress tr[data-instance='`+in.ID+`']") !== null`)
		b.WaitOperationEnd()
		if s := b.ItemState(in.ID); s != want {
			t.Fatalf("%s: item %s, want %s", in.Name, s, want)
		}
	}
	state := func(in apiv1.Instance) string { return e.instance(e.admin, in.ID).State }
	latest := func(in apiv1.Instance) apiv1.Operation {
		t.Helper()
		var ops apiv1.OperationList
		e.mustDo(e.admin, "GET", "/v1/operations?instanceId="+in.ID, nil, http.StatusOK, &ops)
		if len(ops.Operations) == 0 {
			t.Fatalf("%s has no operation", in.Name)
		}
		return ops.Operations[0]
	}

	// Toolbar: a forced stop needs the box ticked.
	if b.Eval(`String(document.querySelector("#batch-stop").disabled)`) != "true" {
		t.Errorf("Stop is enabled with nothing selected")
	}
	b.Do("select hung-01", consoletest.Click(consoletest.Row(hung.ID)+" .row-select"))
	b.Do("Stop", consoletest.Click("#batch-stop"), consoletest.Visible("#power-dialog #power-mode-soft"))
	if b.Eval(`String(document.querySelector("#power-mode-soft").checked && document.querySelector("#power-consent-box").hidden)`) != "true" {
		t.Errorf("the dialog does not default to a graceful shutdown without the consent box")
	}
	b.Do("force", consoletest.Click("#power-mode-hard"), consoletest.Visible("#power-consent"))
	if b.Eval(`String(document.querySelector("#power-submit").disabled)`) != "true" {
		t.Errorf("a forced stop can be submitted without consent")
	}
	b.Screenshot("stop-dialog-force")
	b.Do("agree", consoletest.Click("#power-consent"))
	b.Do("submit", consoletest.Click("#power-submit"))
	ended(b, hung, "succeeded")
	if s := state(hung); s != apiv1.StateStopped {
		t.Errorf("hung-01 after a forced stop: %s, want STOPPED", s)
	}
	if op := latest(hung); op.Kind != apiv1.KindStop {
		t.Errorf("hung-01's latest operation: %+v, want a stop", op)
	}

	// Row menu: Instance status > Start.
	b.Do("instances", chromedp.Navigate(b.Base+"/console/#/instances"))
	b.WaitList()
	b.OpenRowMenu(db.ID, ".menu-power", ".menu-start")
	b.Do("Start", consoletest.Click(consoletest.Row(db.ID)+" .menu-start"), consoletest.Visible("#power-dialog #power-submit"))
	if n := b.Eval(`String(document.querySelectorAll("#power-dialog input[type=radio]").length)`); n != "0" {
		t.Errorf("Start offers %s stop modes", n)
	}
	b.Do("submit", consoletest.Click("#power-submit"))
	ended(b, db, "succeeded")
	if s := state(db); s != apiv1.StateRunning {
		t.Errorf("db-01 after the start: %s", s)
	}

	// Detail page: a graceful stop the OS ignores fails with a reason.
	b.Do("hung-02's page", chromedp.Navigate(b.Base+"/console/#/instances/"+stuck.ID), consoletest.Visible("#detail-stop"))
	b.Do("Stop", consoletest.Click("#detail-stop"), consoletest.Visible("#power-dialog #power-submit"))
	b.Do("submit", consoletest.Click("#power-submit"))
	ended(b, stuck, "failed")
	msg := b.Eval(`document.querySelector('#progress tr[data-instance="` + stuck.ID + `"] .item-message').textContent`)
	if msg == "" {
		t.Errorf("the failed stop shows no reason")
	}
	t.Logf("a graceful stop the OS ignored: %q", msg)
	b.Screenshot("stop-ignored-by-os")

	b.Do("web-01's page", chromedp.Navigate(b.Base+"/console/#/instances/"+web.ID), consoletest.Visible("#detail-reboot"))
	b.Do("Reboot", consoletest.Click("#detail-reboot"), consoletest.Visible("#power-dialog #power-mode-soft"))
	b.Do("submit", consoletest.Click("#power-submit"))
	ended(b, web, "succeeded")
	if op := latest(web); op.Kind != apiv1.KindReboot {
		t.Errorf("web-01's latest operation: %+v, want a reboot", op)
	}

	// An admin's selection over two tenants: one stop per tenant.
	e.consoleUser("root-power", core.AdminTenant, true)
	admin := newBrowser(t, e, 1280, 900)
	admin.SignIn("root-power", consolePassword)
	admin.WaitList()
	for _, in := range []apiv1.Instance{web, other} {
		admin.Do("select "+in.Name, consoletest.Click(consoletest.Row(in.ID)+" .row-select"))
	}
	admin.Do("Stop", consoletest.Click("#batch-stop"), consoletest.Visible("#power-dialog #power-submit"))
	admin.Do("submit", consoletest.Click("#power-submit"))
	admin.WaitFor("split notice", `document.querySelectorAll("#split-notice li").length === 2`)
	admin.Screenshot("stop-split-per-tenant")
	for _, in := range []apiv1.Instance{web, other} {
		op := e.wait(e.admin, latest(in).ID)
		if op.Kind != apiv1.KindStop || op.Tenant != in.Tenant || op.Status != apiv1.OperationSucceeded {
			t.Errorf("%s's latest operation: %+v, want a succeeded stop of tenant %s", in.Name, op, in.Tenant)
		}
	}
}
