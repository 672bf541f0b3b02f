// Package tc3 verifies and makes TC3-HMAC-SHA256 signatures, the signing
// scheme of Tencent Cloud API 3.0 (the Tencent dialect, POST / with
// X-TC-Action).
//
// A request carries
//
//	Authorization: TC3-HMAC-SHA256 Credential=<SecretId>/<date>/<service>/tc3_request, SignedHeaders=content-type;host, Signature=<hex>
//
// and the signing time in X-TC-Timestamp (unix seconds); <date> is that
// time's UTC date. The signature is
//
//	canonical    = "POST\n/\n\n" + canonicalHeaders + "\n" + signedHeaders + "\n" + hex(sha256(body))
//	stringToSign = "TC3-HMAC-SHA256\n" + timestamp + "\n" + date/service/tc3_request + "\n" + hex(sha256(canonical))
//	key          = hmac(hmac(hmac("TC3" + secret, date), service), "tc3_request")
//	signature    = hex(hmac-sha256(key, stringToSign))
//
// where canonicalHeaders lists each signed header as "name:value\n", name
// and value lower-cased and trimmed, in the order of SignedHeaders (which
// must be sorted and must include content-type and host). This is what
// Tencent's documentation and SDKs do.
//
// The scheme has no nonce: two identical requests signed in the same
// second are two calls, as on Tencent's cloud, so there is no replay
// refusal here. A body sent unsigned (X-TC-Content-SHA256:
// UNSIGNED-PAYLOAD, an SDK option) is refused: without a nonce, anyone who
// saw such a request could send another body under its signature for five
// minutes.
package tc3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocol constants.
const (
	Algorithm  = "TC3-HMAC-SHA256"
	Terminator = "tc3_request"

	HeaderTimestamp     = "X-TC-Timestamp"
	HeaderContentSHA256 = "X-TC-Content-SHA256"

	// MaxClockSkew is how far X-TC-Timestamp may be from the server's
	// clock, in either direction.
	MaxClockSkew = 5 * time.Minute
)

// Errors returned by Verify and ParseAuthorization, wrapped with detail;
// test with errors.Is. None of them repeats a secret, a signature or the
// body.
var (
	ErrMissingAuthorization   = errors.New("tc3: missing Authorization header")
	ErrMalformedAuthorization = errors.New("tc3: malformed Authorization header")
	ErrWrongService           = errors.New("tc3: the credential scope names another service")
	ErrInvalidTimestamp       = errors.New("tc3: missing or invalid " + HeaderTimestamp)
	ErrStaleTimestamp         = errors.New("tc3: " + HeaderTimestamp + " is more than 5 minutes away from the server time")
	ErrScopeDate              = errors.New("tc3: the credential scope's date is not the UTC date of " + HeaderTimestamp)
	ErrUnsignedPayload        = errors.New("tc3: unsigned payloads are not accepted")
	ErrUnknownSecretID        = errors.New("tc3: unknown SecretId")
	ErrBadSignature           = errors.New("tc3: signature does not match")
)

// Bounds on what a caller may send.
const (
	maxSecretIDLength = 128
	maxSignedHeaders  = 16
	maxHeaderName     = 64
)

// Authorization is a parsed Authorization header.
type Authorization struct {
	SecretID string
	// Date is the credential scope's date, YYYY-MM-DD.
	Date    string
	Service string
	// SignedHeaders are lower-case header names, sorted.
	SignedHeaders []string
	Signature     []byte // the HMAC, sha256.Size bytes
}

// Scope is the credential scope, date/service/tc3_request.
func (a Authorization) Scope() string { return a.Date + "/" + a.Service + "/" + Terminator }

// ParseAuthorization parses an Authorization header value. The scheme name
// is case-insensitive (RFC 9110); parameter names are not. Parameters may
// come in any order, with spaces around the commas, each exactly once.
func ParseAuthorization(h string) (Authorization, error) {
	h = strings.Trim(h, " \t")
	if h == "" {
		return Authorization{}, ErrMissingAuthorization
	}
	i := strings.IndexAny(h, " \t")
	if i < 0 {
		return Authorization{}, fmt.Errorf("%w: no parameters", ErrMalformedAuthorization)
	}
	scheme, params := h[:i], strings.Trim(h[i+1:], " \t")
	if !strings.EqualFold(scheme, Algorithm) {
		return Authorization{}, fmt.Errorf("%w: the scheme must be %s", ErrMalformedAuthorization, Algorithm)
	}
	var cred, signed, sig string
	seen := map[string]bool{}
	for part := range strings.SplitSeq(params, ",") {
		name, value, ok := strings.Cut(strings.Trim(part, " \t"), "=")
		if !ok {
			return Authorization{}, fmt.Errorf("%w: a parameter without '='", ErrMalformedAuthorization)
		}
		switch name {
		case "Credential":
			cred = value
		case "SignedHeaders":
			signed = value
		case "Signature":
			sig = value
		default:
			return Authorization{}, fmt.Errorf("%w: unknown parameter", ErrMalformedAuthorization)
		}
		if seen[name] {
			return Authorization{}, fmt.Errorf("%w: %s given twice", ErrMalformedAuthorization, name)
		}
		seen[name] = true
	}
	for _, name := range []string{"Credential", "SignedHeaders", "Signature"} {
		if !seen[name] {
			return Authorization{}, fmt.Errorf("%w: no %s", ErrMalformedAuthorization, name)
		}
	}

	var a Authorization
	parts := strings.Split(cred, "/")
	if len(parts) != 4 || parts[3] != Terminator {
		return Authorization{}, fmt.Errorf("%w: Credential must be SecretId/date/service/%s", ErrMalformedAuthorization, Terminator)
	}
	a.SecretID, a.Date, a.Service = parts[0], parts[1], parts[2]
	if !printable(a.SecretID, maxSecretIDLength) {
		return Authorization{}, fmt.Errorf("%w: the SecretId must be 1 to %d printable characters", ErrMalformedAuthorization, maxSecretIDLength)
	}
	if _, err := time.Parse(time.DateOnly, a.Date); err != nil || len(a.Date) != len(time.DateOnly) {
		return Authorization{}, fmt.Errorf("%w: the credential scope's date must be YYYY-MM-DD", ErrMalformedAuthorization)
	}
	if !serviceName(a.Service) {
		return Authorization{}, fmt.Errorf("%w: the credential scope's service must be a lower-case name", ErrMalformedAuthorization)
	}

	a.SignedHeaders = strings.Split(signed, ";")
	if len(a.SignedHeaders) > maxSignedHeaders {
		return Authorization{}, fmt.Errorf("%w: at most %d signed headers", ErrMalformedAuthorization, maxSignedHeaders)
	}
	for i, name := range a.SignedHeaders {
		if !headerName(name) {
			return Authorization{}, fmt.Errorf("%w: SignedHeaders must be lower-case header names joined by ';'", ErrMalformedAuthorization)
		}
		if i > 0 && name <= a.SignedHeaders[i-1] {
			return Authorization{}, fmt.Errorf("%w: SignedHeaders must be sorted, each once", ErrMalformedAuthorization)
		}
	}
	if !slices.Contains(a.SignedHeaders, "content-type") || !slices.Contains(a.SignedHeaders, "host") {
		return Authorization{}, fmt.Errorf("%w: SignedHeaders must include content-type and host", ErrMalformedAuthorization)
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

func printable(s string, most int) bool {
	if s == "" || len(s) > most {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == ',' || c == '/' {
			return false
		}
	}
	return true
}

func serviceName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func headerName(s string) bool {
	if s == "" || len(s) > maxHeaderName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Input is what Verify needs from a request. NewInput fills it from an
// *http.Request.
type Input struct {
	Authorization string
	// Timestamp is X-TC-Timestamp as received.
	Timestamp string
	// Header holds the request's headers; Host is r.Host.
	Header http.Header
	Host   string
	Body   []byte
	// Service is the service the request is for: the credential scope
	// must name it.
	Service string
}

// NewInput takes what Verify needs from r, for service, with the body the
// caller has already read (with a size limit). A header sent twice is
// joined with ", ", as HTTP defines, so duplicates fail verification
// instead of one copy being silently chosen.
func NewInput(r *http.Request, body []byte, service string) Input {
	return Input{
		Authorization: strings.Join(r.Header.Values("Authorization"), ", "),
		Timestamp:     strings.Join(r.Header.Values(HeaderTimestamp), ", "),
		Header:        r.Header,
		Host:          r.Host,
		Body:          body,
		Service:       service,
	}
}

// Result describes a request whose signature is valid.
type Result struct {
	SecretID  string
	Timestamp time.Time
}

// Verify checks the signature of a request at time now. lookupSecret
// returns the secret of a SecretId; for one that does not exist it must
// return an error wrapping ErrUnknownSecretID (or an empty secret). Its
// other errors are returned wrapped, and mean the check could not be made.
//
// The checks run from cheapest to dearest, so a stale or malformed request
// costs no secret lookup.
func Verify(in Input, lookupSecret func(secretID string) ([]byte, error), now time.Time) (Result, error) {
	auth, err := ParseAuthorization(in.Authorization)
	if err != nil {
		return Result{}, err
	}
	if auth.Service != in.Service {
		return Result{}, ErrWrongService
	}
	ts, err := parseTimestamp(in.Timestamp)
	if err != nil {
		return Result{}, err
	}
	if d := now.Sub(ts); d > MaxClockSkew || d < -MaxClockSkew {
		return Result{}, ErrStaleTimestamp
	}
	if auth.Date != ts.UTC().Format(time.DateOnly) {
		return Result{}, ErrScopeDate
	}
	if v := strings.Join(in.Header.Values(HeaderContentSHA256), ", "); v != "" {
		// Only the hash of the body itself may be announced.
		if !strings.EqualFold(v, hexSHA256(in.Body)) {
			return Result{}, ErrUnsignedPayload
		}
	}
	canonical, err := canonicalHeaders(auth.SignedHeaders, in.Header, in.Host)
	if err != nil {
		return Result{}, err
	}
	secret, err := lookupSecret(auth.SecretID)
	if err != nil {
		if errors.Is(err, ErrUnknownSecretID) {
			return Result{}, ErrUnknownSecretID
		}
		return Result{}, fmt.Errorf("tc3: looking up the SecretId: %w", err)
	}
	if len(secret) == 0 {
		// An empty HMAC key is a key anyone can use.
		return Result{}, ErrUnknownSecretID
	}
	want := signature(secret, auth, in.Timestamp, canonical, in.Body)
	if !hmac.Equal(want, auth.Signature) {
		return Result{}, ErrBadSignature
	}
	return Result{SecretID: auth.SecretID, Timestamp: ts}, nil
}

// canonicalHeaders lists the signed headers, "name:value\n" each. Host
// comes from the request line (net/http keeps it out of Header).
func canonicalHeaders(names []string, h http.Header, host string) (string, error) {
	var sb strings.Builder
	for _, name := range names {
		var value string
		if name == "host" {
			value = host
		} else {
			values := h.Values(name)
			if len(values) > 1 {
				return "", fmt.Errorf("%w: the signed header %s is sent more than once", ErrMalformedAuthorization, name)
			}
			if len(values) == 1 {
				value = values[0]
			}
		}
		sb.WriteString(name)
		sb.WriteByte(':')
		sb.WriteString(strings.ToLower(strings.TrimSpace(value)))
		sb.WriteByte('\n')
	}
	return sb.String(), nil
}

// parseTimestamp accepts decimal digits only: ParseInt would also take a
// sign.
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

func hexSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func signature(secret []byte, auth Authorization, timestamp, canonicalHeaders string, body []byte) []byte {
	canonical := "POST\n/\n\n" + canonicalHeaders + "\n" + strings.Join(auth.SignedHeaders, ";") + "\n" + hexSHA256(body)
	stringToSign := Algorithm + "\n" + timestamp + "\n" + auth.Scope() + "\n" + hexSHA256([]byte(canonical))
	key := make([]byte, 0, 3+len(secret))
	key = append(append(key, "TC3"...), secret...)
	defer clear(key)
	k := hmacSHA256(hmacSHA256(hmacSHA256(key, auth.Date), auth.Service), Terminator)
	return hmacSHA256(k, stringToSign)
}

// Sign returns the Authorization header value of a POST / request for
// service signed at time ts with the given Host, Content-Type and body, over
// the two headers the official SDKs sign (content-type;host).
func Sign(secretID string, secret []byte, service string, ts time.Time, host, contentType string, body []byte) string {
	auth := Authorization{SecretID: secretID, Date: ts.UTC().Format(time.DateOnly), Service: service,
		SignedHeaders: []string{"content-type", "host"}}
	canonical := "content-type:" + strings.ToLower(strings.TrimSpace(contentType)) + "\nhost:" + strings.ToLower(host) + "\n"
	sig := signature(secret, auth, strconv.FormatInt(ts.Unix(), 10), canonical, body)
	return Algorithm + " Credential=" + secretID + "/" + auth.Scope() + ", SignedHeaders=content-type;host, Signature=" + hex.EncodeToString(sig)
}
