// Package nativeapi is fleetpass's own REST API (/v1): JSON over HTTP with
// API-key authentication, asynchronous operations (202 + Location, /wait),
// Server-Sent Events and an OpenAPI 3.1 description. It is a thin adapter:
// it decodes requests, calls core.Service and encodes answers and errors.
package nativeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/metrics"
)

// MaxBody is the largest request body accepted: a batch of 100 ids and a
// password fit in a few kilobytes.
const MaxBody = 64 << 10

// Config tunes the API.
type Config struct {
	// RateLimit is the sustained requests per second allowed per key;
	// Burst the bucket size. Zero RateLimit disables limiting. The server
	// applies them at every front door (core.Service.Throttle), not only
	// here.
	RateLimit float64
	Burst     int
}

// API serves /v1.
type API struct {
	svc     *core.Service
	log     *slog.Logger
	metrics *metrics.Metrics
	cfg     Config

	authn func(*http.Request) (core.Principal, bool, error)
}

// New makes the API.
func New(svc *core.Service, log *slog.Logger, m *metrics.Metrics, cfg Config) *API {
	return &API{svc: svc, log: log, metrics: m, cfg: cfg}
}

// WithAuthenticator makes the API try f before API keys: f reports whether
// it recognised the request (ok) and, if so, its principal or why it is
// refused. The web console mounts the API with its session cookies this
// way, so it calls the very same handlers as every other client.
func (a *API) WithAuthenticator(f func(*http.Request) (p core.Principal, ok bool, err error)) *API {
	a.authn = f
	return a
}

type handler func(w http.ResponseWriter, r *http.Request, p core.Principal) error

// Routes are the API's routes: method, path pattern, handler. The OpenAPI
// test walks this table, so a route cannot be added without its document.
func (a *API) Routes() []Route {
	return []Route{
		{"GET", "/v1/instances", a.listInstances},
		{"POST", "/v1/instances", a.createInstance},
		{"GET", "/v1/instances/{id}", a.getInstance},
		{"DELETE", "/v1/instances/{id}", a.deleteInstance},
		{"PUT", "/v1/instances/{id}/bmc", a.setBMC},
		{"POST", "/v1/password-resets", a.resetPassword},
		{"POST", "/v1/power-actions", a.powerAction},
		{"GET", "/v1/operations", a.listOperations},
		{"GET", "/v1/operations/{id}", a.getOperation},
		{"GET", "/v1/operations/{id}/wait", a.waitOperation},
		{"GET", "/v1/events", a.events},
		{"GET", "/v1/keys", a.listKeys},
		{"POST", "/v1/keys", a.createKey},
		{"DELETE", "/v1/keys/{id}", a.revokeKey},
		{"GET", "/v1/tenants", a.listTenants},
		{"POST", "/v1/tenants", a.createTenant},
		{"GET", "/v1/audit", a.listAudit},
		{"GET", "/v1/hosts", a.listHosts},
		{"POST", "/v1/hosts", a.addHost},
		{"GET", "/v1/hosts/{id}", a.getHost},
		{"DELETE", "/v1/hosts/{id}", a.removeHost},
		{"POST", "/v1/agent-tokens", a.createAgentToken},
		{"GET", "/v1/agent-tokens", a.listAgentTokens},
		{"DELETE", "/v1/agent-tokens/{id}", a.revokeAgentToken},
		{"GET", "/v1/replicas", a.listReplicas},
		{"DELETE", "/v1/replicas/{id}", a.forgetReplica},
	}
}

// Route is one route of the API.
type Route struct {
	Method, Pattern string
	Handle          handler
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range a.Routes() {
		mux.Handle(rt.Method+" "+rt.Pattern, a.wrap(rt.Pattern, rt.Handle))
	}
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI())
	})
	// Anything else under /v1 answers in the API's error format.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, http.StatusNotFound, codeNotFound, "no such route: "+r.Method+" "+r.URL.Path, nil)
	})
}

// wrap authenticates, rate-limits, counts and times a handler, and turns
// its error into the API's error answer.
func (a *API) wrap(route string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		defer func() {
			a.metrics.HTTPRequests.WithLabelValues("native", route, strconv.Itoa(rec.status)).Inc()
			a.metrics.HTTPDuration.WithLabelValues("native", route).Observe(time.Since(start).Seconds())
		}()
		r.Body = http.MaxBytesReader(rec, r.Body, MaxBody)
		p, err := a.authenticate(r)
		if err == nil {
			err = a.svc.Throttle(r.Context(), p, "native")
		}
		if err == nil {
			httpx.SetLogAttrs(r.Context(), slog.String("principal", p.ID))
			err = h(rec, r, p)
		}
		if err != nil {
			a.writeErr(rec, r, err)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// authenticate reads the API key: HTTP Basic (key id as user, secret as
// password: `curl -u ID:SECRET`) or `Authorization: Bearer ID:SECRET`.
// Keys in the URL are never looked at.
func (a *API) authenticate(r *http.Request) (core.Principal, error) {
	if a.authn != nil {
		if p, ok, err := a.authn(r); ok || err != nil {
			return p, err
		}
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		if tok, found := httpx.BearerToken(r); found {
			id, secret, ok = strings.Cut(tok, ":")
		}
	}
	if !ok || id == "" {
		return core.Principal{}, &core.Error{Code: core.CodeUnauthenticated,
			Message: "authenticate with an API key: HTTP Basic (key id and secret) or 'Authorization: Bearer ID:SECRET'"}
	}
	return a.svc.Authenticate(r.Context(), id, []byte(secret), httpx.ClientAddr(r), httpx.RequestID(r.Context()))
}

// statusOf maps core codes to HTTP statuses.
var statusOf = map[string]int{
	core.CodeInvalidArgument:      http.StatusBadRequest,
	core.CodeEmptyInstanceList:    http.StatusBadRequest,
	core.CodeDuplicateInstanceID:  http.StatusBadRequest,
	core.CodeTooManyInstances:     http.StatusBadRequest,
	core.CodePasswordPolicy:       http.StatusBadRequest,
	core.CodeUnknownDriver:        http.StatusBadRequest,
	core.CodeUnauthenticated:      http.StatusUnauthorized,
	core.CodeForbidden:            http.StatusForbidden,
	core.CodeInstanceNotFound:     http.StatusNotFound,
	core.CodeOperationNotFound:    http.StatusNotFound,
	core.CodeKeyNotFound:          http.StatusNotFound,
	core.CodeTenantNotFound:       http.StatusNotFound,
	core.CodeHostNotFound:         http.StatusNotFound,
	core.CodeHostExists:           http.StatusConflict,
	core.CodeTenantExists:         http.StatusConflict,
	core.CodeInstanceExists:       http.StatusConflict,
	core.CodeConsentRequired:      http.StatusConflict,
	core.CodeInstanceBusy:         http.StatusConflict,
	core.CodeInstanceNotRunning:   http.StatusConflict,
	core.CodeInstanceNotStopped:   http.StatusConflict,
	core.CodeGuestNotAlive:        http.StatusConflict,
	core.CodeMethodUnsupported:    http.StatusConflict,
	core.CodeIdempotencyKeyReused: http.StatusUnprocessableEntity,
	// A bare-metal server's BMC, asked for the request, refused the
	// settings or did not answer: the upstream's answer, as a gateway's.
	core.CodeBMCAuthFailed:      http.StatusBadGateway,
	core.CodeBMCCipherSuite:     http.StatusBadGateway,
	core.CodeBMCUnreachable:     http.StatusBadGateway,
	core.CodeLinkForbidden:      http.StatusForbidden,
	core.CodeLinkInUse:          http.StatusConflict,
	core.CodeCrossTenantBatch:   http.StatusBadRequest,
	core.CodeInstanceQuota:      http.StatusForbidden,
	core.CodeAgentTokenNotFound: http.StatusNotFound,
	core.CodeReplicaNotFound:    http.StatusNotFound,
	core.CodeReplicaAlive:       http.StatusConflict,
	core.CodeRateLimited:        http.StatusTooManyRequests,
	core.CodeStoreUnavailable:   http.StatusServiceUnavailable,
	core.CodeInternal:           http.StatusInternalServerError,
	codeUnsupportedMediaType:    http.StatusUnsupportedMediaType,
}

// StatusOf is the HTTP status the native API answers a core error code
// with: every /v1 route, wherever it is registered, answers alike. A code
// the table does not know is the caller's mistake (400).
func StatusOf(code string) int {
	if status, ok := statusOf[code]; ok {
		return status
	}
	return http.StatusBadRequest
}

// Codes of the native API's own (wire-level) errors.
const (
	codeInvalidJSON          = "INVALID_JSON"
	codeUnknownField         = "UNKNOWN_FIELD"
	codeUnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
	codeBodyTooLarge         = "BODY_TOO_LARGE"
	codeNotFound             = "NOT_FOUND"
)

func (a *API) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ce *core.Error
	var mbe *http.MaxBytesError
	switch {
	case core.CodeOf(err) == core.CodeRateLimited:
		secs := int(core.RetryAfter(err) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		WriteError(w, r, http.StatusTooManyRequests, core.CodeRateLimited,
			fmt.Sprintf("too many requests for this key; retry after %d s", secs), nil)
	case errors.As(err, &mbe):
		WriteError(w, r, http.StatusRequestEntityTooLarge, codeBodyTooLarge,
			fmt.Sprintf("the request body exceeds %d bytes", mbe.Limit), nil)
	case errors.As(err, &ce):
		status := StatusOf(ce.Code)
		if status >= 500 {
			a.log.ErrorContext(r.Context(), "request failed", "code", ce.Code, "err", err)
		}
		WriteError(w, r, status, ce.Code, ce.Message, ErrorDetails(ce))
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads an answer.
	default:
		a.log.ErrorContext(r.Context(), "request failed", "err", err)
		WriteError(w, r, http.StatusInternalServerError, core.CodeInternal, "internal error; see the server log for the request id", nil)
	}
}

// ErrorDetails is the details of a core error's answer: its own, and the
// field it is about (apiv1.DetailField), in a copy (the core's map is its
// own). The console answers with them too.
func ErrorDetails(ce *core.Error) map[string]any {
	if ce.Field == "" {
		return ce.Details
	}
	d := make(map[string]any, len(ce.Details)+1)
	for k, v := range ce.Details {
		d[k] = v
	}
	d[apiv1.DetailField] = ce.Field
	return d
}

// WriteError answers an error in the native API's format; the console uses
// it too, so both speak the same errors.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, msg string, details map[string]any) {
	httpx.WriteJSON(w, status, apiv1.ErrorBody{Error: apiv1.Error{Code: code, Message: msg,
		RequestID: httpx.RequestID(r.Context()), Details: details}})
}

// decode reads a JSON body strictly: one object, no unknown fields.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &core.Error{Code: codeUnsupportedMediaType, Message: "send the body as application/json"}
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return &core.Error{Code: codeInvalidJSON, Message: "the request body is empty; send a JSON object"}
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return &core.Error{Code: codeUnknownField, Message: "unknown field " + f}
		}
		return &core.Error{Code: codeInvalidJSON, Message: "the request body is not valid JSON for this call: " + jsonProblem(err)}
	}
	if dec.More() {
		return &core.Error{Code: codeInvalidJSON, Message: "the request body holds more than one JSON value"}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &core.Error{Code: codeInvalidJSON, Message: "unexpected data after the JSON object"}
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold a password.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	}
	return "malformed"
}

// ---- handlers

func (a *API) listInstances(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"))
	if err != nil {
		return err
	}
	list, err := a.svc.ListInstances(r.Context(), p, core.InstanceQuery{Tenant: q.Get("tenant"), State: q.Get("state"),
		OSType: q.Get("os"), NamePrefix: q.Get("namePrefix"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, list)
	return nil
}

func intParam(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, &core.Error{Code: core.CodeInvalidArgument, Message: "limit: must be a non-negative integer"}
	}
	return n, nil
}

func (a *API) createInstance(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.InstanceCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	in, err := a.svc.RegisterInstance(r.Context(), p, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/instances/"+in.ID)
	httpx.WriteJSON(w, http.StatusCreated, in)
	return nil
}

func (a *API) setBMC(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.BMCUpdate
	if err := decode(r, &req); err != nil {
		return err
	}
	in, err := a.svc.SetBMC(r.Context(), p, r.PathValue("id"), req)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, in)
	return nil
}

func (a *API) getInstance(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	in, err := a.svc.GetInstance(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, in)
	return nil
}

func (a *API) deleteInstance(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	if err := a.svc.DeleteInstance(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) accepted(w http.ResponseWriter, op apiv1.Operation) {
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	httpx.WriteJSON(w, http.StatusAccepted, op)
}

func (a *API) resetPassword(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.PasswordReset
	if err := decode(r, &req); err != nil {
		return err
	}
	pw := []byte(req.Password)
	fp, _ := json.Marshal(req)
	op, err := a.svc.ResetPassword(r.Context(), p, core.ResetRequest{InstanceIDs: req.InstanceIDs, User: req.User,
		Mode: req.Mode, Method: req.Method, ForceStop: req.ForceStop, Password: pw, Generate: req.Generate,
		IdempotencyKey: r.Header.Get("Idempotency-Key"), Fingerprint: a.svc.Fingerprint(fp)})
	clear(fp)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	a.accepted(w, op)
	return nil
}

func (a *API) powerAction(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.PowerAction
	if err := decode(r, &req); err != nil {
		return err
	}
	fp, _ := json.Marshal(req)
	op, err := a.svc.PowerAction(r.Context(), p, core.PowerRequest{Action: req.Action, InstanceIDs: req.InstanceIDs,
		StopMode: req.StopMode, IdempotencyKey: r.Header.Get("Idempotency-Key"), Fingerprint: a.svc.Fingerprint(fp)})
	if err != nil {
		return err
	}
	a.accepted(w, op)
	return nil
}

func (a *API) listOperations(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"))
	if err != nil {
		return err
	}
	list, err := a.svc.ListOperations(r.Context(), p, core.OperationQuery{InstanceID: q.Get("instanceId"),
		Status: q.Get("status"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, list)
	return nil
}

func (a *API) getOperation(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	op, err := a.svc.GetOperation(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, op)
	return nil
}

// MaxWait bounds /wait so proxies and clients see an answer regularly.
const MaxWait = 5 * time.Minute

func (a *API) waitOperation(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	timeout := 30 * time.Second
	if s := r.URL.Query().Get("timeout"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			secs, err2 := strconv.Atoi(s)
			if err2 != nil {
				return &core.Error{Code: core.CodeInvalidArgument, Message: "timeout: a duration such as 30s or a number of seconds"}
			}
			d = time.Duration(secs) * time.Second
		}
		timeout = min(max(d, 0), MaxWait)
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + 30*time.Second))
	op, err := a.svc.WaitOperation(r.Context(), p, r.PathValue("id"), timeout)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, op)
	return nil
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	keys, err := a.svc.ListKeys(r.Context(), p)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, apiv1.KeyList{Keys: keys})
	return nil
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.KeyCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	k, err := a.svc.CreateKey(r.Context(), p, req)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, k)
	return nil
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	if err := a.svc.RevokeKey(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	ts, err := a.svc.ListTenants(r.Context(), p)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, apiv1.TenantList{Tenants: ts})
	return nil
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.TenantCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	t, err := a.svc.CreateTenant(r.Context(), p, req)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, t)
	return nil
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	limit, err := intParam(r.URL.Query().Get("limit"))
	if err != nil {
		return err
	}
	list, err := a.svc.ListAudit(r.Context(), p, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, list)
	return nil
}

// events streams operation, item and instance changes of the caller's
// tenant as Server-Sent Events. Last-Event-ID resumes after a reconnect.
func (a *API) events(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	bus := a.svc.Bus()
	opFilter := r.URL.Query().Get("operationId")
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("after")
	}
	var resume *int64
	if last != "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return &core.Error{Code: core.CodeInvalidArgument, Message: "Last-Event-ID: must be an event id"}
		}
		resume = &n
	}
	after, err := a.svc.StreamStart(r.Context(), p, resume, opFilter)
	if err != nil {
		return err
	}
	// A revocation between the authentication and the position taken
	// above would be missed: look once more, now that later ones are seen.
	if ok, err := a.svc.StillAuthorized(r.Context(), p); err != nil || !ok {
		if err != nil {
			return err
		}
		return &core.Error{Code: core.CodeUnauthenticated, Message: "the credentials of this request were revoked or signed out"}
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 2000\n\n")
	_ = rc.Flush()
	ctx := r.Context()
	for {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		rows, err := bus.Next(wctx, after, 500)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// A comment keeps proxies from closing an idle stream.
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
			continue
		}
		if err != nil {
			return nil
		}
		for _, row := range rows {
			after = row.ID
			if row.Type == events.TypeRevocation {
				if a.svc.Revoked(ctx, p, row) {
					// The key was revoked or the session ended: the
					// stream ends with it.
					_ = rc.Flush()
					return nil
				}
				continue
			}
			if !core.EventVisible(p, row.Tenant) || (opFilter != "" && !(row.Type != "instance" && row.Ref == opFilter)) {
				continue
			}
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", row.ID, row.Type, eventData(row.ID, row.Type, row.At, row.Data))
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}

// eventData wraps a stored payload in the apiv1.Event envelope without
// decoding it again.
func eventData(id int64, typ string, at time.Time, data []byte) string {
	return fmt.Sprintf(`{"id":%d,"type":%q,"time":%q,%q:%s}`, id, typ, at.Format(time.RFC3339Nano), typ, data)
}
