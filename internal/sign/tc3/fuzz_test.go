package tc3

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

var sentinels = []error{
	ErrMissingAuthorization, ErrMalformedAuthorization, ErrWrongService, ErrInvalidTimestamp, ErrStaleTimestamp,
	ErrScopeDate, ErrUnsignedPayload, ErrUnknownSecretID, ErrBadSignature,
}

// FuzzVerify feeds arbitrary Authorization headers, timestamps and bodies
// to Verify: it must never panic, must answer with one of its documented
// errors, must never repeat the signature it was sent, and must accept
// nothing that is not signed with the secret.
func FuzzVerify(f *testing.F) {
	good := signed(now, `{"Offset":0,"Limit":10}`)
	f.Add(good.Authorization, good.Timestamp, string(good.Body))
	f.Add("", "", "")
	f.Add("TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=content-type;host, Signature=00", "1796141430", "{}")
	f.Add("tc3-hmac-sha256\tCredential=AKIDfleetpassExample/2026-12-01/cvm/tc3_request,SignedHeaders=content-type;host;x,Signature="+strings.Repeat("0", 64), "1796141430", "")
	f.Fuzz(func(t *testing.T, authz, ts, body string) {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		in := Input{Authorization: authz, Timestamp: ts, Header: h, Host: host, Body: []byte(body), Service: "cvm"}
		_, err := Verify(in, lookup, now)
		if err == nil {
			// Accepted: only a header made with the one known secret can be.
			if a, perr := ParseAuthorization(authz); perr != nil || a.SecretID != secretID {
				t.Fatalf("accepted a header not signed with the known secret: %v", perr)
			}
			return
		}
		known := false
		for _, s := range sentinels {
			if errors.Is(err, s) {
				known = true
			}
		}
		if !known {
			t.Fatalf("undocumented error %v", err)
		}
		if a, perr := ParseAuthorization(authz); perr == nil && strings.Contains(err.Error(), hexOf(a.Signature)) {
			t.Fatalf("the error repeats the signature")
		}
	})
}
