// Package console is fleetpass's web console: the sign-in, sessions and
// CSRF checks, and the static files of a single-page application written
// in plain HTML, CSS and JavaScript modules (no build step; embedded in the
// binary). The application calls the native API (/v1) mounted under
// /console/api/v1 with the session cookie instead of an API key, so every
// rule stays in the core service and the console holds none of its own.
package console

import (
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/password"
)

//go:embed web
var webFS embed.FS

// CookieName is the session cookie.
const CookieName = "fleetpass_console"

// CSRFHeader carries the session's anti-forgery token on every request
// that changes something.
const CSRFHeader = "X-CSRF-Token"

// Prefix is where the console is mounted.
const Prefix = "/console"

// Console serves the web console.
type Console struct {
	svc *core.Service
	log *slog.Logger
}

// New makes the console.
func New(svc *core.Service, log *slog.Logger) *Console {
	return &Console{svc: svc, log: log}
}

// Register adds the console's routes to mux; api is the native API, made
// with Authenticate as its authenticator, which the console mounts under
// /console/api.
func (c *Console) Register(mux *http.ServeMux, api http.Handler) {
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(Prefix+"/", http.FileServerFS(static))
	// No method in the pattern: a GET-only pattern would conflict with the
	// API's any-method patterns below it.
	mux.Handle(Prefix+"/", c.headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// Files change with the binary; revalidating each time is cheap
		// and avoids a stale script beside a new API.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})))
	mux.Handle("GET "+Prefix, http.RedirectHandler(Prefix+"/", http.StatusMovedPermanently))

	mux.Handle("GET "+Prefix+"/api/session", c.headers(http.HandlerFunc(c.session)))
	mux.Handle("POST "+Prefix+"/api/sign-in", c.headers(http.HandlerFunc(c.signIn)))
	mux.Handle("POST "+Prefix+"/api/sign-out", c.headers(c.protect(http.HandlerFunc(c.signOut))))
	mux.Handle("POST "+Prefix+"/api/password", c.headers(c.protect(http.HandlerFunc(c.changePassword))))
	mux.Handle("GET "+Prefix+"/api/password-policy", c.headers(http.HandlerFunc(c.passwordPolicy)))
	mux.Handle("GET "+Prefix+"/api/reset-plan", c.headers(http.HandlerFunc(c.resetPlan)))
	mux.Handle("GET "+Prefix+"/api/users", c.headers(http.HandlerFunc(c.listUsers)))
	mux.Handle("POST "+Prefix+"/api/users", c.headers(c.protect(http.HandlerFunc(c.createUser))))
	mux.Handle(Prefix+"/api/v1/", c.headers(c.protect(http.StripPrefix(Prefix+"/api", api))))
	mux.Handle(Prefix+"/api/", c.headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nativeapi.WriteError(w, r, http.StatusNotFound, "NOT_FOUND", "no such route: "+r.Method+" "+r.URL.Path, nil)
	})))
}

// headers sets the security headers of every console answer.
func (c *Console) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		if strings.HasPrefix(r.URL.Path, Prefix+"/api/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// safeMethod reports whether m changes nothing.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin checks that a state-changing request comes from a page of
// this server: its Origin (sent by every current browser on POST) names
// this host, or, failing that, the browser says the fetch is same-origin.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// protect refuses state-changing requests that do not come from this
// server's pages or lack the session's anti-forgery token.
func (c *Console) protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if safeMethod(r.Method) {
			h.ServeHTTP(w, r)
			return
		}
		if !sameOrigin(r) {
			nativeapi.WriteError(w, r, http.StatusForbidden, "CSRF_REFUSED", "this request did not come from the console's own pages", nil)
			return
		}
		ck, err := r.Cookie(CookieName)
		if err != nil || !c.svc.CheckCSRF(ck.Value, r.Header.Get(CSRFHeader)) {
			nativeapi.WriteError(w, r, http.StatusForbidden, "CSRF_REFUSED",
				"the request lacks the console's anti-forgery token; reload the page and try again", nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Authenticate is the native API's authenticator for console requests: a
// request with the session cookie acts as its user. A user who must still
// change the initial password may do nothing else.
func (c *Console) Authenticate(r *http.Request) (core.Principal, bool, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return core.Principal{}, false, nil
	}
	p, sess, err := c.svc.SessionPrincipal(r.Context(), ck.Value, httpx.ClientAddr(r), httpx.RequestID(r.Context()))
	if err != nil {
		if core.CodeOf(err) == core.CodeSessionExpired {
			return core.Principal{}, true, &core.Error{Code: core.CodeUnauthenticated, Message: "your session has ended; sign in again"}
		}
		return core.Principal{}, true, err
	}
	if err := sess.Usable(); err != nil {
		return core.Principal{}, true, err
	}
	return p, true, nil
}

// sessionInfo is the console's view of the signed-in user. The CSRF token
// lives only in the page's memory.
type sessionInfo struct {
	User       string `json:"user"`
	Tenant     string `json:"tenant"`
	Admin      bool   `json:"admin"`
	MustChange bool   `json:"mustChangePassword"`
	CSRFToken  string `json:"csrfToken"`
}

func (c *Console) info(s core.Session) sessionInfo {
	return sessionInfo{User: s.User, Tenant: s.Tenant, Admin: s.Admin, MustChange: s.MustChange, CSRFToken: c.svc.CSRFToken(s.Token)}
}

// current resolves the request's session.
func (c *Console) current(r *http.Request) (core.Principal, core.Session, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return core.Principal{}, core.Session{}, &core.Error{Code: core.CodeUnauthenticated, Message: "sign in first"}
	}
	p, s, err := c.svc.SessionPrincipal(r.Context(), ck.Value, httpx.ClientAddr(r), httpx.RequestID(r.Context()))
	if core.CodeOf(err) == core.CodeSessionExpired {
		err = &core.Error{Code: core.CodeUnauthenticated, Message: "your session has ended; sign in again"}
	}
	return p, s, err
}

func (c *Console) session(w http.ResponseWriter, r *http.Request) {
	_, s, err := c.current(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

type signInRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	// A forged sign-in would put the victim in the attacker's account.
	if !sameOrigin(r) {
		nativeapi.WriteError(w, r, http.StatusForbidden, "CSRF_REFUSED", "this request did not come from the console's own pages", nil)
		return
	}
	var req signInRequest
	if !decode(w, r, &req) {
		return
	}
	s, err := c.svc.SignIn(r.Context(), strings.TrimSpace(req.User), []byte(req.Password), httpx.ClientAddr(r), httpx.RequestID(r.Context()))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.setCookie(w, r, s.Token, int(core.SessionMax.Seconds()))
	httpx.WriteJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		if err := c.svc.SignOut(r.Context(), ck.Value); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	c.setCookie(w, r, "", -1)
	w.WriteHeader(http.StatusNoContent)
}

type passwordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

func (c *Console) changePassword(w http.ResponseWriter, r *http.Request) {
	p, s, err := c.current(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var req passwordChange
	if !decode(w, r, &req) {
		return
	}
	if err := c.svc.ChangeConsolePassword(r.Context(), p, s.Token, []byte(req.Current), []byte(req.New)); err != nil {
		c.fail(w, r, err)
		return
	}
	s.MustChange = false
	httpx.WriteJSON(w, http.StatusOK, c.info(s))
}

// passwordPolicy answers the rule the console mirrors as the user types:
// ?os=linux,windows gives the strictest rule for those OS types (the one
// the server applies to a reset of such instances), ?for=console the rule
// of console users' own passwords.
func (c *Console) passwordPolicy(w http.ResponseWriter, r *http.Request) {
	if _, _, err := c.current(r); err != nil {
		c.fail(w, r, err)
		return
	}
	var pol password.Policy
	if r.URL.Query().Get("for") == "console" {
		pol = core.ConsolePasswordPolicy()
	} else {
		var oses []string
		for _, o := range strings.Split(r.URL.Query().Get("os"), ",") {
			if o = strings.TrimSpace(o); o != "" {
				oses = append(oses, o)
			}
		}
		pol = core.PasswordPolicyFor(oses...)
	}
	httpx.WriteJSON(w, http.StatusOK, pol.Spec())
}

// resetPlan answers ?ids=a,b with what a reset of those instances would
// need (core.PlanReset): whether they can all change without a shutdown,
// and which an offline reset must shut down. The dialog asks rather than
// repeat the core's rules.
func (c *Console) resetPlan(w http.ResponseWriter, r *http.Request) {
	p, s, err := c.current(r)
	if err == nil {
		err = s.Usable()
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var ids []string
	for _, id := range strings.Split(r.URL.Query().Get("ids"), ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	plan, err := c.svc.PlanReset(r.Context(), p, ids)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, plan)
}

func (c *Console) listUsers(w http.ResponseWriter, r *http.Request) {
	p, s, err := c.current(r)
	if err == nil {
		err = s.Usable()
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	users, err := c.svc.ListConsoleUsers(r.Context(), p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"users": users})
}

type userCreate struct {
	Name     string `json:"name"`
	Tenant   string `json:"tenant,omitempty"`
	Admin    bool   `json:"admin,omitempty"`
	Password string `json:"password"`
}

func (c *Console) createUser(w http.ResponseWriter, r *http.Request) {
	p, s, err := c.current(r)
	if err == nil {
		err = s.Usable()
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var req userCreate
	if !decode(w, r, &req) {
		return
	}
	u, err := c.svc.CreateConsoleUser(r.Context(), p, req.Name, req.Tenant, req.Admin, []byte(req.Password))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, u)
}

// statusOf maps the core codes the console's own routes return.
var statusOf = map[string]int{
	core.CodeUnauthenticated:   http.StatusUnauthorized,
	core.CodeSignInFailed:      http.StatusUnauthorized,
	core.CodeSignInLocked:      http.StatusTooManyRequests,
	core.CodeSignInThrottled:   http.StatusTooManyRequests,
	core.CodeSignInBusy:        http.StatusTooManyRequests,
	core.CodeForbidden:         http.StatusForbidden,
	core.CodeUserExists:        http.StatusConflict,
	core.CodeTenantNotFound:    http.StatusNotFound,
	core.CodeStoreUnavailable:  http.StatusServiceUnavailable,
	core.CodeInternal:          http.StatusInternalServerError,
	core.CodeInvalidArgument:   http.StatusBadRequest,
	core.CodePasswordPolicy:    http.StatusBadRequest,
	core.CodeSessionExpired:    http.StatusUnauthorized,
	core.CodeInstanceNotFound:  http.StatusNotFound,
	core.CodeOperationNotFound: http.StatusNotFound,
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ce *core.Error
	if !errors.As(err, &ce) {
		c.log.ErrorContext(r.Context(), "console request failed", "err", err)
		nativeapi.WriteError(w, r, http.StatusInternalServerError, core.CodeInternal, "internal error; see the server log for the request id", nil)
		return
	}
	status, ok := statusOf[ce.Code]
	if !ok {
		status = http.StatusBadRequest
	}
	if status >= 500 {
		c.log.ErrorContext(r.Context(), "console request failed", "code", ce.Code, "err", err)
	}
	if secs, ok := ce.Details["retryAfterSeconds"].(int); ok && status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	nativeapi.WriteError(w, r, status, ce.Code, ce.Message, nativeapi.ErrorDetails(ce))
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// Never quote the input: it holds a password.
		nativeapi.WriteError(w, r, http.StatusBadRequest, "INVALID_JSON", "the request body is not the JSON object this call expects", nil)
		return false
	}
	return true
}
