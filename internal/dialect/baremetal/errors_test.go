package baremetal

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/sign/capi2"
)

func TestCoreErrorsMapToTheDocumentsModuleCodes(t *testing.T) {
	for _, c := range []struct {
		core string
		code int
		desc string
	}{
		{core.CodeStoreUnavailable, 9001, "InternalError.DbError"},
		{core.CodeInstanceNotRunning, 12002, "OperationDenied.IncorrectInstanceStatus"},
		{core.CodeInstanceBusy, 12002, "OperationDenied.IncorrectInstanceStatus"},
		{core.CodeGuestNotAlive, 12006, "OperationDenied.TsysAgentNotAlive"},
		{core.CodeInstanceNotFound, 10001, "InvalidParameter"},
		{core.CodePasswordPolicy, 10001, "InvalidParameter"},
		{core.CodeTaskNotFound, 10001, "InvalidParameter"},
		{core.CodeReplayedRequest, 4500, "AuthFailure.ReplayAttack"},
		{core.CodeRateLimited, 4400, "RequestLimitExceeded"},
		{core.CodeInternal, 6000, "InternalError"},
	} {
		t.Run(c.core, func(t *testing.T) {
			e := fromCore(fmt.Errorf("wrapped: %w", &core.Error{Code: c.core, Message: "m", Err: errors.New("cause")}))
			if e.Code != c.code || e.Desc != c.desc {
				t.Fatalf("got %d %s, want %d %s", e.Code, e.Desc, c.code, c.desc)
			}
		})
	}
}

func TestSignatureErrorsMapToCommonCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{capi2.ErrMissingParameter, 4000}, {capi2.ErrDuplicateParameter, 4000}, {capi2.ErrUnsupportedMethod, 4000},
		{capi2.ErrInvalidTimestamp, 4000}, {capi2.ErrInvalidNonce, 4000}, {capi2.ErrStaleTimestamp, 4500},
		{capi2.ErrUnknownSecretID, 4100}, {capi2.ErrBadSignature, 4100},
	} {
		if e := fromSignature(fmt.Errorf("%w: detail", c.err)); e.Code != c.code {
			t.Errorf("%v: %d, want %d", c.err, e.Code, c.code)
		}
	}
}
