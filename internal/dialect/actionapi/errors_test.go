package actionapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

func TestCoreErrorsMapToTheAPIsCodes(t *testing.T) {
	for _, c := range []struct {
		core   *core.Error
		code   string
		status int
	}{
		{&core.Error{Code: core.CodeInstanceNotFound, Message: "1 instance(s) not found", Details: map[string]any{"unknownIds": []string{"ins-x"}}}, codeInstanceNotFound, 404},
		{&core.Error{Code: core.CodeInstanceNotStopped}, codeNotStopped, 400},
		{&core.Error{Code: core.CodeInstanceNotRunning}, codeNotRunning, 403},
		{&core.Error{Code: core.CodeGuestNotAlive}, codeNotRunning, 403},
		{&core.Error{Code: core.CodeInstanceBusy}, codeInstanceBusy, 409},
		{&core.Error{Code: core.CodePasswordPolicy}, codeInvalidPassword, 400},
		{&core.Error{Code: core.CodeTooManyInstances}, codeTooManyInstances, 400},
		{&core.Error{Code: core.CodeDuplicateInstanceID}, codeDuplicateInstance, 400},
		{&core.Error{Code: core.CodeReplayedRequest}, codeReplayed, 401},
		{&core.Error{Code: core.CodeSignatureReused}, codeSignatureReused, 401},
		{&core.Error{Code: core.CodeRateLimited}, codeRequestLimit, 429},
		{&core.Error{Code: core.CodeStoreUnavailable, Err: errors.New("disk full")}, codeDatabase, 503},
		{&core.Error{Code: core.CodeInternal, Err: errors.New("boom")}, codeInternal, 500},
	} {
		t.Run(c.core.Code, func(t *testing.T) {
			e := fromCore(fmt.Errorf("wrapped: %w", c.core))
			if e.Code != c.code || statusOf[e.Code] != c.status {
				t.Fatalf("got %s %d, want %s %d", e.Code, statusOf[e.Code], c.code, c.status)
			}
			if strings.Contains(e.Message, "disk full") || strings.Contains(e.Message, "boom") {
				t.Errorf("an internal cause reached the message: %s", e.Message)
			}
		})
	}
	if e := fromCore(errors.New("not a core error")); e.Code != codeInternal {
		t.Errorf("plain error: %s", e.Code)
	}
	if e := fromCore(&core.Error{Code: core.CodeInstanceNotFound, Message: "not found", Details: map[string]any{"unknownIds": []string{"ins-a", "ins-b"}}}); e.Message != "not found: ins-a, ins-b" {
		t.Errorf("ids not listed: %s", e.Message)
	}
}

func TestEveryCodeHasAStatus(t *testing.T) {
	for _, err := range []error{zc2.ErrMissingAuthorization, zc2.ErrMalformedAuthorization, zc2.ErrUnsupportedMethod,
		zc2.ErrInvalidTimestamp, zc2.ErrStaleTimestamp, zc2.ErrUnknownKey, zc2.ErrBadSignature} {
		if e := fromSignature(fmt.Errorf("%w: detail", err)); statusOf[e.Code] != http.StatusUnauthorized {
			t.Errorf("%v: %s", err, e.Code)
		}
	}
}
