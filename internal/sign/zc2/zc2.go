// Package zc2 verifies and makes the ZC2-HMAC-SHA256 signatures of the
// action API (POST /api/v2/vm and /api/v2/zec).
//
// A request carries its key id and signature in
//
//	Authorization: ZC2-HMAC-SHA256 Credential=<keyId>, SignedHeaders=content-type;host, Signature=<hex>
//
// and the signing time in X-ZC-Timestamp (unix seconds). The signature is
//
//	canonical    = "POST\n/\n\ncontent-type:" + ct + "\nhost:" + host + "\n\ncontent-type;host\n" + hex(sha256(body))
//	stringToSign = "ZC2-HMAC-SHA256\n" + timestamp + "\n" + hex(sha256(canonical))
//	signature    = hex(hmac-sha256(secret, stringToSign))
//
// The scheme signs neither the path nor X-ZC-Action: a signature made for one
// action is valid for another during its five minutes. That is the
// published scheme, so it is kept; TLS and the caller's replay rules (see
// Result.ReplayKey) are what stop a captured request from being reused for
// another action.
//
// Content-Type and Host are signed exactly as received: no lower-casing, no
// trimming beyond what net/http already does to header values, no collapsing
// of inner spaces. Any rewriting here would let two different headers share
// a signature, and clients sign what they send.
//
// Replay rules need state shared by all replicas, so they are left to the
// caller, who records Result.ReplayKey, with the action and path it came
// with, until Result.Timestamp + MaxClockSkew.
package zc2

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Protocol constants.
const (
	Algorithm     = "ZC2-HMAC-SHA256"
	SignedHeaders = "content-type;host"

	HeaderTimestamp       = "X-ZC-Timestamp"
	HeaderSignatureMethod = "X-ZC-Signature-Method"

	// MaxClockSkew is how far X-ZC-Timestamp may be from the server's
	// clock, in either direction.
	MaxClockSkew = 5 * time.Minute
)

// Errors returned by Verify and ParseAuthorization, wrapped with detail;
// test with errors.Is. None of them repeats a secret, a signature or the
// body.
var (
	ErrMissingAuthorization   = errors.New("zc2: missing Authorization header")
	ErrMalformedAuthorization = errors.New("zc2: malformed Authorization header")
	ErrUnsupportedMethod      = errors.New("zc2: unsupported signature method")
	ErrInvalidTimestamp       = errors.New("zc2: missing or invalid " + HeaderTimestamp)
	ErrStaleTimestamp         = errors.New("zc2: " + HeaderTimestamp + " is more than 5 minutes away from the server time")
	ErrUnknownKey             = errors.New("zc2: unknown key")
	ErrBadSignature           = errors.New("zc2: signature does not match")
)

// maxKeyIDLength bounds what a caller may have to look up.
const maxKeyIDLength = 128

// Authorization is a parsed Authorization header.
type Authorization struct {
	KeyID         string
	SignedHeaders string
	Signature     []byte // the HMAC, sha256.Size bytes
}

// ReplayKey identifies the request for replay refusal: the signature in
// lower-case hex behind a "zc2:" prefix. Taken from the decoded bytes, so
// spelling the hex in upper case does not make a replay look new.
func (a Authorization) ReplayKey() string {
	return "zc2:" + hex.EncodeToString(a.Signature)
}

// ParseAuthorization parses an Authorization header value. The scheme name
// is case-insensitive (RFC 9110); parameter names are not. Parameters may
// come in any order, with spaces or tabs around the commas, but each exactly
// once, and SignedHeaders must be "content-type;host".
func ParseAuthorization(h string) (Authorization, error) {
	h = strings.Trim(h, " \t")
	if h == "" {
		return Authorization{}, ErrMissingAuthorization
	}
	scheme, params, _ := strings.Cut(h, " ")
	if i := strings.IndexByte(scheme, '\t'); i >= 0 {
		scheme, params = h[:i], h[i+1:]
	}
	if !strings.EqualFold(scheme, Algorithm) {
		return Authorization{}, fmt.Errorf("%w: scheme is not %s", ErrUnsupportedMethod, Algorithm)
	}
	params = strings.Trim(params, " \t")
	if params == "" {
		return Authorization{}, fmt.Errorf("%w: no parameters", ErrMalformedAuthorization)
	}

	var a Authorization
	var sig string
	seen := map[string]bool{}
	for _, part := range strings.Split(params, ",") {
		name, value, ok := strings.Cut(strings.Trim(part, " \t"), "=")
		if !ok {
			return Authorization{}, fmt.Errorf("%w: parameter without '='", ErrMalformedAuthorization)
		}
		switch name {
		case "Credential", "SignedHeaders", "Signature":
		default:
			return Authorization{}, fmt.Errorf("%w: unknown parameter", ErrMalformedAuthorization)
		}
		if seen[name] {
			return Authorization{}, fmt.Errorf("%w: %s given twice", ErrMalformedAuthorization, name)
		}
		seen[name] = true
		switch name {
		case "Credential":
			a.KeyID = value
		case "SignedHeaders":
			a.SignedHeaders = value
		case "Signature":
			sig = value
		}
	}
	for _, name := range []string{"Credential", "SignedHeaders", "Signature"} {
		if !seen[name] {
			return Authorization{}, fmt.Errorf("%w: no %s", ErrMalformedAuthorization, name)
		}
	}
	if !validKeyID(a.KeyID) {
		return Authorization{}, fmt.Errorf("%w: Credential must be 1 to %d printable characters without spaces or commas", ErrMalformedAuthorization, maxKeyIDLength)
	}
	if a.SignedHeaders != SignedHeaders {
		return Authorization{}, fmt.Errorf("%w: SignedHeaders must be %s", ErrMalformedAuthorization, SignedHeaders)
	}
	if len(sig) != 2*sha256.Size {
		return Authorization{}, fmt.Errorf("%w: Signature must be %d hex digits", ErrMalformedAuthorization, 2*sha256.Size)
	}
	b, err := hex.DecodeString(sig)
	if err != nil {
		return Authorization{}, fmt.Errorf("%w: Signature must be %d hex digits", ErrMalformedAuthorization, 2*sha256.Size)
	}
	a.Signature = b
	return a, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > maxKeyIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == ',' {
			return false
		}
	}
	return true
}

// VerifyInput is what Verify needs from a request. NewVerifyInput fills it
// from an *http.Request.
type VerifyInput struct {
	Authorization string
	// Timestamp is X-ZC-Timestamp as received.
	Timestamp string
	// SignatureMethod is X-ZC-Signature-Method, or "" if absent.
	SignatureMethod string
	ContentType     string
	Host            string
	Body            []byte
}

// NewVerifyInput takes the headers Verify needs from r and the body the
// caller has already read (with a size limit). A header sent twice is
// joined with ", ", as HTTP defines, so duplicates fail verification instead
// of one copy being silently chosen.
func NewVerifyInput(r *http.Request, body []byte) VerifyInput {
	get := func(name string) string { return strings.Join(r.Header.Values(name), ", ") }
	return VerifyInput{
		Authorization:   get("Authorization"),
		Timestamp:       get(HeaderTimestamp),
		SignatureMethod: get(HeaderSignatureMethod),
		ContentType:     get("Content-Type"),
		Host:            r.Host,
		Body:            body,
	}
}

// Result describes a request whose signature is valid.
type Result struct {
	KeyID string
	// Timestamp is the signing time; the caller must remember ReplayKey at
	// least until Timestamp + MaxClockSkew.
	Timestamp time.Time
	ReplayKey string
}

// Verify checks the signature of a request at time now. lookupSecret returns
// the secret of a key id; for a key that does not exist it must return an
// error wrapping ErrUnknownKey (or an empty secret). Its other errors are
// returned wrapped, and mean the check could not be made (an internal
// error, not the client's fault).
//
// The checks run from cheapest to dearest, so a stale or malformed request
// costs no secret lookup.
func Verify(in VerifyInput, lookupSecret func(keyID string) ([]byte, error), now time.Time) (Result, error) {
	if in.SignatureMethod != "" && in.SignatureMethod != Algorithm {
		return Result{}, fmt.Errorf("%w: %s must be %s", ErrUnsupportedMethod, HeaderSignatureMethod, Algorithm)
	}
	auth, err := ParseAuthorization(in.Authorization)
	if err != nil {
		return Result{}, err
	}
	ts, err := parseTimestamp(in.Timestamp)
	if err != nil {
		return Result{}, err
	}
	if d := now.Sub(ts); d > MaxClockSkew || d < -MaxClockSkew {
		return Result{}, ErrStaleTimestamp
	}
	secret, err := lookupSecret(auth.KeyID)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return Result{}, ErrUnknownKey
		}
		return Result{}, fmt.Errorf("zc2: looking up the key: %w", err)
	}
	if len(secret) == 0 {
		// An empty HMAC key is a key anyone can use.
		return Result{}, ErrUnknownKey
	}
	want := signature(secret, in.Timestamp, in.ContentType, in.Host, in.Body)
	if !hmac.Equal(want, auth.Signature) {
		return Result{}, ErrBadSignature
	}
	return Result{KeyID: auth.KeyID, Timestamp: ts, ReplayKey: auth.ReplayKey()}, nil
}

// parseTimestamp accepts decimal digits only: ParseInt would also take a
// sign, and "+1700000000" signs differently from what it means.
func parseTimestamp(s string) (time.Time, error) {
	// 12 digits reach the year 33658 and keep time arithmetic far from
	// overflow.
	if s == "" || len(s) > 12 {
		return time.Time{}, ErrInvalidTimestamp
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, ErrInvalidTimestamp
		}
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrInvalidTimestamp, err)
	}
	return time.Unix(sec, 0), nil
}

func signature(secret []byte, timestamp, contentType, host string, body []byte) []byte {
	bodyHash := sha256.Sum256(body)
	canonical := "POST\n/\n\n" +
		"content-type:" + contentType + "\n" +
		"host:" + host + "\n\n" +
		SignedHeaders + "\n" +
		hex.EncodeToString(bodyHash[:])
	canonicalHash := sha256.Sum256([]byte(canonical))
	stringToSign := Algorithm + "\n" + timestamp + "\n" + hex.EncodeToString(canonicalHash[:])
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(stringToSign))
	return mac.Sum(nil)
}

// Sign returns the Authorization header value for a request with the given
// X-ZC-Timestamp, Content-Type, Host and body.
func Sign(keyID string, secret []byte, timestamp, contentType, host string, body []byte) string {
	sig := signature(secret, timestamp, contentType, host, body)
	return Algorithm + " Credential=" + keyID + ", SignedHeaders=" + SignedHeaders + ", Signature=" + hex.EncodeToString(sig)
}

// SignRequest signs r, whose body is body, at time now: it sets
// X-ZC-Timestamp, X-ZC-Signature-Method and Authorization, and Content-Type
// to application/json if it is unset. The signed host is r.Host, or
// r.URL.Host when r.Host is empty, which is what net/http sends.
func SignRequest(r *http.Request, body []byte, keyID string, secret []byte, now time.Time) {
	if r.Header == nil {
		r.Header = http.Header{}
	}
	if r.Header.Get("Content-Type") == "" {
		r.Header.Set("Content-Type", "application/json")
	}
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderSignatureMethod, Algorithm)
	r.Header.Set("Authorization", Sign(keyID, secret, ts, r.Header.Get("Content-Type"), host, body))
}
