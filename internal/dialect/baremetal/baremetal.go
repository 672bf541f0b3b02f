// Package baremetal is the bare-metal API dialect: GET or form POST
// /v2/index.php?Action=..., signed with the classic cloud API 2.0 scheme
// (HmacSHA1 or HmacSHA256), answering {"code", "message", "data"}
// (docs/design.md#signatures, docs/api-baremetal.md).
//
// Resets run online through the guest agent, asynchronously: the answer
// carries a numeric task id that DescribeOperationResult polls. It is a
// thin adapter over core.Service like every dialect.
package baremetal

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/metrics"
	"github.com/fleetpass/fleetpass/internal/password"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/sign/capi2"
)

// Path is the API's one path.
const Path = "/v2/index.php"

// MaxBody bounds a form POST: 100 ids and a password fit in a few
// kilobytes.
const MaxBody = 64 << 10

// Task and item statuses of DescribeOperationResult (docs/design.md#signatures).
const (
	TaskSuccess           = 1
	TaskFailed            = 2
	TaskPartSuccessFailed = 3
	TaskUnfinished        = 4
	TaskPartSuccessUnfin  = 5
	TaskPartUnfinFailed   = 6
	TaskAllThree          = 7
)

// API serves the bare-metal API.
type API struct{ dialecthttp.Front }

// New makes the API. now is the clock signatures are checked against (nil:
// time.Now).
func New(svc *core.Service, log *slog.Logger, m *metrics.Metrics, now func() time.Time) *API {
	return &API{dialecthttp.NewFront(svc, log, m, now)}
}

// Register adds the API's path to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status, action := a.serve(w, r)
		a.Observe("baremetal", Path+" "+action, status, start)
	})
}

// serve answers one request; it returns the HTTP status and the action
// (bounded, for metrics).
func (a *API) serve(w http.ResponseWriter, r *http.Request) (int, string) {
	params, err := readParams(w, r)
	action := "other"
	if err != nil {
		return a.writeErr(w, r, err), action
	}
	switch params.Get(capi2.ParamAction) {
	case ActionResetDevicePasswd, ActionDescribeOperationResult, ActionDescriptionOperationResult, ActionDescribeDeviceList:
		action = params.Get(capi2.ParamAction)
	}
	p, err := a.authenticate(r, params)
	if err != nil {
		return a.writeErr(w, r, err), action
	}
	httpx.SetLogAttrs(r.Context(), slog.String("principal", p.ID), slog.String("action", action))
	req, err := Parse(params)
	defer sealer.Wipe(req.Passwd)
	if err != nil {
		return a.writeErr(w, r, err), action
	}
	data, err := a.do(r.Context(), p, req)
	if err != nil {
		return a.writeErr(w, r, err), action
	}
	writeJSON(w, http.StatusOK, answer{Code: codeOK, Message: "OK", Data: data})
	return http.StatusOK, action
}

// readParams takes the parameters from the query string (GET) or the form
// body (POST), never both: which one the signature covers must be plain.
func readParams(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	switch r.Method {
	case http.MethodGet:
		params, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter", Message: "the query string is malformed"}
		}
		return params, nil
	case http.MethodPost:
		if r.URL.RawQuery != "" {
			return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter",
				Message: "send the parameters either in the query string (GET) or in the form body (POST), not both"}
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
			return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter",
				Message: "a POST must send the parameters as application/x-www-form-urlencoded"}
		}
		body, err := dialecthttp.ReadBody(w, r, MaxBody)
		defer clear(body)
		if err != nil {
			return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter",
				Message: "the form body is unreadable or exceeds " + strconv.Itoa(MaxBody) + " bytes"}
		}
		params, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter", Message: "the form body is malformed"}
		}
		return params, nil
	}
	w.Header().Set("Allow", "GET, POST")
	return nil, &Error{Code: codeCommonParameter, Desc: "InvalidParameter.Method", Message: "use GET or a form POST", Err: errMethod}
}

var errMethod = errors.New("method not allowed")

// authenticate verifies the signature, takes the request from the key's
// rate budget and refuses a reused nonce. A throttled request does not use
// up its nonce.
func (a *API) authenticate(r *http.Request, params url.Values) (core.Principal, error) {
	var p core.Principal
	res, err := capi2.Verify(capi2.Request{Method: r.Method, Host: r.Host, Path: r.URL.Path, Params: params},
		a.SecretLookup(r.Context(), capi2.ErrUnknownSecretID, &p), a.Now())
	if err != nil {
		return core.Principal{}, fromSignature(err)
	}
	if err := a.Svc.Throttle(r.Context(), p, "baremetal"); err != nil {
		return core.Principal{}, err
	}
	if err := a.Svc.UseSignature(r.Context(), res.ReplayKey, res.Timestamp.Add(capi2.MaxClockSkew)); err != nil {
		return core.Principal{}, err
	}
	p.Address, p.RequestID = httpx.ClientAddr(r), httpx.RequestID(r.Context())
	return p, nil
}

func (a *API) do(ctx context.Context, p core.Principal, req Request) (any, error) {
	switch req.Action {
	case ActionResetDevicePasswd:
		policy := password.BareMetal()
		op, err := a.Svc.ResetPassword(ctx, p, core.ResetRequest{InstanceIDs: req.InstanceIDs, Mode: apiv1.ModeOnline,
			Password: req.Passwd, Policy: &policy, Require: core.RequireRunningGuest, NumberTask: true})
		if err != nil {
			return nil, err
		}
		n, err := a.Svc.TaskNumber(ctx, p, op.ID)
		if err != nil {
			return nil, err
		}
		return map[string]int64{"taskId": n}, nil
	case ActionDescribeOperationResult, ActionDescriptionOperationResult:
		op, err := a.Svc.OperationByTask(ctx, p, req.TaskID)
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(op.Items))
		for i, it := range op.Items {
			ids[i] = it.InstanceID
		}
		insts, err := a.Svc.InstancesByID(ctx, p, ids)
		if err != nil {
			return nil, err
		}
		return operationResult(req.TaskID, op, insts), nil
	case ActionDescribeDeviceList:
		q := core.SearchQuery{IDs: req.InstanceIDs, NameContains: req.Alias, Offset: req.Offset, Limit: req.Limit}
		list, total, err := a.Svc.SearchInstances(ctx, p, q)
		if err != nil {
			return nil, err
		}
		devices := make([]device, len(list))
		for i, in := range list {
			devices[i] = deviceOf(in)
		}
		return deviceList{TotalNum: total, DeviceList: devices}, nil
	}
	return nil, &Error{Code: codeCommonParameter, Desc: "InvalidAction", Message: "unknown Action"}
}

// answer is every answer's envelope.
type answer struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	CodeDesc string `json:"codeDesc,omitempty"`
	Data     any    `json:"data,omitempty"`
}

type subtask struct {
	InstanceID string `json:"instanceId"`
	// TaskStatus is the item's: 1 success, 2 failed, 4 not finished.
	TaskStatus int `json:"taskStatus"`
	// DeviceStatus and AgentAlive are the instance's own, now.
	DeviceStatus string `json:"deviceStatus"`
	AgentAlive   bool   `json:"agentAlive"`
	ErrorCode    string `json:"errorCode,omitempty"`
	Message      string `json:"message,omitempty"`
}

type result struct {
	TaskID int64 `json:"taskId"`
	Status int   `json:"status"`
	// TaskStatus repeats Status under the name the platform's SDKs read.
	TaskStatus    int       `json:"taskStatus"`
	SubtaskStatus []subtask `json:"subtaskStatus"`
}

func operationResult(n int64, op apiv1.Operation, insts map[string]apiv1.Instance) result {
	var succeeded, failed, unfinished int
	subs := make([]subtask, len(op.Items))
	for i, it := range op.Items {
		st := TaskUnfinished
		switch it.State {
		case apiv1.ItemSucceeded:
			st = TaskSuccess
			succeeded++
		case apiv1.ItemFailed:
			st = TaskFailed
			failed++
		default:
			unfinished++
		}
		sub := subtask{InstanceID: it.InstanceID, TaskStatus: st, DeviceStatus: "UNKNOWN", ErrorCode: it.ErrorCode, Message: it.Message}
		if in, ok := insts[it.InstanceID]; ok {
			sub.DeviceStatus, sub.AgentAlive = DeviceStatus(in.State), in.GuestAlive
		}
		subs[i] = sub
	}
	status := TaskStatus(succeeded, failed, unfinished)
	return result{TaskID: n, Status: status, TaskStatus: status, SubtaskStatus: subs}
}

// TaskStatus is a task's status from the numbers of its items that
// succeeded, failed and have not finished.
func TaskStatus(succeeded, failed, unfinished int) int {
	s, f, u := succeeded > 0, failed > 0, unfinished > 0
	switch {
	case s && f && u:
		return TaskAllThree
	case u && f:
		return TaskPartUnfinFailed
	case s && u:
		return TaskPartSuccessUnfin
	case s && f:
		return TaskPartSuccessFailed
	case u:
		return TaskUnfinished
	case f:
		return TaskFailed
	case s:
		return TaskSuccess
	}
	// A task without items cannot be made; call it finished.
	return TaskSuccess
}

// DeviceStatus is the API's name of a core state. They are the core's own
// names except STARTING, which the platform calls BOOTING.
func DeviceStatus(state string) string {
	if state == apiv1.StateStarting {
		return "BOOTING"
	}
	return state
}

type device struct {
	InstanceID    string `json:"instanceId"`
	Alias         string `json:"alias"`
	DeviceStatus  string `json:"deviceStatus"`
	OSType        string `json:"osType"`
	LoginUser     string `json:"loginUser"`
	AgentAlive    bool   `json:"agentAlive"`
	OperateStatus string `json:"operateStatus,omitempty"`
	CreateTime    string `json:"createTime"`
}

type deviceList struct {
	TotalNum   int      `json:"totalNum"`
	DeviceList []device `json:"deviceList"`
}

func deviceOf(in apiv1.Instance) device {
	d := device{InstanceID: in.ID, Alias: in.Name, DeviceStatus: DeviceStatus(in.State), OSType: in.OSType,
		LoginUser: in.AdminUser, AgentAlive: in.GuestAlive, CreateTime: in.CreatedAt.UTC().Format(time.DateTime)}
	if in.LatestOperation != nil {
		d.OperateStatus = in.LatestOperation.State
	}
	return d
}

// writeErr answers err and returns the HTTP status sent.
func (a *API) writeErr(w http.ResponseWriter, r *http.Request, err error) int {
	if dialecthttp.ClientGone(r, err) {
		return dialecthttp.StatusClientGone
	}
	var e *Error
	if !errors.As(err, &e) {
		e = fromCore(err)
	}
	if e.Code == codeDBError || e.Code == codeServerInternal {
		a.Log.ErrorContext(r.Context(), "bare-metal API request failed", "code", e.Code, "err", err)
	}
	status := http.StatusOK
	dialecthttp.SetRetryAfter(w, err)
	if errors.Is(err, errMethod) {
		status = http.StatusMethodNotAllowed
	}
	writeJSON(w, status, answer{Code: e.Code, Message: e.Message, CodeDesc: e.Desc})
	return status
}

// writeJSON answers v; answers may carry instance data, so no cache keeps them.
func writeJSON(w http.ResponseWriter, status int, v any) { dialecthttp.WriteJSON(w, status, v) }
