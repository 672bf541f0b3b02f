// Package capi2 verifies and makes the signatures of the bare-metal API
// (GET or POST /v2/index.php?Action=...): the classic cloud API 2.0 scheme.
//
// Every request carries the common parameters Action, Timestamp (unix
// seconds), Nonce (a positive integer), SecretId, SignatureMethod (HmacSHA1,
// the default, or HmacSHA256) and Signature, beside its own. The signature is
//
//	stringToSign = METHOD + host + path + "?" + k1=v1&k2=v2&...
//	signature    = base64(hmac(secret, stringToSign))
//
// where the parameters are all but Signature, sorted by name (byte order),
// with their decoded values as they are, not URL-encoded. The same applies
// to a query string (GET) and a form body (POST); the caller passes the
// decoded url.Values of whichever carried the parameters.
//
// Because values are not encoded, different parameter sets can share a
// string to sign ({a: "1&b=2"} and {a: "1", b: "2"}). That is inherent in
// the published scheme; a rewritten request shares its original's SecretId,
// Nonce and Timestamp, so refusing replays by Result.ReplayKey also refuses
// it.
//
// Replay refusal needs state shared by all replicas, so it is left to the
// caller, who stores Result.ReplayKey until Result.Timestamp + MaxClockSkew.
package capi2

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Signature methods.
const (
	HmacSHA1   = "HmacSHA1"
	HmacSHA256 = "HmacSHA256"
)

// Names of the common parameters.
const (
	ParamAction          = "Action"
	ParamTimestamp       = "Timestamp"
	ParamNonce           = "Nonce"
	ParamSecretID        = "SecretId"
	ParamSignatureMethod = "SignatureMethod"
	ParamSignature       = "Signature"
)

// MaxClockSkew is how far Timestamp may be from the server's clock, in
// either direction.
const MaxClockSkew = 5 * time.Minute

// Errors returned by Verify and Sign, wrapped with detail; test with
// errors.Is. None of them repeats a parameter value: passwd travels among
// the parameters.
var (
	ErrDuplicateParameter = errors.New("capi2: parameter given more than once")
	ErrMissingParameter   = errors.New("capi2: missing common parameter")
	ErrUnsupportedMethod  = errors.New("capi2: unsupported SignatureMethod")
	ErrInvalidTimestamp   = errors.New("capi2: Timestamp is not unix seconds")
	ErrStaleTimestamp     = errors.New("capi2: Timestamp is more than 5 minutes away from the server time")
	ErrInvalidNonce       = errors.New("capi2: Nonce is not a positive integer")
	ErrUnknownSecretID    = errors.New("capi2: unknown SecretId")
	ErrBadSignature       = errors.New("capi2: signature does not match")
)

// Request is what Verify needs from an HTTP request.
type Request struct {
	// Method is the HTTP method as received, normally "GET" or "POST".
	Method string
	// Host is the Host header as received (r.Host), port included if sent.
	Host string
	// Path is the request path, r.URL.Path, e.g. "/v2/index.php".
	Path string
	// Params holds the decoded parameters: r.URL.Query() for GET,
	// r.PostForm for a form POST.
	Params url.Values
}

// Result describes a request whose signature is valid.
type Result struct {
	SecretID        string
	Action          string
	SignatureMethod string
	// Timestamp is the signing time; the caller must remember ReplayKey at
	// least until Timestamp + MaxClockSkew.
	Timestamp time.Time
	Nonce     uint64
	// ReplayKey is "capi2:<timestamp>:<nonce>:<SecretId>", from the parsed
	// numbers so that "007" and "7" are the same nonce. Keying on the nonce
	// rather than the signature also refuses a client reusing a nonce.
	ReplayKey string
}

// Verify checks the signature of a request at time now. lookupSecret returns
// the secret key of a SecretId; for one that does not exist it must return
// an error wrapping ErrUnknownSecretID (or an empty secret). Its other
// errors are returned wrapped, and mean the check could not be made.
//
// The checks run from cheapest to dearest, so a stale or malformed request
// costs no secret lookup.
func Verify(req Request, lookupSecret func(secretID string) ([]byte, error), now time.Time) (Result, error) {
	if err := checkDuplicates(req.Params); err != nil {
		return Result{}, err
	}
	newHash, method, err := signatureMethod(req.Params)
	if err != nil {
		return Result{}, err
	}
	for _, name := range []string{ParamAction, ParamTimestamp, ParamNonce, ParamSecretID, ParamSignature} {
		if req.Params.Get(name) == "" {
			return Result{}, fmt.Errorf("%w: %s", ErrMissingParameter, name)
		}
	}
	ts, err := parseTimestamp(req.Params.Get(ParamTimestamp))
	if err != nil {
		return Result{}, err
	}
	if d := now.Sub(ts); d > MaxClockSkew || d < -MaxClockSkew {
		return Result{}, ErrStaleTimestamp
	}
	nonce, err := parseNonce(req.Params.Get(ParamNonce))
	if err != nil {
		return Result{}, err
	}
	got, err := base64.StdEncoding.Strict().DecodeString(req.Params.Get(ParamSignature))
	if err != nil {
		return Result{}, fmt.Errorf("%w: Signature is not base64", ErrBadSignature)
	}
	secretID := req.Params.Get(ParamSecretID)
	secret, err := lookupSecret(secretID)
	if err != nil {
		if errors.Is(err, ErrUnknownSecretID) {
			return Result{}, ErrUnknownSecretID
		}
		return Result{}, fmt.Errorf("capi2: looking up the SecretId: %w", err)
	}
	if len(secret) == 0 {
		// An empty HMAC key is a key anyone can use.
		return Result{}, ErrUnknownSecretID
	}
	want := mac(newHash, secret, req.Method, req.Host, req.Path, req.Params)
	if !hmac.Equal(want, got) {
		return Result{}, ErrBadSignature
	}
	return Result{
		SecretID:        secretID,
		Action:          req.Params.Get(ParamAction),
		SignatureMethod: method,
		Timestamp:       ts,
		Nonce:           nonce,
		ReplayKey:       fmt.Sprintf("capi2:%d:%d:%s", ts.Unix(), nonce, secretID),
	}, nil
}

// Sign sets params' Signature (replacing any) for a request to host and
// path with the given HTTP method, using the SignatureMethod in params, or
// HmacSHA1 if there is none. An empty SignatureMethod is refused rather than
// read as the default, as Verify does. The caller sets the other common parameters
// first; Sign only refuses what Verify would refuse before the signature
// (a duplicate parameter, an unknown SignatureMethod).
func Sign(method, host, path string, params url.Values, secret []byte) error {
	params.Del(ParamSignature)
	if err := checkDuplicates(params); err != nil {
		return err
	}
	newHash, _, err := signatureMethod(params)
	if err != nil {
		return err
	}
	sig := mac(newHash, secret, method, host, path, params)
	params.Set(ParamSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// checkDuplicates refuses any name given twice: which copy the signature
// covers and which the handler reads would otherwise be anyone's guess.
func checkDuplicates(params url.Values) error {
	for name, values := range params {
		if len(values) > 1 {
			// The name is the client's input, but quoting makes it harmless
			// in logs, and it is needed to fix the request.
			return fmt.Errorf("%w: %q", ErrDuplicateParameter, truncate(name, 64))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func signatureMethod(params url.Values) (func() hash.Hash, string, error) {
	values, ok := params[ParamSignatureMethod]
	if !ok || len(values) == 0 {
		return sha1.New, HmacSHA1, nil
	}
	switch values[0] {
	case HmacSHA1:
		return sha1.New, HmacSHA1, nil
	case HmacSHA256:
		return sha256.New, HmacSHA256, nil
	}
	return nil, "", fmt.Errorf("%w: use %s or %s", ErrUnsupportedMethod, HmacSHA1, HmacSHA256)
}

// parseTimestamp accepts decimal digits only: ParseInt would also take a
// sign.
func parseTimestamp(s string) (time.Time, error) {
	// 12 digits reach the year 33658 and keep time arithmetic far from
	// overflow.
	if !allDigits(s) || len(s) > 12 {
		return time.Time{}, ErrInvalidTimestamp
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrInvalidTimestamp, err)
	}
	return time.Unix(sec, 0), nil
}

func parseNonce(s string) (uint64, error) {
	if !allDigits(s) {
		return 0, ErrInvalidNonce
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidNonce, err)
	}
	if n == 0 {
		return 0, ErrInvalidNonce
	}
	return n, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// mac writes the string to sign straight into the HMAC rather than
// building it first: it holds the passwd parameter in clear, and one copy
// fewer is one copy fewer to linger in memory. Names with no value at all
// (url.Values{"x": {}}), which no query string can produce, are skipped the
// same way on both sides.
func mac(newHash func() hash.Hash, secret []byte, method, host, path string, params url.Values) []byte {
	names := make([]string, 0, len(params))
	for name, values := range params {
		if name != ParamSignature && len(values) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	m := hmac.New(newHash, secret)
	io.WriteString(m, method)
	io.WriteString(m, host)
	io.WriteString(m, path)
	io.WriteString(m, "?")
	for i, name := range names {
		if i > 0 {
			io.WriteString(m, "&")
		}
		io.WriteString(m, name)
		io.WriteString(m, "=")
		io.WriteString(m, params[name][0])
	}
	return m.Sum(nil)
}
