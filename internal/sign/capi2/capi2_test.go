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
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// specSign is the signature written down from docs/design.md#signatures again, on purpose
// without any of the package's code, so that a shared mistake cannot make
// both sides agree. params maps each name to its one raw value.
func specSign(method, host, path string, params map[string]string, secret string) string {
	var pairs []string
	for k, v := range params {
		if k != "Signature" {
			pairs = append(pairs, k+"="+v)
		}
	}
	// Sorting "k=v" strings would misorder "a=1" and "a.b=2" ('=' > '.'),
	// so sort on the names alone.
	sort.Slice(pairs, func(i, j int) bool {
		return strings.SplitN(pairs[i], "=", 2)[0] < strings.SplitN(pairs[j], "=", 2)[0]
	})
	s := method + host + path + "?" + strings.Join(pairs, "&")
	var h func() hash.Hash
	switch params["SignatureMethod"] {
	case "", "HmacSHA1":
		h = sha1.New
	case "HmacSHA256":
		h = sha256.New
	default:
		panic("specSign: unknown SignatureMethod")
	}
	m := hmac.New(h, []byte(secret))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func values(m map[string]string) url.Values {
	v := url.Values{}
	for k, x := range m {
		v.Set(k, x)
	}
	return v
}

// Vectors computed with OpenSSL 3.0; the string to sign is written out in
// each command.
var opensslVectors = []struct {
	command      string
	method, host string
	secret       string
	params       map[string]string
	signature    string
}{
	{
		command: `printf '%s' 'GETbm.example.com/v2/index.php?Action=ResetDevicePasswd&Nonce=11886&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Timestamp=1700000000&instanceIds.1=ins-abc12345&instanceIds.2=ins-def67890&passwd=Passw0rd!' | openssl dgst -sha1 -hmac 'Gu5t9xGARNpq86cd98joQYCN3EXAMPLE' -binary | base64`,
		method:  "GET",
		host:    "bm.example.com",
		secret:  "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
		params: map[string]string{
			"Action": "ResetDevicePasswd", "Nonce": "11886", "SecretId": "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
			"Timestamp": "1700000000", "instanceIds.1": "ins-abc12345", "instanceIds.2": "ins-def67890", "passwd": "Passw0rd!",
		},
		signature: "Xdi1UQFJH37yrqWB0x8kcgxFipc=",
	},
	{
		command: `printf '%s' 'POSTbm.example.com:8443/v2/index.php?Action=ResetDevicePasswd&Nonce=4294967296&SecretId=AKID-2&SignatureMethod=HmacSHA256&Timestamp=1712345678&instanceIds.1=ins-0123abcd&passwd=Pa&ss=w0rd (x)' | openssl dgst -sha256 -hmac 'second secret' -binary | base64`,
		method:  "POST",
		host:    "bm.example.com:8443",
		secret:  "second secret",
		params: map[string]string{
			"Action": "ResetDevicePasswd", "Nonce": "4294967296", "SecretId": "AKID-2", "SignatureMethod": "HmacSHA256",
			"Timestamp": "1712345678", "instanceIds.1": "ins-0123abcd", "passwd": "Pa&ss=w0rd (x)",
		},
		signature: "HXl58h2X+508L4qv3hFpbJGnWxyYjmOLmoFYw5oJ9AM=",
	},
	{
		command: `printf '%s' 'GETbm.example.com/v2/index.php?Action=DescribeOperationResult&Nonce=1&SecretId=AKID-3&SignatureMethod=HmacSHA1&Timestamp=1700000000&taskId=101' | openssl dgst -sha1 -hmac 'k3' -binary | base64`,
		method:  "GET",
		host:    "bm.example.com",
		secret:  "k3",
		params: map[string]string{
			"Action": "DescribeOperationResult", "Nonce": "1", "SecretId": "AKID-3", "SignatureMethod": "HmacSHA1",
			"Timestamp": "1700000000", "taskId": "101",
		},
		signature: "bh8Uk9hj88n0mXhqHlA5AArGHHY=",
	},
}

const path = "/v2/index.php"

func lookupFor(secretID, secret string) func(string) ([]byte, error) {
	return func(id string) ([]byte, error) {
		if id != secretID {
			return nil, fmt.Errorf("secret id %q: %w", id, ErrUnknownSecretID)
		}
		return []byte(secret), nil
	}
}

func TestOpenSSLVectors(t *testing.T) {
	for _, v := range opensslVectors {
		if got := specSign(v.method, v.host, path, v.params, v.secret); got != v.signature {
			t.Errorf("test signer disagrees with openssl for\n%s\n got %s\nwant %s", v.command, got, v.signature)
		}

		params := values(v.params)
		if err := Sign(v.method, v.host, path, params, []byte(v.secret)); err != nil {
			t.Fatal(err)
		}
		if got := params.Get("Signature"); got != v.signature {
			t.Errorf("Sign = %s, want %s", got, v.signature)
		}

		// Through the wire format, as a dialect would receive it.
		decoded, err := url.ParseQuery(params.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var ts int64
		fmt.Sscan(v.params["Timestamp"], &ts)
		res, err := Verify(Request{Method: v.method, Host: v.host, Path: path, Params: decoded},
			lookupFor(v.params["SecretId"], v.secret), time.Unix(ts, 0))
		if err != nil {
			t.Fatalf("%s: %v", v.command, err)
		}
		method := v.params["SignatureMethod"]
		if method == "" {
			method = HmacSHA1
		}
		want := Result{
			SecretID:        v.params["SecretId"],
			Action:          v.params["Action"],
			SignatureMethod: method,
			Timestamp:       time.Unix(ts, 0),
			Nonce:           mustUint(t, v.params["Nonce"]),
			ReplayKey:       "capi2:" + v.params["Timestamp"] + ":" + v.params["Nonce"] + ":" + v.params["SecretId"],
		}
		if res != want {
			t.Errorf("got %+v\nwant %+v", res, want)
		}
	}
}

// A query string written by hand, the way the bare-metal document shows
// requests, with the signature's '=' percent-encoded.
func TestHandWrittenQuery(t *testing.T) {
	q := "Action=ResetDevicePasswd&instanceIds.1=ins-abc12345&instanceIds.2=ins-def67890&passwd=Passw0rd%21" +
		"&Timestamp=1700000000&Nonce=11886&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Signature=Xdi1UQFJH37yrqWB0x8kcgxFipc%3D"
	params, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(Request{Method: "GET", Host: "bm.example.com", Path: path, Params: params},
		lookupFor("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"), time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	var n uint64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestVerify(t *testing.T) {
	v := opensslVectors[0]
	now := time.Unix(1700000000, 0)
	// resign lets a case change a signed field and still carry a correct
	// signature, to reach the checks that come after the signature's own.
	resign := func(p url.Values) {
		m := map[string]string{}
		for k := range p {
			m[k] = p.Get(k)
		}
		p.Set("Signature", specSign(v.method, v.host, path, m, v.secret))
	}
	tests := []struct {
		name   string
		edit   func(r *Request)
		now    time.Time
		lookup func(string) ([]byte, error)
		want   error
	}{
		{name: "valid", edit: func(*Request) {}},
		{name: "5 minutes early is fine", edit: func(*Request) {}, now: now.Add(-5 * time.Minute)},
		{name: "5 minutes late is fine", edit: func(*Request) {}, now: now.Add(5 * time.Minute)},
		{name: "explicit HmacSHA1", edit: func(r *Request) { r.Params.Set("SignatureMethod", "HmacSHA1"); resign(r.Params) }},
		{name: "HmacSHA256", edit: func(r *Request) { r.Params.Set("SignatureMethod", "HmacSHA256"); resign(r.Params) }},

		{name: "duplicate passwd", edit: func(r *Request) { r.Params.Add("passwd", "Other0rd!") }, want: ErrDuplicateParameter},
		{name: "duplicate Signature", edit: func(r *Request) { r.Params.Add("Signature", r.Params.Get("Signature")) }, want: ErrDuplicateParameter},
		{name: "duplicate Nonce", edit: func(r *Request) { r.Params.Add("Nonce", "11886") }, want: ErrDuplicateParameter},

		{name: "missing Action", edit: func(r *Request) { r.Params.Del("Action") }, want: ErrMissingParameter},
		{name: "missing Timestamp", edit: func(r *Request) { r.Params.Del("Timestamp") }, want: ErrMissingParameter},
		{name: "missing Nonce", edit: func(r *Request) { r.Params.Del("Nonce") }, want: ErrMissingParameter},
		{name: "missing SecretId", edit: func(r *Request) { r.Params.Del("SecretId") }, want: ErrMissingParameter},
		{name: "missing Signature", edit: func(r *Request) { r.Params.Del("Signature") }, want: ErrMissingParameter},
		{name: "empty Signature", edit: func(r *Request) { r.Params.Set("Signature", "") }, want: ErrMissingParameter},
		{name: "no parameters", edit: func(r *Request) { r.Params = nil }, want: ErrMissingParameter},

		{name: "HmacMD5", edit: func(r *Request) { r.Params.Set("SignatureMethod", "HmacMD5") }, want: ErrUnsupportedMethod},
		{name: "method in lower case", edit: func(r *Request) { r.Params.Set("SignatureMethod", "hmacsha256") }, want: ErrUnsupportedMethod},
		{name: "empty method", edit: func(r *Request) { r.Params.Set("SignatureMethod", "") }, want: ErrUnsupportedMethod},

		{name: "Timestamp not a number", edit: func(r *Request) { r.Params.Set("Timestamp", "now") }, want: ErrInvalidTimestamp},
		{name: "Timestamp with sign", edit: func(r *Request) { r.Params.Set("Timestamp", "+1700000000") }, want: ErrInvalidTimestamp},
		{name: "Timestamp negative", edit: func(r *Request) { r.Params.Set("Timestamp", "-1") }, want: ErrInvalidTimestamp},
		{name: "Timestamp fractional", edit: func(r *Request) { r.Params.Set("Timestamp", "1700000000.5") }, want: ErrInvalidTimestamp},
		{name: "Timestamp in milliseconds", edit: func(r *Request) { r.Params.Set("Timestamp", "1700000000000") }, want: ErrInvalidTimestamp},
		{name: "stale", edit: func(*Request) {}, now: now.Add(5*time.Minute + time.Second), want: ErrStaleTimestamp},
		{name: "from the future", edit: func(*Request) {}, now: now.Add(-5*time.Minute - time.Second), want: ErrStaleTimestamp},

		{name: "Nonce zero", edit: func(r *Request) { r.Params.Set("Nonce", "0") }, want: ErrInvalidNonce},
		{name: "Nonce negative", edit: func(r *Request) { r.Params.Set("Nonce", "-5") }, want: ErrInvalidNonce},
		{name: "Nonce with sign", edit: func(r *Request) { r.Params.Set("Nonce", "+5") }, want: ErrInvalidNonce},
		{name: "Nonce not a number", edit: func(r *Request) { r.Params.Set("Nonce", "abc") }, want: ErrInvalidNonce},
		{name: "Nonce in exponent form", edit: func(r *Request) { r.Params.Set("Nonce", "1e3") }, want: ErrInvalidNonce},
		{name: "Nonce too large", edit: func(r *Request) { r.Params.Set("Nonce", "18446744073709551616") }, want: ErrInvalidNonce},

		{name: "unknown SecretId", edit: func(r *Request) { r.Params.Set("SecretId", "AKID-nobody") }, want: ErrUnknownSecretID},
		{name: "empty secret", edit: func(*Request) {}, lookup: func(string) ([]byte, error) { return []byte{}, nil }, want: ErrUnknownSecretID},

		{name: "wrong key", edit: func(*Request) {}, lookup: lookupFor(v.params["SecretId"], "not the secret"), want: ErrBadSignature},
		{name: "tampered passwd", edit: func(r *Request) { r.Params.Set("passwd", "Passw0rd?") }, want: ErrBadSignature},
		{name: "added instance", edit: func(r *Request) { r.Params.Set("instanceIds.3", "ins-evil0000") }, want: ErrBadSignature},
		{name: "removed instance", edit: func(r *Request) { r.Params.Del("instanceIds.2") }, want: ErrBadSignature},
		{name: "tampered Action", edit: func(r *Request) { r.Params.Set("Action", "RebootDevice") }, want: ErrBadSignature},
		{name: "tampered host", edit: func(r *Request) { r.Host = "bm.example.com:443" }, want: ErrBadSignature},
		{name: "tampered path", edit: func(r *Request) { r.Path = "/v2/other.php" }, want: ErrBadSignature},
		{name: "other HTTP method", edit: func(r *Request) { r.Method = "POST" }, want: ErrBadSignature},
		{name: "lower-case HTTP method", edit: func(r *Request) { r.Method = "get" }, want: ErrBadSignature},
		{name: "SHA1 signature sent as HmacSHA256", edit: func(r *Request) {
			sig := r.Params.Get("Signature")
			r.Params.Set("SignatureMethod", "HmacSHA256")
			r.Params.Set("Signature", sig)
		}, want: ErrBadSignature},
		{name: "signature not base64", edit: func(r *Request) { r.Params.Set("Signature", "not base64!") }, want: ErrBadSignature},
		{name: "signature truncated", edit: func(r *Request) { r.Params.Set("Signature", "Xdi1UQFJH37yrqWB0x8kcgxF") }, want: ErrBadSignature},
		{name: "signature without padding", edit: func(r *Request) { r.Params.Set("Signature", "Xdi1UQFJH37yrqWB0x8kcgxFipc") }, want: ErrBadSignature},
		// An unencoded '+' in a query string decodes to a space.
		{name: "plus turned to space", edit: func(r *Request) {
			r.Params.Set("Signature", strings.ReplaceAll(opensslVectors[1].signature, "+", " "))
		}, want: ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Request{Method: v.method, Host: v.host, Path: path, Params: values(v.params)}
			r.Params.Set("Signature", v.signature)
			tc.edit(&r)
			at := tc.now
			if at.IsZero() {
				at = now
			}
			lookup := tc.lookup
			if lookup == nil {
				lookup = lookupFor(v.params["SecretId"], v.secret)
			}
			res, err := Verify(r, lookup, at)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.SecretID != v.params["SecretId"] || res.Action != "ResetDevicePasswd" {
					t.Errorf("result %+v", res)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			for _, secretish := range []string{v.secret, "Passw0rd", v.signature} {
				if strings.Contains(err.Error(), secretish) {
					t.Errorf("error %q reveals %q", err, secretish)
				}
			}
		})
	}
}

func TestReplayKey(t *testing.T) {
	v := opensslVectors[2]
	m := map[string]string{}
	for k, x := range v.params {
		m[k] = x
	}
	m["Nonce"] = "0001" // the same nonce as "1"
	params := values(m)
	params.Set("Signature", specSign(v.method, v.host, path, m, v.secret))
	res, err := Verify(Request{Method: v.method, Host: v.host, Path: path, Params: params},
		lookupFor("AKID-3", v.secret), time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if want := "capi2:1700000000:1:AKID-3"; res.ReplayKey != want {
		t.Fatalf("ReplayKey = %q, want %q", res.ReplayKey, want)
	}
}

func TestLookupFailure(t *testing.T) {
	v := opensslVectors[0]
	params := values(v.params)
	params.Set("Signature", v.signature)
	boom := errors.New("database is down")
	_, err := Verify(Request{Method: v.method, Host: v.host, Path: path, Params: params},
		func(string) ([]byte, error) { return nil, boom }, time.Unix(1700000000, 0))
	if !errors.Is(err, boom) || errors.Is(err, ErrUnknownSecretID) || errors.Is(err, ErrBadSignature) {
		t.Fatalf("got %v, want only the lookup error", err)
	}
}

func TestSignRefuses(t *testing.T) {
	dup := url.Values{"Action": {"A", "B"}}
	if err := Sign("GET", "h", path, dup, []byte("k")); !errors.Is(err, ErrDuplicateParameter) {
		t.Errorf("duplicate: got %v", err)
	}
	md5 := url.Values{"SignatureMethod": {"HmacMD5"}}
	if err := Sign("GET", "h", path, md5, []byte("k")); !errors.Is(err, ErrUnsupportedMethod) {
		t.Errorf("HmacMD5: got %v", err)
	}
	// An old signature is replaced, not signed over or kept twice.
	p := url.Values{"Action": {"A"}, "Signature": {"old"}}
	if err := Sign("GET", "h", path, p, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if want := specSign("GET", "h", path, map[string]string{"Action": "A"}, "k"); p.Get("Signature") != want || len(p["Signature"]) != 1 {
		t.Errorf("Signature = %q, want %q", p["Signature"], want)
	}
}

// TestOverHTTP signs with Sign, sends through a real server as a query
// string (GET) and as a form body (POST), and verifies what net/http
// decoded.
func TestOverHTTP(t *testing.T) {
	const secretID, secret = "AKID-http", "http-secret"
	now := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		params := r.URL.Query()
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			params = r.PostForm
		}
		res, err := Verify(Request{Method: r.Method, Host: r.Host, Path: r.URL.Path, Params: params}, lookupFor(secretID, secret), now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, res.Action)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	for i, method := range []string{"GET", "POST", "GET", "POST"} {
		params := url.Values{
			"Action":        {"ResetDevicePasswd"},
			"Timestamp":     {fmt.Sprint(now.Unix())},
			"Nonce":         {fmt.Sprint(1000 + i)},
			"SecretId":      {secretID},
			"instanceIds.1": {"ins-0123abcd"},
			"passwd":        {"Pa&ss=w0rd+%(x)"},
		}
		if i >= 2 {
			params.Set("SignatureMethod", HmacSHA256)
		}
		if err := Sign(method, host, path, params, []byte(secret)); err != nil {
			t.Fatal(err)
		}
		var req *http.Request
		var err error
		if method == "GET" {
			req, err = http.NewRequest(method, srv.URL+path+"?"+params.Encode(), nil)
		} else {
			req, err = http.NewRequest(method, srv.URL+path, strings.NewReader(params.Encode()))
			if req != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ResetDevicePasswd" {
			t.Errorf("%s %s: %d %s", method, params.Get("SignatureMethod"), resp.StatusCode, body)
		}
	}
}
