// Package consoletest drives the web console in a real headless Chromium
// (Debian's chromium package, installed by scripts/install-test-deps.sh)
// for end-to-end tests: the browser, the sign-in, the console's menus and
// the progress view, and a check that a password left no trace in the
// page. Each browser saves screenshots of failed steps, and of the steps a
// test names, in the test's artifact directory (go test -artifacts) or
// under $FLEETPASS_SCREENSHOTS.
package consoletest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Password is the password ConsoleUser gives the users it makes.
const Password = "Very-secret-console-9"

// ChromiumPath finds the browser, failing (not skipping) without one: CI
// must run these tests. With -short the test is skipped.
func ChromiumPath(t testing.TB) string {
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

// Browser is one headless Chromium with a fresh profile, pointed at a
// fleetpass server.
type Browser struct {
	t testing.TB
	// Base is the server's base URL; the console is at Base+"/console/".
	Base string
	ctx  context.Context
	dir  string
	shot int
}

// New starts a headless Chromium with a viewport of w×h for the server
// at base. It ends with the test.
func New(t testing.TB, base string, w, h int) *Browser {
	t.Helper()
	path := ChromiumPath(t)
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
	return &Browser{t: t, Base: strings.TrimSuffix(base, "/"), ctx: ctx, dir: dir}
}

// Context is the browser's context, for chromedp calls of a test's own.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs steps, each bounded, and on failure saves a screenshot and
// fails the test.
func (b *Browser) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.Screenshot("failed-" + what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Eval evaluates a JavaScript expression whose value is a string (a
// promise of one is awaited).
func (b *Browser) Eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// WaitFor polls a JavaScript predicate for up to 45 seconds: long enough
// for a busy 2-core machine, short enough to fail before the test binary's
// own deadline.
func (b *Browser) WaitFor(what, js string) {
	b.t.Helper()
	b.Do(what, chromedp.Action[chromedp.Void](func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(45*time.Second),
			chromedp.WithPollingInterval(50*time.Millisecond))(ctx, t)
		return chromedp.Void{}, err
	}))
}

// Screenshot saves the whole page as the next numbered PNG.
func (b *Browser) Screenshot(name string) {
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

// ClearInputs empties fields the way a user selecting and deleting would.
func (b *Browser) ClearInputs(sels ...string) {
	b.t.Helper()
	for _, sel := range sels {
		b.Eval(`(() => { const el = document.querySelector(` + JSString(sel) + `); el.value = "";
			el.dispatchEvent(new Event("input", {bubbles: true})); return ""; })()`)
	}
}

// Click clicks the first element sel matches.
func Click(sel string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(sel)) }

// TypeIn types text into the element sel matches.
func TypeIn(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.CSS(sel), text)
}

// Visible waits until the element sel matches is visible.
func Visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

// JSString quotes s as a JavaScript string literal.
func JSString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Row selects the instance list's row of an instance.
func Row(id string) string { return `tr[data-id="` + id + `"]` }

// SignIn opens the console and signs in through the form.
func (b *Browser) SignIn(user, pw string) {
	b.t.Helper()
	b.Do("open the console", chromedp.Navigate(b.Base+"/console/"), Visible("#signin-user"))
	b.Do("sign in", TypeIn("#signin-user", user), TypeIn("#signin-password", pw), Click("#signin-submit"))
}

// WaitList waits for the instance list to show a row.
func (b *Browser) WaitList() {
	b.t.Helper()
	b.WaitFor("instance list", `document.querySelector("#instances tbody tr") !== null`)
}

// OpenRowMenu opens an instance row's More menu, then its submenu
// (".menu-password" for Password/key, ".menu-power" for Instance status),
// and waits for item (a selector inside the row) to show.
func (b *Browser) OpenRowMenu(id, submenu, item string) {
	b.t.Helper()
	b.Do("open More", Click(Row(id)+" button.more"), Visible(Row(id)+" "+submenu))
	b.Do("open the submenu", Click(Row(id)+" "+submenu), Visible(Row(id)+" "+item))
	b.Screenshot("row-menu")
}

// OpenRowReset opens the Reset Password dialog through the row's More >
// Password/key > Reset Password.
func (b *Browser) OpenRowReset(id string) {
	b.t.Helper()
	b.OpenRowMenu(id, ".menu-password", ".menu-reset")
	b.Do("choose Reset Password", Click(Row(id)+" .menu-reset"), Visible("#reset-dialog #reset-password"))
}

// WaitOperationEnd waits for the progress view to show the operation's
// end.
func (b *Browser) WaitOperationEnd() {
	b.t.Helper()
	b.WaitFor("operation end", `(() => { const s = document.querySelector("#op-status .badge");
		return s && s.dataset.state !== "running"; })()`)
}

// ItemState is the state the progress view shows for an instance's item.
func (b *Browser) ItemState(id string) string {
	return b.Eval(`document.querySelector('#progress tr[data-instance="` + id + `"]').dataset.state`)
}

// AssertNoTrace checks that pw is nowhere the browser keeps things: the
// URL, cookies (HttpOnly ones too), local and session storage, and the
// DOM including input values.
func (b *Browser) AssertNoTrace(pw string) {
	b.t.Helper()
	got := b.Eval(`(() => { const pw = ` + JSString(pw) + `;
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
	for _, c := range b.cookies() {
		if strings.Contains(c.Value, pw) || strings.Contains(c.Name, pw) {
			b.t.Errorf("the password is in cookie %s", c.Name)
		}
	}
}

// Cookie is the console's cookie of that name, or nil.
func (b *Browser) Cookie(name string) *network.Cookie {
	b.t.Helper()
	for _, c := range b.cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (b *Browser) cookies() []*network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.Base + "/console/"}})
	if err != nil {
		b.t.Fatal(err)
	}
	return res.Cookies
}
