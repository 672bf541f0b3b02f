package core

import (
	"errors"
	"fmt"
	"strings"
)

// Error codes of the core service. Dialects map them to their own wire
// codes; the native API uses them as they are (see docs/api.md).
const (
	CodeInvalidArgument      = "INVALID_ARGUMENT"
	CodeEmptyInstanceList    = "EMPTY_INSTANCE_LIST"
	CodeDuplicateInstanceID  = "DUPLICATE_INSTANCE_ID"
	CodeTooManyInstances     = "TOO_MANY_INSTANCES"
	CodeInstanceNotFound     = "INSTANCE_NOT_FOUND"
	CodeOperationNotFound    = "OPERATION_NOT_FOUND"
	CodeKeyNotFound          = "KEY_NOT_FOUND"
	CodeTenantNotFound       = "TENANT_NOT_FOUND"
	CodeTenantExists         = "TENANT_EXISTS"
	CodeInstanceExists       = "INSTANCE_EXISTS"
	CodePasswordPolicy       = "PASSWORD_POLICY_VIOLATION"
	CodeConsentRequired      = "FORCED_SHUTDOWN_CONSENT_REQUIRED"
	CodeInstanceBusy         = "INSTANCE_BUSY"
	CodeIdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED"
	CodeUnauthenticated      = "UNAUTHENTICATED"
	CodeForbidden            = "FORBIDDEN"
	CodeUnknownDriver        = "UNKNOWN_DRIVER"
	CodeInternal             = "INTERNAL"
	CodeStoreUnavailable     = "STORE_UNAVAILABLE"
	CodeInstanceNotRunning   = "INSTANCE_NOT_RUNNING"
	CodeInstanceNotStopped   = "INSTANCE_NOT_STOPPED"
	CodeGuestNotAlive        = "GUEST_NOT_ALIVE"
	CodeHostNotFound         = "HOST_NOT_FOUND"
	CodeHostExists           = "HOST_EXISTS"
	CodeMethodUnsupported    = "RESET_METHOD_UNSUPPORTED"
)

// Error is a failure the caller can act on: a stable code, a message for
// people that never contains a secret, and optional structured details
// (the unknown ids, the broken password rules).
type Error struct {
	Code    string
	Message string
	// Field is the request field the error is about, by its apiv1 JSON
	// name ("mode", "instanceIds", "bmc.user"), when there is one, so that
	// a front door can name it in its own words (the CLI as a flag)
	// without reading the message. The message names it as a prefix
	// "Field: ..." (fieldErrorf) or in parentheses "(Field)".
	Field   string
	Details map[string]any
	// Err is the underlying cause, kept for logs (never shown to callers
	// for internal errors).
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// fieldErrorf is an error about one request field: its message is
// "field: " and the formatted reason.
func fieldErrorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// storeFailed answers a failed database call: the one failure callers may
// retry because nothing was changed. A core error passes through.
func storeFailed(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return &Error{Code: CodeStoreUnavailable, Message: "the server's database failed; nothing was changed", Err: err}
}

// internalErr answers any other failure of the server's own (a secret that
// does not open, no randomness): the database is fine, and saying it failed
// would send operators to the wrong place.
func internalErr(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return &Error{Code: CodeInternal, Message: "internal error; see the server log for the request id", Err: err}
}

// CodeOf returns the code of a core error, or CodeInternal.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// AppendIDs appends the instance ids found under key in a core error's
// details to msg, at most ten of them: for wire formats that have no field
// for the ids (the documented API dialects).
func AppendIDs(msg string, details map[string]any, key string) string {
	ids, _ := details[key].([]string)
	if len(ids) == 0 {
		return msg
	}
	const most = 10
	list := strings.Join(ids[:min(len(ids), most)], ", ")
	if len(ids) > most {
		list += fmt.Sprintf(" and %d more", len(ids)-most)
	}
	return msg + ": " + list
}
