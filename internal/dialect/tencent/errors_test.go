package tencent

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/sign/tc3"
)

func TestFromCore(t *testing.T) {
	for _, tc := range []struct {
		core    string
		cvm, bm string
	}{
		{core.CodeInstanceNotFound, CodeInstanceNotFound, CodeResourceNotFound},
		{core.CodeInstanceBusy, CodeOperationInProgress, CodeFlowBusy},
		{core.CodeGuestNotAlive, CodeAgentOffline, CodeAgentOffline},
		{core.CodeInstanceNotRunning, CodeUnsupportedOperation, CodeInvalidOperation},
		{core.CodePasswordPolicy, CodeInvalidPassword, CodeInvalidParameter},
		{core.CodeTooManyInstances, CodeLimitExceeded, CodeLimitExceeded},
		{core.CodeEmptyInstanceList, CodeMissingParameter, CodeMissingParameter},
		{core.CodeTaskNotFound, CodeResourceNotFound, CodeResourceNotFound},
		{core.CodeUnauthenticated, CodeSecretIDNotFound, CodeSecretIDNotFound},
		{core.CodeStoreUnavailable, CodeInternalError, CodeInternalError},
		{"SOMETHING_NEW", CodeInternalError, CodeInternalError},
	} {
		err := &core.Error{Code: tc.core, Message: "m", Details: map[string]any{"unknownIds": []string{id1}}}
		if got := fromCore(ServiceCVM, err).Code; got != tc.cvm {
			t.Errorf("cvm %s: %s, want %s", tc.core, got, tc.cvm)
		}
		if got := fromCore(ServiceBM, err).Code; got != tc.bm {
			t.Errorf("bm %s: %s, want %s", tc.core, got, tc.bm)
		}
	}
	if e := fromCore(ServiceCVM, errors.New("disk on fire")); e.Code != CodeInternalError || strings.Contains(e.Message, "fire") {
		t.Errorf("a plain error is internal and not shown: %+v", e)
	}
}

func TestFromSignature(t *testing.T) {
	for err, want := range map[error]string{
		tc3.ErrMissingAuthorization:   CodeInvalidAuthorization,
		tc3.ErrMalformedAuthorization: CodeInvalidAuthorization,
		tc3.ErrWrongService:           CodeInvalidAuthorization,
		tc3.ErrUnsignedPayload:        CodeInvalidAuthorization,
		tc3.ErrInvalidTimestamp:       CodeInvalidParameter,
		tc3.ErrStaleTimestamp:         CodeSignatureExpire,
		tc3.ErrScopeDate:              CodeSignatureFailure,
		tc3.ErrUnknownSecretID:        CodeSecretIDNotFound,
		tc3.ErrBadSignature:           CodeSignatureFailure,
	} {
		wrapped := fmt.Errorf("%w: detail", err)
		if got := fromSignature(ServiceCVM, wrapped); got.Code != want || got.Message == "" {
			t.Errorf("%v: %+v, want %s", err, got, want)
		}
	}
	if got := fromSignature(ServiceCVM, &core.Error{Code: core.CodeStoreUnavailable}); got.Code != CodeInternalError {
		t.Errorf("a failed key lookup: %+v", got)
	}
}
