package actionapi

import (
	"errors"
	"net/http"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/dialect/dialecthttp"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

// Error codes of the action API. They are stable: scripts key on them.
// docs/api-action.md lists each with its HTTP status.
const (
	codeInstanceNotFound   = "INVALID_INSTANCE_NOT_FOUND"
	codeNotStopped         = "OPERATION_DENIED_INSTANCE_NOT_STOPPED"
	codeNotRunning         = "OPERATION_DENIED_INSTANCE_NOT_RUNNING"
	codeInstanceBusy       = "OPERATION_DENIED_INSTANCE_BUSY"
	codeMissingParameter   = "MISSING_PARAMETER"
	codeInvalidParameter   = "INVALID_PARAMETER"
	codeTooManyInstances   = "INVALID_PARAMETER_TOO_MANY_INSTANCES"
	codeDuplicateInstance  = "INVALID_PARAMETER_DUPLICATE_INSTANCE_ID"
	codeInvalidPassword    = "INVALID_PASSWORD"
	codeInvalidAction      = "INVALID_ACTION"
	codeInvalidJSON        = "INVALID_JSON"
	codeInvalidContentType = "INVALID_CONTENT_TYPE"
	codeBodyTooLarge       = "REQUEST_BODY_TOO_LARGE"
	codeMethodNotAllowed   = "METHOD_NOT_ALLOWED"
	codeMissingAuth        = "AUTH_FAILURE_MISSING_AUTHORIZATION"
	codeMalformedAuth      = "AUTH_FAILURE_INVALID_AUTHORIZATION"
	codeSignatureMethod    = "AUTH_FAILURE_SIGNATURE_METHOD_NOT_SUPPORTED"
	codeInvalidTimestamp   = "AUTH_FAILURE_INVALID_TIMESTAMP"
	codeTimestampExpired   = "AUTH_FAILURE_TIMESTAMP_EXPIRED"
	codeKeyNotFound        = "AUTH_FAILURE_ACCESS_KEY_NOT_FOUND"
	codeSignatureMismatch  = "AUTH_FAILURE_SIGNATURE_MISMATCH"
	codeReplayed           = "AUTH_FAILURE_REQUEST_REPLAYED"
	codeSignatureReused    = "AUTH_FAILURE_SIGNATURE_REUSED"
	codeRequestLimit       = "REQUEST_LIMIT_EXCEEDED"
	codeDatabase           = "INTERNAL_ERROR_DATABASE"
	codeInternal           = "INTERNAL_ERROR"
)

// statusOf is the HTTP status of each code.
var statusOf = map[string]int{
	codeInstanceNotFound:   http.StatusNotFound,
	codeNotStopped:         http.StatusBadRequest,
	codeNotRunning:         http.StatusForbidden,
	codeInstanceBusy:       http.StatusConflict,
	codeMissingParameter:   http.StatusBadRequest,
	codeInvalidParameter:   http.StatusBadRequest,
	codeTooManyInstances:   http.StatusBadRequest,
	codeDuplicateInstance:  http.StatusBadRequest,
	codeInvalidPassword:    http.StatusBadRequest,
	codeInvalidAction:      http.StatusBadRequest,
	codeInvalidJSON:        http.StatusBadRequest,
	codeInvalidContentType: http.StatusUnsupportedMediaType,
	codeBodyTooLarge:       http.StatusRequestEntityTooLarge,
	codeMethodNotAllowed:   http.StatusMethodNotAllowed,
	codeMissingAuth:        http.StatusUnauthorized,
	codeMalformedAuth:      http.StatusUnauthorized,
	codeSignatureMethod:    http.StatusUnauthorized,
	codeInvalidTimestamp:   http.StatusUnauthorized,
	codeTimestampExpired:   http.StatusUnauthorized,
	codeKeyNotFound:        http.StatusUnauthorized,
	codeSignatureMismatch:  http.StatusUnauthorized,
	codeReplayed:           http.StatusUnauthorized,
	codeSignatureReused:    http.StatusUnauthorized,
	codeRequestLimit:       http.StatusTooManyRequests,
	codeDatabase:           http.StatusServiceUnavailable,
	codeInternal:           http.StatusInternalServerError,
}

// Error is an answer of the action API's own: a code of the table above
// and a message that never quotes a secret.
type Error = dialecthttp.Error[string]

func apiErr(code, msg string) *Error { return &Error{Code: code, Message: msg} }

// fromCore maps a core error to the action API's code. The document's own
// codes come first; the others are fleetpass's, listed in the docs.
func fromCore(err error) *Error {
	var ce *core.Error
	if !errors.As(err, &ce) {
		return &Error{Code: codeInternal, Message: "internal error; quote the requestId to the operator", Err: err}
	}
	msg := ce.Message
	switch ce.Code {
	case core.CodeInstanceNotFound:
		return &Error{Code: codeInstanceNotFound, Message: core.AppendIDs(msg, ce.Details, "unknownIds")}
	case core.CodeInstanceNotStopped, core.CodeConsentRequired:
		return &Error{Code: codeNotStopped, Message: core.AppendIDs("operations on instances that are not stopped are not supported", ce.Details, "instanceIds")}
	case core.CodeInstanceNotRunning, core.CodeGuestNotAlive:
		return &Error{Code: codeNotRunning, Message: core.AppendIDs(msg, ce.Details, "instanceIds")}
	case core.CodeInstanceBusy:
		return &Error{Code: codeInstanceBusy, Message: core.AppendIDs(msg, ce.Details, "busyIds")}
	case core.CodePasswordPolicy:
		return &Error{Code: codeInvalidPassword, Message: msg}
	case core.CodeTooManyInstances:
		return &Error{Code: codeTooManyInstances, Message: msg}
	case core.CodeEmptyInstanceList:
		return &Error{Code: codeMissingParameter, Message: msg}
	case core.CodeDuplicateInstanceID:
		return &Error{Code: codeDuplicateInstance, Message: core.AppendIDs(msg, ce.Details, "duplicateIds")}
	case core.CodeInvalidArgument:
		return &Error{Code: codeInvalidParameter, Message: msg}
	case core.CodeUnauthenticated:
		return &Error{Code: codeKeyNotFound, Message: "the access key is unknown or revoked"}
	case core.CodeReplayedRequest:
		return &Error{Code: codeReplayed, Message: msg}
	case core.CodeSignatureReused:
		return &Error{Code: codeSignatureReused, Message: msg}
	case core.CodeRateLimited:
		return &Error{Code: codeRequestLimit, Message: "too many requests for this access key; retry after the Retry-After seconds", Err: err}
	case core.CodeStoreUnavailable:
		return &Error{Code: codeDatabase, Message: msg, Err: err}
	}
	return &Error{Code: codeInternal, Message: "internal error; quote the requestId to the operator", Err: err}
}

// fromSignature maps a zc2 verification error to the action API's code.
func fromSignature(err error) *Error {
	if code, msg, ok := dialecthttp.MatchSentinel(err, "zc2: ", signatureErrors); ok {
		return &Error{Code: code, Message: msg}
	}
	// The key lookup itself failed: a core error from the store.
	return fromCore(err)
}

var signatureErrors = []dialecthttp.Sentinel[string]{
	{Err: zc2.ErrMissingAuthorization, Code: codeMissingAuth, Message: "the Authorization header is missing; sign the request with ZC2-HMAC-SHA256"},
	{Err: zc2.ErrMalformedAuthorization, Code: codeMalformedAuth},
	{Err: zc2.ErrUnsupportedMethod, Code: codeSignatureMethod},
	{Err: zc2.ErrInvalidTimestamp, Code: codeInvalidTimestamp, Message: "X-ZC-Timestamp must be the signing time in unix seconds"},
	{Err: zc2.ErrStaleTimestamp, Code: codeTimestampExpired, Message: "X-ZC-Timestamp is more than 5 minutes away from the server's time"},
	{Err: zc2.ErrUnknownKey, Code: codeKeyNotFound, Message: "the access key is unknown or revoked"},
	{Err: zc2.ErrBadSignature, Code: codeSignatureMismatch, Message: "the signature does not match the request; check the secret, the Host and Content-Type headers and the body"},
}
