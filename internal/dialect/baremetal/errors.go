package baremetal

import (
	"errors"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/sign/capi2"
)

// Codes of the bare-metal API. The common ones (4xxx, 6000) are the API 2.0
// platform's; the module ones (9xxx, 1xxxx) are the document's. Answers are
// HTTP 200 with the code in the body, as the platform does, except a wrong
// HTTP method.
const (
	codeOK              = 0
	codeCommonParameter = 4000 // a common parameter is missing or wrong, or the Action is unknown
	codeAuthFailure     = 4100 // unknown SecretId or a signature that does not match
	codeRequestLimit    = 4400 // RequestLimitExceeded: the key's rate budget is spent
	codeReplay          = 4500 // stale Timestamp, or a Nonce already used
	codeServerInternal  = 6000
	codeDBError         = 9001  // InternalError.DbError
	codeInvalidParam    = 10001 // InvalidParameter
	codeIncorrectStatus = 12002 // OperationDenied.IncorrectInstanceStatus
	codeAgentNotAlive   = 12006 // OperationDenied.TsysAgentNotAlive
)

// Error is a refused request: a code, its description and a message that
// never quotes a parameter value.
type Error = dialecthttp.Error[int]

func invalidParameter(msg string) *Error {
	return &Error{Code: codeInvalidParam, Desc: "InvalidParameter", Message: msg}
}

// fromCore maps a core error to the document's module codes.
func fromCore(err error) *Error {
	var ce *core.Error
	if !errors.As(err, &ce) {
		return &Error{Code: codeServerInternal, Desc: "InternalError", Message: "internal error; quote the request id to the operator", Err: err}
	}
	switch ce.Code {
	case core.CodeStoreUnavailable:
		return &Error{Code: codeDBError, Desc: "InternalError.DbError", Message: ce.Message, Err: err}
	case core.CodeInstanceNotRunning, core.CodeInstanceNotStopped, core.CodeInstanceBusy:
		key := "instanceIds"
		if ce.Code == core.CodeInstanceBusy {
			key = "busyIds"
		}
		return &Error{Code: codeIncorrectStatus, Desc: "OperationDenied.IncorrectInstanceStatus", Message: core.AppendIDs(ce.Message, ce.Details, key)}
	case core.CodeGuestNotAlive:
		return &Error{Code: codeAgentNotAlive, Desc: "OperationDenied.TsysAgentNotAlive", Message: core.AppendIDs(ce.Message, ce.Details, "instanceIds")}
	case core.CodeInstanceNotFound:
		return invalidParameter(core.AppendIDs("instanceIds.N: "+ce.Message, ce.Details, "unknownIds"))
	case core.CodeDuplicateInstanceID:
		return invalidParameter(core.AppendIDs("instanceIds.N: "+ce.Message, ce.Details, "duplicateIds"))
	case core.CodePasswordPolicy:
		return invalidParameter("passwd: " + ce.Message)
	case core.CodeInvalidArgument, core.CodeTooManyInstances, core.CodeEmptyInstanceList, core.CodeTaskNotFound:
		return invalidParameter(ce.Message)
	case core.CodeUnauthenticated:
		return &Error{Code: codeAuthFailure, Desc: "AuthFailure.SecretIdNotFound", Message: "the SecretId is unknown or revoked"}
	case core.CodeRateLimited:
		return &Error{Code: codeRequestLimit, Desc: "RequestLimitExceeded", Message: "too many requests for this SecretId; retry after the Retry-After seconds", Err: err}
	case core.CodeReplayedRequest:
		return &Error{Code: codeReplay, Desc: "AuthFailure.ReplayAttack", Message: "this Nonce was already used with this Timestamp and SecretId"}
	}
	return &Error{Code: codeServerInternal, Desc: "InternalError", Message: "internal error; quote the request id to the operator", Err: err}
}

// fromSignature maps a capi2 verification error.
func fromSignature(err error) *Error {
	if c, msg, ok := dialecthttp.MatchSentinel(err, "capi2: ", signatureErrors); ok {
		return &Error{Code: c.code, Desc: c.desc, Message: msg}
	}
	return fromCore(err)
}

type codeDesc struct {
	code int
	desc string
}

// signatureErrors: the capi2 errors' own texts are the messages.
var signatureErrors = []dialecthttp.Sentinel[codeDesc]{
	{Err: capi2.ErrDuplicateParameter, Code: codeDesc{codeCommonParameter, "InvalidParameter"}},
	{Err: capi2.ErrMissingParameter, Code: codeDesc{codeCommonParameter, "MissingParameter"}},
	{Err: capi2.ErrUnsupportedMethod, Code: codeDesc{codeCommonParameter, "InvalidParameter.SignatureMethod"}},
	{Err: capi2.ErrInvalidTimestamp, Code: codeDesc{codeCommonParameter, "InvalidParameter.Timestamp"}},
	{Err: capi2.ErrInvalidNonce, Code: codeDesc{codeCommonParameter, "InvalidParameter.Nonce"}},
	{Err: capi2.ErrStaleTimestamp, Code: codeDesc{codeReplay, "AuthFailure.RequestExpired"}},
	{Err: capi2.ErrUnknownSecretID, Code: codeDesc{codeAuthFailure, "AuthFailure.SecretIdNotFound"}},
	{Err: capi2.ErrBadSignature, Code: codeDesc{codeAuthFailure, "AuthFailure.SignatureFailure"}},
}
