// Package dialecthttp holds what the documented API dialects
// (internal/dialect/actionapi, baremetal, tencent) do alike at the HTTP
// boundary: the handles every dialect holds, per-request metrics, reading a
// bounded body that may hold a password, the key lookup of a signature
// check, and the pieces of an error answer (a client that went away,
// Retry-After, no caching). Each dialect keeps its own codes, messages and
// answer format; only their plumbing lives here.
package dialecthttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/metrics"
)

// Front is what a dialect's API holds: the core service behind it, its
// log, the server's metrics and the clock signatures are checked against.
type Front struct {
	Svc     *core.Service
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time
}

// NewFront makes a Front; a nil now is time.Now.
func NewFront(svc *core.Service, log *slog.Logger, m *metrics.Metrics, now func() time.Time) Front {
	if now == nil {
		now = time.Now
	}
	return Front{Svc: svc, Log: log, Metrics: m, Now: now}
}

// Observe records one request of the dialect: its route (a bounded label:
// path and known action) and the status sent.
func (f Front) Observe(dialect, route string, status int, start time.Time) {
	f.Metrics.HTTPRequests.WithLabelValues(dialect, route, strconv.Itoa(status)).Inc()
	f.Metrics.HTTPDuration.WithLabelValues(dialect, route).Observe(time.Since(start).Seconds())
}

// SecretLookup is the key lookup a signature check calls: the key's secret
// from the core, its principal kept in *p. An unknown or revoked key is
// the signature package's own sentinel (unknown), so that the check
// answers it in the dialect's words; any other failure is the core's.
func (f Front) SecretLookup(ctx context.Context, unknown error, p *core.Principal) func(id string) ([]byte, error) {
	return func(id string) ([]byte, error) {
		secret, principal, err := f.Svc.KeySecret(ctx, id)
		if core.CodeOf(err) == core.CodeUnauthenticated {
			return nil, unknown
		}
		*p = principal
		return secret, err
	}
}

// ErrBodyTooLarge is ReadBody's error for a body over its limit.
var ErrBodyTooLarge = errors.New("the request body is too large")

// ReadBody reads r's body, at most max bytes: a longer one is
// ErrBodyTooLarge, any other failure is returned as it is. The body may
// hold a password: the caller clears it once the request is answered.
func ReadBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		clear(body)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, ErrBodyTooLarge
		}
		return nil, err
	}
	return body, nil
}

// StatusClientGone is recorded for a request whose client went away before
// its answer: nginx's 499, never sent.
const StatusClientGone = 499

// ClientGone reports whether err is the cancellation of a request whose
// client went away: nobody reads an answer, so none is written.
func ClientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && r.Context().Err() != nil
}

// SetRetryAfter sets Retry-After (whole seconds) when the core says when
// to retry (a spent rate budget).
func SetRetryAfter(w http.ResponseWriter, err error) {
	if d := core.RetryAfter(err); d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)))
	}
}

// WriteJSON answers v with status. Answers may carry instance data, so no
// cache keeps them.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, status, v)
}

// DecodeObject decodes data into v when it is not blank: exactly one JSON
// value. Its error says what is wrong without quoting the input; a wrong
// type is named by field through fieldFormat (a format of the field's name
// and the type wanted, e.g. "field %q must be %s"), in the dialect's words.
func DecodeObject(data []byte, v any, fieldFormat string) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return errors.New(jsonProblem(err, fieldFormat))
	}
	if dec.More() {
		return errMoreThanOne
	}
	return nil
}

var errMoreThanOne = errors.New("more than one JSON value")

// IsMoreThanOne reports whether DecodeObject's err is a body holding more
// than one JSON value (dialects word it apart from a malformed one).
func IsMoreThanOne(err error) bool { return errors.Is(err, errMoreThanOne) }

func jsonProblem(err error, fieldFormat string) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf(fieldFormat, te.Field, te.Type)
		}
		return "it must be a JSON object"
	}
	return "malformed"
}

// Sentinel maps one sentinel error of a signature package (zc2, capi2,
// tc3) to a dialect's code (C: a string, or a code and its description)
// and message.
type Sentinel[C any] struct {
	Err     error
	Code    C
	Message string
}

// MatchSentinel finds the first sentinel that err is and returns its code
// and message: the sentinel's own, else err's text less prefix (the
// signature packages name the problem without quoting the input). ok is
// false when err is none of them: the key lookup itself failed.
func MatchSentinel[C any](err error, prefix string, table []Sentinel[C]) (code C, msg string, ok bool) {
	for _, m := range table {
		if errors.Is(err, m.Err) {
			msg := m.Message
			if msg == "" {
				msg = strings.TrimPrefix(err.Error(), prefix)
			}
			return m.Code, msg, true
		}
	}
	return code, "", false
}

// Error is a dialect's refusal: a code of its own table (C: a string, or
// a number with its description in Desc) and a message that never quotes
// a secret or a parameter's value. Each dialect names it Error by alias.
type Error[C comparable] struct {
	Code    C
	Desc    string
	Message string
	// Err is the cause, for the server's log only.
	Err error
}

func (e *Error[C]) Error() string {
	if e.Desc != "" {
		return fmt.Sprintf("(%v)%s: %s", e.Code, e.Desc, e.Message)
	}
	return fmt.Sprintf("%v: %s", e.Code, e.Message)
}

func (e *Error[C]) Unwrap() error { return e.Err }
