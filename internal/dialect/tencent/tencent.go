// Package tencent is the Tencent Cloud API 3.0 dialect: POST / with the
// action in X-TC-Action and the version in X-TC-Version, JSON bodies and
// TC3-HMAC-SHA256 signatures (docs/design.md#front-doors,
// docs/api-tencent.md). It serves
// the CVM actions of version 2017-03-12 (ResetInstancesPassword and the
// calls around it) and the bare-metal ones of 2018-04-23
// (ResetDevicePassword), so that Tencent's own SDKs and tools work by
// changing only their endpoint.
//
// Every answer, errors included, is HTTP 200 with Content-Type
// application/json, {"Response": {..., "RequestId"}}: Tencent's Python SDK
// (and so tccli) treats any other status as a network failure. Like every
// dialect it is a thin adapter over core.Service: it verifies the
// signature, parses the action, calls the core and translates answers and
// errors; its one rule of its own is the cloud's password rule.
package tencent

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/sign/tc3"
)

// Pattern is the one route: POST /. GET / stays the browsers'.
const Pattern = "POST /{$}"

// MaxBody bounds a request body: 100 ids and a password fit in a few
// kilobytes.
const MaxBody = 64 << 10

// Headers of the protocol.
const (
	HeaderAction  = "X-TC-Action"
	HeaderVersion = "X-TC-Version"
)

// API serves the dialect.
type API struct{ dialecthttp.Front }

// New makes the API. now is the clock signatures are checked against (nil:
// time.Now).
func New(svc *core.Service, log *slog.Logger, m *metrics.Metrics, now func() time.Time) *API {
	return &API{dialecthttp.NewFront(svc, log, m, now)}
}

// Register adds POST / to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc(Pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := "/ " + metricAction(r.Header.Get(HeaderAction))
		a.Observe("tencent", route, a.serve(w, r), start)
	})
}

// metricAction bounds the label values: an unknown action is "other".
func metricAction(action string) string {
	for _, list := range actions {
		for _, a := range list {
			if a == action {
				return action
			}
		}
	}
	return "other"
}

// serve answers one request and returns the HTTP status sent (200, or 499
// when the client went away).
func (a *API) serve(w http.ResponseWriter, r *http.Request) int {
	body, err := dialecthttp.ReadBody(w, r, MaxBody)
	// The body may hold a password: wipe it once the request is answered.
	defer clear(body)
	if errors.Is(err, dialecthttp.ErrBodyTooLarge) {
		return a.writeErr(w, r, "", apiErr(CodeRequestSizeExceeded, "the request body exceeds "+strconv.Itoa(MaxBody)+" bytes"))
	}
	if err != nil {
		return a.writeErr(w, r, "", apiErr(CodeInvalidParameter, "the request body could not be read"))
	}
	if r.URL.RawQuery != "" {
		return a.writeErr(w, r, "", apiErr(CodeInvalidParameter, "send the parameters in the JSON body, not in the query string"))
	}
	action, version := r.Header.Get(HeaderAction), r.Header.Get(HeaderVersion)
	switch {
	case action == "":
		return a.writeErr(w, r, "", apiErr(CodeMissingParameter, "the X-TC-Action header is missing"))
	case version == "":
		return a.writeErr(w, r, "", apiErr(CodeMissingParameter, "the X-TC-Version header is missing"))
	}
	service := ServiceOf(version)
	if service == "" {
		return a.writeErr(w, r, "", apiErr(CodeNoSuchVersion, "the version "+strconv.Quote(truncate(version, 32))+
			" does not exist; fleetpass serves "+scopeHint))
	}
	p, err := a.authenticate(r, body, service)
	if err != nil {
		return a.writeErr(w, r, service, err)
	}
	httpx.SetLogAttrs(r.Context(), slog.String("principal", p.ID), slog.String("action", metricAction(action)))
	req, err := Parse(service, action, r.Header.Get("Content-Type"), body)
	defer sealer.Wipe(req.Password)
	if err != nil {
		return a.writeErr(w, r, service, err)
	}
	var resp map[string]any
	if service == ServiceBM {
		resp, err = a.doBM(r.Context(), p, req)
	} else {
		resp, err = a.doCVM(r.Context(), p, req)
	}
	if err != nil {
		return a.writeErr(w, r, service, err)
	}
	resp["RequestId"] = httpx.RequestID(r.Context())
	writeJSON(w, map[string]any{"Response": resp})
	return http.StatusOK
}

// authenticate verifies the signature. TC3 has no nonce, so nothing is
// remembered: the same request signed twice in a second is two calls.
func (a *API) authenticate(r *http.Request, body []byte, service string) (core.Principal, error) {
	var p core.Principal
	lookup := a.SecretLookup(r.Context(), tc3.ErrUnknownSecretID, &p)
	if r.Header.Get(tc3.HeaderTimestamp) == "" {
		return core.Principal{}, apiErr(CodeMissingParameter, "the X-TC-Timestamp header is missing")
	}
	if _, err := tc3.Verify(tc3.NewInput(r, body, service), lookup, a.Now()); err != nil {
		return core.Principal{}, fromSignature(service, err)
	}
	// The key's budget is shared with every front door.
	if err := a.Svc.Throttle(r.Context(), p, "tencent"); err != nil {
		return core.Principal{}, err
	}
	p.Address, p.RequestID = httpx.ClientAddr(r), httpx.RequestID(r.Context())
	return p, nil
}

type errorBody struct {
	Code    string `json:"Code"`
	Message string `json:"Message"`
}

// writeErr answers err as {"Response": {"Error": {...}, "RequestId"}} and
// returns the status sent.
func (a *API) writeErr(w http.ResponseWriter, r *http.Request, service string, err error) int {
	if dialecthttp.ClientGone(r, err) {
		return dialecthttp.StatusClientGone
	}
	var e *Error
	if !errors.As(err, &e) {
		e = fromCore(service, err)
	}
	if e.Code == CodeInternalError {
		a.Log.ErrorContext(r.Context(), "Tencent API request failed", "code", e.Code, "err", err)
	}
	// Not Tencent's, but harmless to its clients and useful to others.
	dialecthttp.SetRetryAfter(w, err)
	writeJSON(w, map[string]any{"Response": map[string]any{
		"Error": errorBody{Code: e.Code, Message: e.Message}, "RequestId": httpx.RequestID(r.Context())}})
	return http.StatusOK
}

// writeJSON answers v with HTTP 200 and Content-Type application/json,
// exactly: Tencent's Python SDK parses errors only then. Answers may carry
// instance data, so no cache keeps them.
func writeJSON(w http.ResponseWriter, v any) { dialecthttp.WriteJSON(w, http.StatusOK, v) }
