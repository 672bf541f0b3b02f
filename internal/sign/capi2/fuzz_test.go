package capi2

import (
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"
)

var sentinels = []error{
	ErrDuplicateParameter, ErrMissingParameter, ErrUnsupportedMethod, ErrInvalidTimestamp,
	ErrStaleTimestamp, ErrInvalidNonce, ErrUnknownSecretID, ErrBadSignature,
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzVerify signs arbitrary requests with the test-side signer, sends them
// through the query-string encoding, and checks that Verify accepts exactly
// those signed in time with the right secret; then that an arbitrary query
// string is never accepted unless it carries the right signature.
func FuzzVerify(f *testing.F) {
	f.Add("Passw0rd!", "instanceIds.1", "ins-abc12345", []byte("secret"), false, false, int64(0), uint64(1), "")
	f.Add("Pa&ss=w0rd (x)", "taskId", "101", []byte("k"), true, true, int64(-300), uint64(4294967296), "")
	f.Add("", "", "", []byte("k"), false, true, int64(301), uint64(0), "Action=A&Nonce=1&SecretId=AKID&Timestamp=1700000000&Signature=AAAA")
	f.Add("p", "Signature", "x", []byte(""), true, false, int64(5), uint64(7), "a=1&a=2")
	f.Add("\x00\xff", "passwd", "%zz", []byte("k"), false, false, int64(0), uint64(9), "%")
	f.Fuzz(func(t *testing.T, passwd, extraName, extraValue string, secret []byte, sha256, post bool, skew int64, nonce uint64, rawQuery string) {
		now := time.Unix(1700000000, 0)
		skew %= 1000 // seconds; wide enough to cross MaxClockSkew both ways
		method := "GET"
		if post {
			method = "POST"
		}
		m := map[string]string{
			"Action":    "ResetDevicePasswd",
			"Timestamp": strconv.FormatInt(now.Unix()+skew, 10),
			"Nonce":     strconv.FormatUint(nonce, 10),
			"SecretId":  "AKID-fuzz",
			"passwd":    passwd,
		}
		if sha256 {
			m["SignatureMethod"] = "HmacSHA256"
		}
		if _, taken := m[extraName]; !taken && extraName != "" && extraName != "Signature" && extraName != "SignatureMethod" {
			m[extraName] = extraValue
		}
		sig := specSign(method, "bm.example.com", path, m, string(secret))
		params := values(m)
		params.Set("Signature", sig)
		params, err := url.ParseQuery(params.Encode())
		if err != nil {
			t.Fatalf("own encoding does not parse: %v", err)
		}
		req := Request{Method: method, Host: "bm.example.com", Path: path, Params: params}
		lookup := lookupFor("AKID-fuzz", string(secret))

		_, err = Verify(req, lookup, now)
		switch {
		case skew > 300 || skew < -300:
			if !errors.Is(err, ErrStaleTimestamp) {
				t.Fatalf("skew %ds: got %v", skew, err)
			}
		case nonce == 0:
			if !errors.Is(err, ErrInvalidNonce) {
				t.Fatalf("nonce 0: got %v", err)
			}
		case len(secret) == 0:
			if !errors.Is(err, ErrUnknownSecretID) {
				t.Fatalf("empty secret: got %v", err)
			}
		case err != nil:
			t.Fatalf("correctly signed request refused: %v", err)
		default:
			tampered := Request{Method: method, Host: "bm.example.com", Path: path, Params: url.Values{}}
			for k, v := range params {
				tampered.Params[k] = v
			}
			tampered.Params.Set("passwd", passwd+"x")
			if _, err := Verify(tampered, lookup, now); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("tampered passwd: got %v", err)
			}
			tampered.Params.Set("passwd", passwd)
			tampered.Path = path + "x"
			if _, err := Verify(tampered, lookup, now); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("tampered path: got %v", err)
			}
		}

		// Whatever the query string, Verify answers with one of its errors,
		// or accepts a signature that really is right. The query gets the
		// common parameters it lacks from the signed request: else nearly
		// every input stops at a missing parameter and the checks behind
		// it never run.
		raw, _ := url.ParseQuery(rawQuery)
		for _, name := range []string{"Action", "Timestamp", "Nonce", "SecretId", "Signature"} {
			if !raw.Has(name) {
				raw[name] = params[name]
			}
		}
		req.Params = raw
		_, err = Verify(req, func(string) ([]byte, error) { return secret, nil }, now)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		flat := map[string]string{}
		for k, v := range raw {
			flat[k] = v[0]
		}
		if specSign(method, "bm.example.com", path, flat, string(secret)) != raw.Get("Signature") {
			t.Fatalf("Verify accepted %q with a wrong signature", rawQuery)
		}
	})
}
