// Package actionapi is the action API dialect: POST /api/v2/vm and
// POST /api/v2/zec with the action in X-ZC-Action, JSON bodies and
// ZC2-HMAC-SHA256 signatures (docs/design.md#signatures, docs/api-action.md).
//
// The two paths follow the platform the document comes from. The VM path
// resets stopped instances offline and starts them again; the ZEC path
// resets running instances online through their guest agent. Both are thin
// adapters: they verify the signature, parse the action, call core.Service
// and translate its answers and errors to the platform's wire format.
package actionapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/password"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

// MaxBody is the largest request body accepted: 100 ids and a password fit
// in a few kilobytes.
const MaxBody = 64 << 10

// Paths of the two products.
const (
	PathVM  = "/api/v2/vm"
	PathZEC = "/api/v2/zec"
)

// product is what differs between the two paths.
type product struct {
	name string // metrics label
	path string
	// reset is how ResetInstancesPassword runs there.
	mode    string
	require string
}

var (
	vm  = product{name: "vm", path: PathVM, mode: apiv1.ModeOffline, require: core.RequireStopped}
	zec = product{name: "zec", path: PathZEC, mode: apiv1.ModeOnline, require: core.RequireRunningGuest}
)

// API serves the action API's two paths.
type API struct{ dialecthttp.Front }

// New makes the API. now is the clock signatures are checked against (nil:
// time.Now).
func New(svc *core.Service, log *slog.Logger, m *metrics.Metrics, now func() time.Time) *API {
	return &API{dialecthttp.NewFront(svc, log, m, now)}
}

// Register adds the two paths to mux. They take every method so that a
// wrong one is answered in the API's own error format.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle(PathVM, a.handler(vm))
	mux.Handle(PathZEC, a.handler(zec))
}

func (a *API) handler(pr product) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		requestID := httpx.RequestID(r.Context())
		action := r.Header.Get("X-ZC-Action")
		status := a.serve(w, r, pr, requestID)
		a.Observe("action", pr.path+" "+metricAction(action), status, start)
	})
}

// metricAction bounds the label values: an unknown action is "other".
func metricAction(action string) string {
	switch action {
	case ActionResetInstancesPassword, ActionDescribeInstances, ActionDescribeInstancesStatus,
		ActionStartInstances, ActionStopInstances, ActionRebootInstances:
		return action
	}
	return "other"
}

// serve answers one request and returns the HTTP status it sent.
func (a *API) serve(w http.ResponseWriter, r *http.Request, pr product, requestID string) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return a.writeErr(w, r, requestID, apiErr(codeMethodNotAllowed, "the action API takes POST only"))
	}
	body, err := dialecthttp.ReadBody(w, r, MaxBody)
	// The body may hold a password: wipe it once the request is answered.
	defer clear(body)
	if errors.Is(err, dialecthttp.ErrBodyTooLarge) {
		return a.writeErr(w, r, requestID, apiErr(codeBodyTooLarge, "the request body exceeds "+strconv.Itoa(MaxBody)+" bytes"))
	}
	if err != nil {
		return a.writeErr(w, r, requestID, apiErr(codeInvalidParameter, "the request body could not be read"))
	}
	p, sig, err := a.authenticate(r, body)
	if err != nil {
		return a.writeErr(w, r, requestID, err)
	}
	httpx.SetLogAttrs(r.Context(), slog.String("principal", p.ID), slog.String("action", metricAction(r.Header.Get("X-ZC-Action"))))
	req, err := Parse(r.Header.Get("X-ZC-Action"), r.Header.Get("Content-Type"), body)
	defer sealer.Wipe(req.Password)
	if err != nil {
		// Refused before the signature was recorded: it stays unused.
		return a.writeErr(w, r, requestID, err)
	}
	// ZC2 signs neither the path nor the action: the signature is bound
	// to the first ones it came with, and an identical mutating request
	// gets the first answer instead of running again.
	use := core.SignedUse{Key: sig.ReplayKey, Scope: pr.path + " " + req.Action, Mutating: Mutating(req.Action),
		Expires: sig.Timestamp.Add(zc2.MaxClockSkew)}
	prev, err := a.Svc.UseSignedRequest(r.Context(), use)
	if err != nil {
		return a.writeErr(w, r, requestID, err)
	}
	if prev != nil {
		a.Log.InfoContext(r.Context(), "identical signed request answered with the first one's answer",
			"first_request_id", prev.RequestID)
		w.Header().Set("X-Request-Id", prev.RequestID)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(prev.Status)
		w.Write(prev.Body)
		return prev.Status
	}
	resp, err := a.do(r.Context(), p, pr, req)
	if err != nil {
		if use.Mutating {
			// Core refusals come before anything is written: the same
			// signature may be used again (the other path, say).
			if rerr := a.Svc.ReleaseSignedRequest(context.WithoutCancel(r.Context()), use.Key); rerr != nil {
				a.Log.ErrorContext(r.Context(), "could not release a refused request's signature", "err", rerr)
			}
		}
		return a.writeErr(w, r, requestID, err)
	}
	resp["requestId"] = requestID
	// Encoded here, not by httpx.WriteJSON, so that the very bytes can be
	// kept for an identical request; the same encoding (no HTML escaping).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"requestId": requestID, "response": resp}); err != nil {
		return a.writeErr(w, r, requestID, err)
	}
	answer := buf.Bytes()
	if use.Mutating {
		if err := a.Svc.AnswerSignedRequest(context.WithoutCancel(r.Context()), use.Key,
			core.SignedAnswer{Status: http.StatusOK, RequestID: requestID, Body: answer}); err != nil {
			// The request ran: answer it anyway. An identical request in
			// the window is then refused as still running, never run twice.
			a.Log.ErrorContext(r.Context(), "could not record a signed request's answer", "err", err)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(answer)
	return http.StatusOK
}

// Mutating reports whether an action changes instances: such a request is
// run once per signature, its repeats answered from the record.
func Mutating(action string) bool {
	switch action {
	case ActionResetInstancesPassword, ActionStartInstances, ActionStopInstances, ActionRebootInstances:
		return true
	}
	return false
}

// authenticate verifies the signature and takes the request from the
// key's rate budget.
func (a *API) authenticate(r *http.Request, body []byte) (core.Principal, zc2.Result, error) {
	var p core.Principal
	res, err := zc2.Verify(zc2.NewVerifyInput(r, body), a.SecretLookup(r.Context(), zc2.ErrUnknownKey, &p), a.Now())
	if err != nil {
		return core.Principal{}, zc2.Result{}, fromSignature(err)
	}
	if err := a.Svc.Throttle(r.Context(), p, "action"); err != nil {
		return core.Principal{}, zc2.Result{}, err
	}
	p.Address, p.RequestID = httpx.ClientAddr(r), httpx.RequestID(r.Context())
	return p, res, nil
}

// do runs a parsed action and returns the fields of its "response".
func (a *API) do(ctx context.Context, p core.Principal, pr product, req Request) (map[string]any, error) {
	switch req.Action {
	case ActionResetInstancesPassword:
		policy := password.ActionAPI()
		op, err := a.Svc.ResetPassword(ctx, p, core.ResetRequest{InstanceIDs: req.InstanceIDs, Mode: pr.mode,
			Password: req.Password, Policy: &policy, Require: pr.require})
		if err != nil {
			return nil, err
		}
		return map[string]any{"operationId": op.ID}, nil
	case ActionStartInstances, ActionStopInstances, ActionRebootInstances:
		pw := core.PowerRequest{InstanceIDs: req.InstanceIDs, StopMode: apiv1.StopSoft}
		switch req.Action {
		case ActionStartInstances:
			pw.Action = apiv1.ActionStart
		case ActionStopInstances:
			pw.Action = apiv1.ActionStop
			if pr == zec && req.ForceShutdown {
				pw.StopMode = apiv1.StopHard
			}
		default:
			pw.Action = apiv1.ActionReboot
		}
		op, err := a.Svc.PowerAction(ctx, p, pw)
		if err != nil {
			return nil, err
		}
		return map[string]any{"operationId": op.ID, "instanceIds": req.InstanceIDs}, nil
	case ActionDescribeInstances, ActionDescribeInstancesStatus:
		q := core.SearchQuery{IDs: req.InstanceIDs, NameContains: req.InstanceName,
			Offset: (req.PageNum - 1) * req.PageSize, Limit: req.PageSize}
		if req.Status != "" {
			q.States, _ = coreStates(req.Status)
		}
		list, total, err := a.Svc.SearchInstances(ctx, p, q)
		if err != nil {
			return nil, err
		}
		set := make([]any, len(list))
		for i, in := range list {
			if req.Action == ActionDescribeInstancesStatus {
				set[i] = instanceStatus{InstanceID: in.ID, InstanceStatus: PlatformState(in.State)}
			} else {
				set[i] = describe(in)
			}
		}
		return map[string]any{"totalCount": total, "dataSet": set}, nil
	}
	return nil, apiErr(codeInvalidAction, "unknown action")
}

// instanceSet is one instance of DescribeInstances.
type instanceSet struct {
	InstanceID   string `json:"instanceId"`
	InstanceName string `json:"instanceName"`
	Status       string `json:"status"`
	ImageName    string `json:"imageName"`
	OSType       string `json:"osType"`
	LoginUser    string `json:"loginUser"`
	AgentAlive   bool   `json:"agentAlive"`
	CreateTime   string `json:"createTime"`
}

type instanceStatus struct {
	InstanceID     string `json:"instanceId"`
	InstanceStatus string `json:"instanceStatus"`
}

func describe(in apiv1.Instance) instanceSet {
	image, osType := "Linux", "LINUX"
	if in.OSType == core.OSWindows {
		image, osType = "Windows", "WINDOWS"
	}
	return instanceSet{InstanceID: in.ID, InstanceName: in.Name, Status: PlatformState(in.State), ImageName: image,
		OSType: osType, LoginUser: in.AdminUser, AgentAlive: in.GuestAlive,
		CreateTime: in.CreatedAt.UTC().Format(time.RFC3339)}
}

// writeErr answers err as {"requestId", "code", "message"} and returns the
// status sent.
func (a *API) writeErr(w http.ResponseWriter, r *http.Request, requestID string, err error) int {
	if dialecthttp.ClientGone(r, err) {
		return dialecthttp.StatusClientGone
	}
	var e *Error
	if !errors.As(err, &e) {
		e = fromCore(err)
	}
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	dialecthttp.SetRetryAfter(w, err)
	if status >= 500 {
		a.Log.ErrorContext(r.Context(), "action API request failed", "code", e.Code, "err", err)
	}
	dialecthttp.WriteJSON(w, status, map[string]string{"requestId": requestID, "code": e.Code, "message": e.Message})
	return status
}
