package tencent

import (
	"errors"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/sign/tc3"
)

// Error codes. The common ones are API 3.0's own (its "Error Codes" page);
// the others are those the SDK's cvm and bm packages list for each action.
// docs/api-tencent.md lists every one with when it is answered.
const (
	CodeInvalidAuthorization  = "AuthFailure.InvalidAuthorization"
	CodeSecretIDNotFound      = "AuthFailure.SecretIdNotFound"
	CodeSignatureExpire       = "AuthFailure.SignatureExpire"
	CodeSignatureFailure      = "AuthFailure.SignatureFailure"
	CodeInvalidAction         = "InvalidAction"
	CodeNoSuchVersion         = "NoSuchVersion"
	CodeMissingParameter      = "MissingParameter"
	CodeInvalidParameter      = "InvalidParameter"
	CodeInvalidParameterValue = "InvalidParameterValue"
	CodeParameterCombination  = "InvalidParameterCombination"
	CodeInvalidFilter         = "InvalidFilter"
	CodeRequestLimitExceeded  = "RequestLimitExceeded"
	CodeRequestSizeExceeded   = "RequestSizeLimitExceeded"
	CodeResourceNotFound      = "ResourceNotFound"
	CodeUnsupportedOperation  = "UnsupportedOperation"
	CodeInternalError         = "InternalError"

	// cvm 2017-03-12.
	CodeInstanceNotFound    = "InvalidInstanceId.NotFound"
	CodeInstanceIDMalformed = "InvalidInstanceId.Malformed"
	CodeInvalidPassword     = "InvalidParameterValue.InvalidPassword"
	CodeLimitExceeded       = "InvalidParameterValue.LimitExceeded"
	CodeTooLong             = "InvalidParameterValue.TooLong"
	CodeOperationInProgress = "OperationDenied.InstanceOperationInProgress"
	CodeInstanceStatePrefix = "UnsupportedOperation.InstanceState" // + Running, Stopped, ...

	// bm 2018-04-23.
	CodeAgentOffline     = "FailedOperation.TscAgentOffline"
	CodeFlowBusy         = "ResourceInUse.FlowBusy"
	CodeInvalidOperation = "UnsupportedOperation.InvalidOperation"
)

// Error is an answer in the API's error format: a code of the list above
// and a message that never quotes a secret.
type Error = dialecthttp.Error[string]

func apiErr(code, msg string) *Error { return &Error{Code: code, Message: msg} }

const internalMessage = "internal error; quote the RequestId to the operator"

// fromCore maps a core error to the code of service. Refusals whose code
// depends on the instances' states are mapped by API.refusal first.
func fromCore(service string, err error) *Error {
	var ce *core.Error
	if !errors.As(err, &ce) {
		return &Error{Code: CodeInternalError, Message: internalMessage, Err: err}
	}
	msg := ce.Message
	bm := service == ServiceBM
	switch ce.Code {
	case core.CodeInstanceNotFound:
		code := CodeInstanceNotFound
		if bm {
			code = CodeResourceNotFound
		}
		return &Error{Code: code, Message: core.AppendIDs(msg, ce.Details, "unknownIds")}
	case core.CodeTaskNotFound:
		return &Error{Code: CodeResourceNotFound, Message: msg}
	case core.CodeInstanceBusy:
		code := CodeOperationInProgress
		if bm {
			code = CodeFlowBusy
		}
		return &Error{Code: code, Message: core.AppendIDs(msg, ce.Details, "busyIds")}
	case core.CodeGuestNotAlive:
		return &Error{Code: CodeAgentOffline, Message: core.AppendIDs(msg, ce.Details, "instanceIds")}
	case core.CodeInstanceNotRunning, core.CodeInstanceNotStopped, core.CodeConsentRequired:
		code := CodeUnsupportedOperation
		if bm {
			code = CodeInvalidOperation
		}
		return &Error{Code: code, Message: core.AppendIDs(msg, ce.Details, "instanceIds")}
	case core.CodePasswordPolicy:
		code := CodeInvalidPassword
		if bm {
			code = CodeInvalidParameter
		}
		return &Error{Code: code, Message: msg}
	case core.CodeTooManyInstances:
		return &Error{Code: CodeLimitExceeded, Message: msg}
	case core.CodeEmptyInstanceList:
		return &Error{Code: CodeMissingParameter, Message: msg}
	case core.CodeDuplicateInstanceID:
		return &Error{Code: CodeInvalidParameterValue, Message: core.AppendIDs(msg, ce.Details, "duplicateIds")}
	case core.CodeInvalidArgument:
		return &Error{Code: CodeInvalidParameterValue, Message: msg}
	case core.CodeUnauthenticated:
		return &Error{Code: CodeSecretIDNotFound, Message: "the SecretId is unknown or revoked"}
	case core.CodeRateLimited:
		// Tencent's SDKs retry this code by themselves when configured to
		// (RateLimitExceededMaxRetries).
		return &Error{Code: CodeRequestLimitExceeded, Message: "too many requests for this SecretId; retry later"}
	case core.CodeForbidden:
		return &Error{Code: "UnauthorizedOperation", Message: msg}
	}
	return &Error{Code: CodeInternalError, Message: internalMessage, Err: err}
}

// fromSignature maps a tc3 verification error to its code.
func fromSignature(service string, err error) *Error {
	if code, msg, ok := dialecthttp.MatchSentinel(err, "tc3: ", signatureErrors); ok {
		return &Error{Code: code, Message: msg}
	}
	// The key lookup itself failed: a core error from the store.
	return fromCore(service, err)
}

var signatureErrors = []dialecthttp.Sentinel[string]{
	{Err: tc3.ErrMissingAuthorization, Code: CodeInvalidAuthorization, Message: "the Authorization header is missing; sign the request with TC3-HMAC-SHA256"},
	{Err: tc3.ErrMalformedAuthorization, Code: CodeInvalidAuthorization},
	{Err: tc3.ErrWrongService, Code: CodeInvalidAuthorization, Message: "the credential scope must name the service of X-TC-Version: " + scopeHint},
	{Err: tc3.ErrUnsignedPayload, Code: CodeInvalidAuthorization, Message: "the body must be signed: unsigned payloads are not accepted"},
	{Err: tc3.ErrInvalidTimestamp, Code: CodeInvalidParameter, Message: "X-TC-Timestamp must be the signing time in unix seconds"},
	{Err: tc3.ErrStaleTimestamp, Code: CodeSignatureExpire, Message: "X-TC-Timestamp is more than 5 minutes away from the server's time"},
	{Err: tc3.ErrScopeDate, Code: CodeSignatureFailure, Message: "the credential scope's date must be the UTC date of X-TC-Timestamp"},
	{Err: tc3.ErrUnknownSecretID, Code: CodeSecretIDNotFound, Message: "the SecretId is unknown or revoked"},
	{Err: tc3.ErrBadSignature, Code: CodeSignatureFailure, Message: "the signature does not match the request; check the SecretKey, the Host and Content-Type headers and the body"},
}

const scopeHint = "cvm for 2017-03-12, bm for 2018-04-23"
