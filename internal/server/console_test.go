package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/console"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver/sim"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/servertest"
)

// The console's tests drive a real Chromium (Debian's chromium package,
// installed by scripts/install-test-deps.sh) against the whole server in
// process. Each saves screenshots of its steps in its artifact directory
// (go test -artifacts), or under $FLEETPASS_SCREENSHOTS.

const consolePassword = "Very-secret-console-9"

// chromiumPath finds the browser, failing (not skipping) without one: CI
// must run these tests.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test; skipped with -short")
	}
	if p := os.Getenv("FLEETPASS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run scripts/install-test-deps.sh (Debian package chromium), or set FLEETPASS_CHROMIUM")
	return ""
}

type browser struct {
	t    *testing.T
	e    *env
	ctx  context.Context
	base string
	dir  string
	shot int
}

// newBrowser starts a fresh headless Chromium with a viewport of w×h.
func newBrowser(t *testing.T, e *env, w, h int) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(w, h),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h))); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	dir := t.ArtifactDir()
	if d := os.Getenv("FLEETPASS_SCREENSHOTS"); d != "" {
		dir = filepath.Join(d, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &browser{t: t, e: e, ctx: ctx, base: e.url, dir: dir}
}

// do runs steps, each bounded, and on failure saves a screenshot.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.screenshot("failed-" + what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript predicate.
func (b *browser) waitFor(what, js string) {
	b.t.Helper()
	b.do(what, chromedp.Action[chromedp.Void](func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(45*time.Second),
			chromedp.WithPollingInterval(50*time.Millisecond))(ctx, t)
		return chromedp.Void{}, err
	}))
}

func (b *browser) screenshot(name string) {
	b.shot++
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.shot, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// clearInputs empties fields the way a user selecting and deleting would.
func (b *browser) clearInputs(sels ...string) {
	b.t.Helper()
	for _, sel := range sels {
		b.eval(`(() => { const el = document.querySelector(` + jsString(sel) + `); el.value = "";
			el.dispatchEvent(new Event("input", {bubbles: true})); return ""; })()`)
	}
}

func click(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

func typeIn(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.CSS(sel), text)
}

func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// consoleUser makes a console user who has already chosen a password.
func (e *env) consoleUser(name, tenant string, admin bool) {
	e.t.Helper()
	ctx := context.Background()
	svc := e.srv.Service()
	if err := svc.EnsureTenant(ctx, tenant); err != nil {
		e.t.Fatal(err)
	}
	const initial = "Initial-pass-1234"
	sys := core.Principal{Kind: "system", ID: "test", Tenant: core.AdminTenant, Admin: true}
	if _, err := svc.CreateConsoleUser(ctx, sys, name, tenant, admin, []byte(initial)); err != nil {
		e.t.Fatal(err)
	}
	s, err := svc.SignIn(ctx, name, []byte(initial), "setup", "")
	if err != nil {
		e.t.Fatal(err)
	}
	p, _, err := svc.SessionPrincipal(ctx, s.Token, "setup", "")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.ChangeConsolePassword(ctx, p, s.Token, []byte(initial), []byte(consolePassword)); err != nil {
		e.t.Fatal(err)
	}
	if err := svc.SignOut(ctx, s.Token); err != nil {
		e.t.Fatal(err)
	}
}

// signIn signs in through the form and waits for the instance list.
func (b *browser) signIn(user, pw string) {
	b.t.Helper()
	b.do("open the console", chromedp.Navigate(b.base+"/console/"), visible("#signin-user"))
	b.do("sign in", typeIn("#signin-user", user), typeIn("#signin-password", pw), click("#signin-submit"))
}

func (b *browser) waitList() {
	b.t.Helper()
	b.waitFor("instance list", `document.querySelector("#instances tbody tr") !== null`)
}

func rowSel(id string) string { return `tr[data-id="` + id + `"]` }

// openRowReset opens the dialog through the row's More > Password/key >
// Reset Password.
func (b *browser) openRowReset(id string) {
	b.t.Helper()
	b.do("open More", click(rowSel(id)+" button.more"), visible(rowSel(id)+" .menu-password"))
	b.do("open Password/key", click(rowSel(id)+" .menu-password"), visible(rowSel(id)+" .menu-reset"))
	b.screenshot("row-menu")
	b.do("choose Reset Password", click(rowSel(id)+" .menu-reset"), visible("#reset-dialog #reset-password"))
}

// waitOperationEnd waits for the progress view to show the end.
func (b *browser) waitOperationEnd() {
	b.t.Helper()
	b.waitFor("operation end", `(() => { const s = document.querySelector("#op-status .badge");
		return s && s.dataset.state !== "running"; })()`)
}

func (b *browser) itemState(id string) string {
	return b.eval(`document.querySelector('#progress tr[data-instance="` + id + `"]').dataset.state`)
}

// assertNoTrace checks that pw is nowhere the browser keeps things: the
// URL, the history's entries, cookies (HttpOnly ones too), local and
// session storage, and the DOM including input values.
func (b *browser) assertNoTrace(pw string) {
	b.t.Helper()
	got := b.eval(`(() => { const pw = ` + jsString(pw) + `;
		const found = [];
		if (location.href.includes(pw)) found.push("URL");
		if (document.cookie.includes(pw)) found.push("document.cookie");
		for (const st of [localStorage, sessionStorage]) for (let i = 0; i < st.length; i++) {
			const k = st.key(i); if (k.includes(pw) || st.getItem(k).includes(pw)) found.push("storage");
		}
		if (document.documentElement.outerHTML.includes(pw)) found.push("DOM");
		for (const el of document.querySelectorAll("input, textarea")) if (el.value.includes(pw)) found.push("input " + el.id);
		if (document.body.innerText.includes(pw)) found.push("text");
		return found.join(", "); })()`)
	if got != "" {
		b.t.Errorf("the password is still in: %s", got)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/console/"}})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, c := range res.Cookies {
		if strings.Contains(c.Value, pw) || strings.Contains(c.Name, pw) {
			b.t.Errorf("the password is in cookie %s", c.Name)
		}
	}
}

func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/console/"}})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, c := range res.Cookies {
		if c.Name == console.CookieName {
			return c
		}
	}
	return nil
}

func TestConsoleSingleResetOfStoppedInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	in := e.addMachine(machineOpts{name: "web-01", boot: 200 * time.Millisecond})
	e.addMachine(machineOpts{name: "db-01", running: true})
	e.consoleUser("alice", "acme", false)
	b := newBrowser(t, e, 1280, 800)
	b.signIn("alice", consolePassword)
	b.waitList()
	b.screenshot("instance-list")
	b.openRowReset(in.ID)
	// All selected instances are stopped: Reset Password is on step one.
	if n := b.eval(`String(document.querySelectorAll("#reset-next").length)`); n != "0" {
		t.Errorf("a stopped instance's dialog shows Next")
	}
	if got := b.eval(`document.querySelector("#reset-user").value`); got != "root" {
		t.Errorf("OS default user = %q, want root", got)
	}
	// Keyboard focus stays in the dialog.
	for range 12 {
		b.do("tab", chromedp.KeyEvent("\t"))
	}
	if b.eval(`String(document.getElementById("reset-dialog").contains(document.activeElement))`) != "true" {
		t.Errorf("Tab moved the focus out of the dialog")
	}
	const pw = "Blue-Harbor-71x!"
	b.do("type the password", typeIn("#reset-password", pw))
	b.waitFor("rules met", `[...document.querySelectorAll("#reset-rules li")].every(li => li.dataset.state === "ok")`)
	b.do("confirm", typeIn("#reset-confirm", pw))
	b.screenshot("dialog-filled")
	b.do("submit", click("#reset-submit"))
	b.waitFor("progress view", `document.querySelector("#progress") !== null`)
	b.screenshot("progress")
	b.waitOperationEnd()
	b.screenshot("progress-done")
	if s := b.itemState(in.ID); s != "succeeded" {
		t.Fatalf("item state %q, want succeeded", s)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Errorf("the instance did not get the new password")
	}
	b.assertNoTrace(pw)
	// The history and the instance's page show the operation.
	b.do("operations page", chromedp.Navigate(b.base+"/console/#/operations"))
	b.waitFor("operations list", `document.querySelector("#operations tbody tr") !== null`)
	b.screenshot("operations")
	b.do("instance page", chromedp.Navigate(b.base+"/console/#/instances/"+in.ID))
	b.waitFor("instance operations", `document.querySelector("#instance-operations tbody tr") !== null`)
	b.screenshot("instance-detail")
	b.assertNoTrace(pw)
}

func TestConsoleBatchResetNeedsConsent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	r1 := e.addMachine(machineOpts{name: "app-01", running: true, shutdown: 100 * time.Millisecond})
	r2 := e.addMachine(machineOpts{name: "app-02", running: true, os: sim.Windows})
	s1 := e.addMachine(machineOpts{name: "app-03"})
	e.consoleUser("bob", "acme", false)
	b := newBrowser(t, e, 1280, 900)
	b.signIn("bob", consolePassword)
	b.waitList()
	if b.eval(`String(document.querySelector("#batch-reset").disabled)`) != "true" {
		t.Errorf("Reset Password above the list is enabled with nothing selected")
	}
	for _, in := range []apiv1.Instance{r1, r2, s1} {
		b.do("select "+in.Name, click(rowSel(in.ID)+" .row-select"))
	}
	b.screenshot("selected")
	b.do("batch reset", click("#batch-reset"), visible("#reset-dialog #reset-password"))
	// Windows among them: the strictest rule (12+ characters) applies.
	const pw = "Quiet-Meadow-2024"
	b.do("type", typeIn("#reset-password", pw), typeIn("#reset-confirm", pw))
	b.screenshot("step1")
	b.do("next", click("#reset-next"), visible("#reset-step2"))
	running := b.eval(`[...document.querySelectorAll("#reset-running li")].map(li => li.dataset.id).sort().join(",")`)
	want := []string{r1.ID, r2.ID}
	if running != strings.Join(sortedCopy(want), ",") {
		t.Errorf("step 2 lists %q, want the running %v", running, want)
	}
	if b.eval(`String(document.querySelector("#reset-submit").disabled)`) != "true" {
		t.Fatalf("Reset Password is enabled before consent")
	}
	b.screenshot("step2-no-consent")
	b.do("agree", click("#reset-consent"))
	b.waitFor("enabled", `!document.querySelector("#reset-submit").disabled`)
	b.screenshot("step2-consent")
	b.do("submit", click("#reset-submit"))
	b.waitFor("progress view", `document.querySelector("#progress") !== null`)
	b.waitOperationEnd()
	b.screenshot("done")
	for _, in := range []apiv1.Instance{r1, r2, s1} {
		if s := b.itemState(in.ID); s != "succeeded" {
			t.Errorf("%s: %s, want succeeded", in.Name, s)
		}
		if !e.checkPassword(in, in.AdminUser, pw) {
			t.Errorf("%s did not get the password", in.Name)
		}
	}
	b.assertNoTrace(pw)
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
	b.signIn("carol", consolePassword)
	b.waitList()

	// A mismatched confirmation is shown beside the field; nothing is sent.
	b.openRowReset(in.ID)
	b.do("mismatch", typeIn("#reset-password", "Green-Valley-88"), typeIn("#reset-confirm", "Green-Valley-89"), click("#reset-submit"))
	b.waitFor("mismatch error", `!document.querySelector("#reset-confirm-error").hidden`)
	if got := b.eval(`document.querySelector("#reset-confirm-error").textContent`); got != "The passwords do not match." {
		t.Errorf("confirmation error %q", got)
	}
	b.screenshot("mismatch")

	// A rule violation: too short, no digit; the rules say which.
	b.clearInputs("#reset-password", "#reset-confirm")
	b.do("short", typeIn("#reset-password", "short"), typeIn("#reset-confirm", "short"))
	b.waitFor("length rule broken", `document.querySelector('#reset-rules li[data-rule="length"]').dataset.state === "bad"`)
	b.do("submit", click("#reset-submit"))
	b.waitFor("rule error", `!document.querySelector("#reset-password-error").hidden`)
	// The error points at the rules, which are listed once, each marked.
	if got := b.eval(`document.querySelector("#reset-password-error").textContent`); !strings.Contains(got, "marked ✗ below") {
		t.Errorf("rule error %q does not point at the marked rules", got)
	}
	if got := b.eval(`document.querySelector('#reset-rules li[data-rule="length"]').textContent`); !strings.Contains(got, "characters long") {
		t.Errorf("the length rule reads %q", got)
	}
	b.screenshot("rule-violation")
	var ops apiv1.OperationList
	e.mustDo(e.admin, "GET", "/v1/operations", nil, http.StatusOK, &ops)
	if len(ops.Operations) != 0 {
		t.Errorf("%d operations were created by refused forms", len(ops.Operations))
	}
	b.do("cancel", click("#reset-cancel"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))

	// The server's own refusal of a password reaches the same place: make
	// the page's copy of the rule lax, so only the server catches it.
	b.eval(`(() => { const orig = window.fetch;
		window.fetch = async (u, init) => {
			const r = await orig(u, init);
			if (!String(u).includes("/password-policy")) return r;
			const s = await r.json();
			s.minLength = 1; s.minClasses = 0;
			return new Response(JSON.stringify(s), {status: 200, headers: {"Content-Type": "application/json"}});
		}; return ""; })()`)
	b.openRowReset(in.ID)
	b.do("lax", typeIn("#reset-password", "abc"), typeIn("#reset-confirm", "abc"), click("#reset-submit"))
	b.waitFor("server rule error", `document.querySelector("#reset-password-error").textContent.includes("server refused")`)
	if got := b.eval(`document.querySelector('#reset-rules li[data-rule="length"]').dataset.state`); got != "bad" {
		t.Errorf("the server's refusal does not mark the length rule broken: %q", got)
	}
	if got := b.eval(`document.querySelector("#reset-submit").textContent`); got != "Reset Password" {
		t.Errorf("after a refusal the button reads %q", got)
	}
	b.screenshot("server-rule-violation")
	b.do("cancel", click("#reset-cancel"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))

	// A refusal of the server (the instance is busy) is shown beside the
	// instance, in words.
	op := e.reset(e.admin, apiv1.PasswordReset{InstanceIDs: []string{busy.ID}, Password: "Other-pass-1234"})
	b.openRowReset(busy.ID)
	b.do("type", typeIn("#reset-password", "Green-Valley-88"), typeIn("#reset-confirm", "Green-Valley-88"))
	b.do("consent", click("#reset-next"), visible("#reset-consent"), click("#reset-consent"), click("#reset-submit"))
	b.waitFor("busy error", `document.querySelector("#reset-instances .inst-error") !== null`)
	if got := b.eval(`document.querySelector("#reset-instances .inst-error").textContent`); !strings.Contains(got, "Another operation") {
		t.Errorf("busy error %q", got)
	}
	b.screenshot("busy")
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
	b.signIn("dave", consolePassword)
	b.waitList()
	b.do("select", click(rowSel(good.ID)+" .row-select"), click(rowSel(dead.ID)+" .row-select"))
	b.do("batch reset", click("#batch-reset"), visible("#reset-dialog #reset-password"))
	const pw = "Amber-Lantern-55"
	b.do("type", typeIn("#reset-password", pw), typeIn("#reset-confirm", pw), click("#reset-submit"))
	b.waitFor("progress view", `document.querySelector("#progress") !== null`)
	b.screenshot("progress")
	b.waitOperationEnd()
	b.screenshot("progress-one-failed")
	if s := b.itemState(good.ID); s != "succeeded" {
		t.Errorf("healthy instance: %s", s)
	}
	if s := b.itemState(dead.ID); s != "failed" {
		t.Fatalf("instance with a dead agent: %s, want failed", s)
	}
	reason := b.eval(`document.querySelector('#progress tr[data-instance="` + dead.ID + `"] .item-message').textContent`)
	if strings.TrimSpace(reason) == "" {
		t.Errorf("the failed item shows no reason")
	}
	t.Logf("failure reason shown: %s", reason)
	if got := b.eval(`document.querySelector("#op-status .badge").dataset.state`); got != apiv1.OperationPartial {
		t.Errorf("operation status %q, want partial", got)
	}
	b.assertNoTrace(pw)
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
	b.do("open", chromedp.Navigate(b.base+"/console/"), visible("#signin-user"))
	b.screenshot("sign-in")
	b.do("wrong password", typeIn("#signin-user", creds.User), typeIn("#signin-password", "not-the-password"), click("#signin-submit"))
	b.waitFor("error", `!document.querySelector("#signin-error").hidden`)
	b.screenshot("sign-in-failed")
	b.clearInputs("#signin-user")
	b.do("sign in", typeIn("#signin-user", creds.User), typeIn("#signin-password", creds.Password), click("#signin-submit"))
	// First sign-in: the initial password must be changed.
	b.do("change form", visible("#cp-new"))
	b.screenshot("change-password")
	const next = "Fresh-start-pass-2026"
	b.do("change", typeIn("#cp-current", creds.Password), typeIn("#cp-new", next), typeIn("#cp-confirm", next), click("#cp-submit"))
	b.waitList()
	b.screenshot("signed-in")
	ck := b.sessionCookie()
	if ck == nil || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict", ck)
	}

	// CSRF: the page's own fetch without the token is refused; so is a
	// request with the token from another origin.
	got := b.eval(`fetch("/console/api/v1/password-resets", {method: "POST", headers: {"Content-Type": "application/json"},
		body: JSON.stringify({instanceIds: ["ins-aaaaaaaa"], password: "x"})}).then(async r => r.status + " " + (await r.json()).error.code)`)
	if got != "403 CSRF_REFUSED" {
		t.Errorf("POST without the CSRF token: %s", got)
	}
	csrf := b.eval(`fetch("/console/api/session").then(r => r.json()).then(s => s.csrfToken)`)
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

	b.do("sign out", click("#sign-out"), visible("#signin-user"))
	b.screenshot("signed-out")
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
	b.signIn("erin", consolePassword)
	b.waitList()
	ids := b.eval(`[...document.querySelectorAll("#instances tbody tr")].map(tr => tr.dataset.id).join(",")`)
	if ids != mine.ID {
		t.Errorf("the list shows %q, want only %s", ids, mine.ID)
	}
	b.screenshot("own-instances")
	// Badges follow the events stream, without a reload.
	alive := true
	if err := e.srv.Service().SetInstanceObserved(context.Background(), mine.ID, apiv1.StateRunning, &alive); err != nil {
		t.Fatal(err)
	}
	b.waitFor("live badge", `document.querySelector('`+rowSel(mine.ID)+` .col-state .badge').dataset.state === "RUNNING" &&
		document.querySelector('`+rowSel(mine.ID)+` .col-agent span').dataset.alive === "true"`)
	// Searching by another tenant's instance id finds nothing.
	b.do("search by id", typeIn("#filter-name", theirs.ID))
	b.waitFor("no match", `document.querySelector("#list-status").textContent === "No instances match."`)
	b.clearInputs("#filter-name")
	b.do("search own id", typeIn("#filter-name", mine.ID))
	b.waitFor("one match", `document.querySelectorAll("#instances tbody tr").length === 1 && document.querySelector("#list-status").textContent === ""`)
	b.do("other tenant's instance", chromedp.Navigate(b.base+"/console/#/instances/"+theirs.ID))
	b.waitFor("not found", `(document.querySelector("main .form-error") || {}).textContent?.includes("not found")`)
	b.screenshot("other-tenant-not-found")
	got := b.eval(`fetch("/console/api/v1/instances/` + theirs.ID + `").then(r => String(r.status))`)
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
	b.signIn("frank", consolePassword)
	b.waitList()
	b.screenshot("list-390")
	if w := b.eval(`String(document.documentElement.scrollWidth <= window.innerWidth + 1)`); w != "true" {
		t.Errorf("the page scrolls sideways at 390 px")
	}
	b.openRowReset(in.ID)
	b.do("online", click("#reset-online"), click("#reset-generate"))
	if n := b.eval(`String(document.querySelectorAll("#reset-next").length)`); n != "0" {
		t.Errorf("online mode still asks for a shutdown step")
	}
	b.screenshot("dialog-390")
	b.do("submit", click("#reset-submit"))
	b.waitFor("generated password", `document.querySelector("#generated-password") !== null`)
	pw := b.eval(`document.querySelector("#generated-password").textContent`)
	b.waitOperationEnd()
	b.screenshot("generated-390")
	if it := b.eval(`document.querySelector('#progress tr[data-instance="` + in.ID + `"] .item-message').textContent`); !strings.Contains(it, "Without shutdown") {
		t.Errorf("item mode: %q", it)
	}
	if !e.checkPassword(in, "root", pw) {
		t.Errorf("the generated password was not applied")
	}
	b.do("saved", click("#hide-password"), chromedp.WaitNotPresent(chromedp.CSS("#generated")))
	b.assertNoTrace(pw)
}

// TestConsoleSignInLimit checks the durable limit on failed sign-ins.
func TestConsoleSignInLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.consoleUser("gina", "acme", false)
	try := func(pw string) (int, string) {
		body := fmt.Sprintf(`{"user":"gina","password":%s}`, jsString(pw))
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
	b.signIn("hank", consolePassword)
	b.waitList()
	t.Logf("signed in and listed in %v", time.Since(t0))
	b.do("100 a page", chromedp.SetValue(chromedp.CSS("#page-size"), "100"))
	b.eval(`(() => { document.querySelector("#page-size").dispatchEvent(new Event("change")); return ""; })()`)
	b.waitFor("100 rows", `document.querySelectorAll("#instances tbody tr").length === 100`)
	for page := 2; page <= 5; page++ {
		t0 := time.Now()
		first := b.eval(`document.querySelector("#instances tbody tr").dataset.id`)
		b.do("next page", click("#page-next"))
		b.waitFor("page changed", `document.querySelector("#instances tbody tr").dataset.id !== `+jsString(first))
		// A time, not a limit: a loaded machine is slow, and the speed of
		// paging is the benchmarks' business.
		t.Logf("page %d in %v", page, time.Since(t0))
	}
	if got := b.eval(`document.querySelector("#instances tbody tr .col-name").textContent`); got != "bulk-00400" {
		t.Errorf("page 5 starts at %q, want bulk-00400", got)
	}
	t0 = time.Now()
	b.do("search", typeIn("#filter-name", "bulk-0987"))
	b.waitFor("search results", `document.querySelectorAll("#instances tbody tr").length === 10`)
	t.Logf("search answered in %v", time.Since(t0))
	b.screenshot("search")
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
	b.signIn("root-admin", consolePassword)
	b.waitList()
	b.do("users page", click("#nav-users"), visible("#user-form"))
	const initial = "Welcome-aboard-2026"
	b.do("create", typeIn("#user-name", "ivy"), typeIn("#user-tenant", "acme"), typeIn("#user-password", initial), click("#user-submit"))
	b.waitFor("created", `document.querySelector('#users tr[data-user="ivy"]') !== null`)
	b.screenshot("users")
	b.do("sign out", click("#sign-out"), visible("#signin-user"))
	b.do("sign in as ivy", typeIn("#signin-user", "ivy"), typeIn("#signin-password", initial), click("#signin-submit"), visible("#cp-new"))
	const mine = "Own-secret-pass-77"
	b.do("change", typeIn("#cp-current", initial), typeIn("#cp-new", mine), typeIn("#cp-confirm", mine), click("#cp-submit"))
	b.waitList()
	if ids := b.eval(`[...document.querySelectorAll("#instances tbody tr")].map(tr => tr.dataset.id).join(",")`); ids != in.ID {
		t.Errorf("ivy sees %q, want only %s", ids, in.ID)
	}
	if b.eval(`String(document.querySelector("#nav-users").hidden)`) != "true" {
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
	b.signIn("judy", consolePassword)
	b.waitList()

	// The keyboard alone opens the row menu, the dialog, and closes it,
	// with the focus back where it was.
	more := rowSel(in.ID) + " button.more"
	b.do("focus More", chromedp.Focus(chromedp.CSS(more)), chromedp.KeyEvent("\r"))
	b.waitFor("menu focused", `document.activeElement.classList.contains("menu-password")`)
	b.do("open submenu", chromedp.KeyEvent("\r"))
	b.waitFor("submenu focused", `document.activeElement.classList.contains("menu-reset")`)
	b.do("choose", chromedp.KeyEvent("\r"), visible("#reset-dialog #reset-password"))
	b.waitFor("focus in dialog", `document.getElementById("reset-dialog").contains(document.activeElement)`)
	b.do("escape", chromedp.KeyEvent("\x1b"), chromedp.WaitNotPresent(chromedp.CSS("#reset-dialog")))
	b.waitFor("focus back on More", `document.activeElement.matches(`+jsString(more)+`)`)

	b.openRowReset(in.ID)
	b.do("custom user", click("#reset-user-custom"))
	b.waitFor("editable", `!document.querySelector("#reset-user").readOnly`)
	const pw = "Silver-Harbor-42"
	b.do("type", typeIn("#reset-user", "nobody"), typeIn("#reset-password", pw), typeIn("#reset-confirm", pw), click("#reset-submit"))
	b.waitFor("progress view", `document.querySelector("#progress") !== null`)
	b.waitOperationEnd()
	b.screenshot("unknown-user")
	if s := b.itemState(in.ID); s != "failed" {
		t.Fatalf("item %s, want failed", s)
	}
	reason := b.eval(`document.querySelector('#progress tr[data-instance="` + in.ID + `"] .item-message').textContent`)
	if !strings.Contains(reason, "user does not exist") {
		t.Errorf("reason %q does not say the user does not exist", reason)
	}
	b.assertNoTrace(pw)
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
	b.signIn("erin", consolePassword)
	b.waitList()
	b.do("operation page", chromedp.Navigate(b.base+"/console/#/operations/"+op.ID))
	b.waitFor("quick item done", `(() => { const tr = document.querySelector('#progress tr[data-instance="`+stopped.ID+`"]');
		return tr && tr.dataset.state === "succeeded"; })()`)
	// The slow machine is still shutting down: the counts must already
	// show the finished item.
	b.waitFor("live count", `document.querySelector("#op-summary").textContent.includes("1 done")`)
	b.screenshot("live-count")
	if got := b.eval(`document.querySelector("#op-summary").textContent`); got != "In progress: 1 done, 0 failed, 1 to go." {
		t.Errorf("summary %q", got)
	}
	details := func(id string) string {
		return b.eval(`document.querySelector('#progress tr[data-instance="` + id + `"] .item-message').textContent`)
	}
	if got := details(slow.ID); !strings.HasPrefix(got, "With shutdown") {
		t.Errorf("the running instance's details %q, want With shutdown", got)
	}
	if got := details(stopped.ID); strings.Contains(got, "With shutdown") {
		t.Errorf("the stopped instance, never shut down, says %q", got)
	}
	if page := b.eval(`document.querySelector("main").innerText`); !strings.Contains(page, "nightly-rotation") {
		t.Errorf("the page does not name the key that asked: %s", page)
	}
	b.do("operations list", chromedp.Navigate(b.base+"/console/#/operations"))
	b.waitFor("requested by", `[...document.querySelectorAll("#operations td.col-by")].some(td => td.textContent.includes("nightly-rotation"))`)
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
	b.signIn("frank", consolePassword)
	b.waitList()
	for _, in := range []apiv1.Instance{keep, busy, doomed} {
		b.do("select "+in.Name, click(rowSel(in.ID)+" .row-select"))
	}
	// Meanwhile: busy-01 gets an operation, doomed-01 is deleted.
	e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: "stop", InstanceIDs: ids(busy), StopMode: "soft"}, http.StatusAccepted, nil)
	e.mustDo(e.admin, "DELETE", "/v1/instances/"+doomed.ID, nil, http.StatusNoContent, nil)
	b.do("batch reset", click("#batch-reset"), visible("#reset-dialog #reset-password"))
	b.screenshot("dialog-busy")
	if got := b.eval(`[...document.querySelectorAll("#reset-instances li")].map(li => li.dataset.id).sort().join(",")`); got != strings.Join(sortedCopy(ids(keep, busy)), ",") {
		t.Fatalf("step 1 lists %q: the deleted instance must be left out", got)
	}
	if msg := b.eval(`(document.getElementById("page-error") || {}).textContent || ""`); !strings.Contains(msg, "doomed-01") {
		t.Errorf("no word of the deleted instance: %q", msg)
	}
	if b.eval(`String(document.querySelector('#reset-instances li[data-id="`+busy.ID+`"]').dataset.busy === "true")`) != "true" {
		t.Fatalf("the busy instance is not flagged in step 1")
	}
	b.do("leave the busy one out", click(`#reset-instances li[data-id="`+busy.ID+`"] .inst-drop`))
	if got := b.eval(`document.querySelector("#reset-summary").textContent`); got != "Reset the password of instance keep-01 ("+keep.ID+")." {
		t.Errorf("summary for one instance: %q", got)
	}
	// A password that breaks rules: the rules show once, marked, not again
	// in the error.
	b.do("bad password", typeIn("#reset-password", "short"), typeIn("#reset-confirm", "short"), click("#reset-submit"))
	b.waitFor("password error", `!document.querySelector("#reset-password-error").hidden`)
	if n := b.eval(`String(document.querySelectorAll("#reset-password-error li").length)`); n != "0" {
		t.Errorf("the error repeats %s rules the list already shows", n)
	}
	if n := b.eval(`String(document.querySelectorAll("#reset-dialog [data-rule]").length)`); n == "0" {
		t.Fatal("no rules listed")
	}
	b.do("cancel", click("#reset-cancel"))
	if b.eval(`String(document.querySelector("#selection-info").textContent)`) == "3 selected" {
		t.Errorf("the selection still counts the deleted instance")
	}
	// One running instance: step 2 speaks of it in the singular.
	b.do("unselect", chromedp.Navigate(b.base+"/console/#/operations"))
	b.do("back", chromedp.Navigate(b.base+"/console/#/instances"))
	b.waitList()
	b.openRowReset(lone.ID)
	const pw = "Green-Valley-2031"
	b.do("type", typeIn("#reset-password", pw), typeIn("#reset-confirm", pw), click("#reset-next"), visible("#reset-step2"))
	if got := b.eval(`document.querySelector("#reset-warning").textContent`); !strings.HasPrefix(got, "This instance is running. To reset its password it will be shut down") {
		t.Errorf("step 2 for one instance: %q", got)
	}
	b.screenshot("step2-one")
}
