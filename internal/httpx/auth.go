package httpx

import (
	"net/http"
	"strings"
)

// BearerToken returns the credentials of `Authorization: Bearer TOKEN`.
// The scheme name is case-insensitive (RFC 9110 §11.1: "bearer" and
// "BEARER" are the same scheme) and may be followed by any run of spaces
// or tabs; a header with another scheme, or none, reports false.
func BearerToken(r *http.Request) (string, bool) {
	h := strings.TrimLeft(r.Header.Get("Authorization"), " \t")
	scheme, rest, found := strings.Cut(h, " ")
	if i := strings.IndexByte(scheme, '\t'); i >= 0 {
		scheme, rest, found = h[:i], h[i+1:], true
	}
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.Trim(rest, " \t")
	return tok, tok != ""
}
