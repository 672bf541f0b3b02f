package zc2

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// specSign is the signature written down from docs/design.md#signatures again, on purpose
// without any of the package's code, so that a shared mistake cannot make
// both sides agree.
func specSign(secret, timestamp, contentType, host string, body []byte) string {
	canonical := fmt.Sprintf("POST\n/\n\ncontent-type:%s\nhost:%s\n\ncontent-type;host\n%x",
		contentType, host, sha256.Sum256(body))
	stringToSign := fmt.Sprintf("ZC2-HMAC-SHA256\n%s\n%x", timestamp, sha256.Sum256([]byte(canonical)))
	mac := hmac.New(sha256.New, []byte(secret))
	io.WriteString(mac, stringToSign)
	return fmt.Sprintf("%x", mac.Sum(nil))
}

func specAuthorization(keyID, sig string) string {
	return "ZC2-HMAC-SHA256 Credential=" + keyID + ", SignedHeaders=content-type;host, Signature=" + sig
}

// Vectors computed with OpenSSL 3.0, by this script (zc2vec.sh):
//
//	KEY="$1"; TS="$2"; CT="$3"; HOST="$4"; BODY="$5"
//	BODYHASH=$(printf '%s' "$BODY" | openssl dgst -sha256 -r | cut -d' ' -f1)
//	CANONHASH=$(printf 'POST\n/\n\ncontent-type:%s\nhost:%s\n\ncontent-type;host\n%s' "$CT" "$HOST" "$BODYHASH" | openssl dgst -sha256 -r | cut -d' ' -f1)
//	printf 'ZC2-HMAC-SHA256\n%s\n%s' "$TS" "$CANONHASH" | openssl dgst -sha256 -hmac "$KEY" -r | cut -d' ' -f1
var opensslVectors = []struct {
	command                    string
	secret, ts, ct, host, body string
	signature                  string
}{
	{
		command:   `bash zc2vec.sh 'zc2-test-secret' 1700000000 application/json api.example.com '{"instanceIds":["ins-abc12345"],"password":"Passw0rd!"}'`,
		secret:    "zc2-test-secret",
		ts:        "1700000000",
		ct:        "application/json",
		host:      "api.example.com",
		body:      `{"instanceIds":["ins-abc12345"],"password":"Passw0rd!"}`,
		signature: "5e155668b0ad2fbb0f4d36fcd0db9202d8f30441faeea9a29fbc5fea80fb891a",
	},
	{
		command:   `bash zc2vec.sh 'another secret' 1712345678 'application/json; charset=utf-8' 'zc.example.net:8443' ''`,
		secret:    "another secret",
		ts:        "1712345678",
		ct:        "application/json; charset=utf-8",
		host:      "zc.example.net:8443",
		body:      "",
		signature: "48f800d25c69742ec5cdea9c9dab5e6d0ea3cc7eb551f36853888f7bb713eded",
	},
}

const testKeyID = "AKID-test-1"

func lookupFor(keyID, secret string) func(string) ([]byte, error) {
	return func(id string) ([]byte, error) {
		if id != keyID {
			return nil, fmt.Errorf("key %q: %w", id, ErrUnknownKey)
		}
		return []byte(secret), nil
	}
}

func unix(s int64) time.Time { return time.Unix(s, 0) }

func TestOpenSSLVectors(t *testing.T) {
	for _, v := range opensslVectors {
		if got := specSign(v.secret, v.ts, v.ct, v.host, []byte(v.body)); got != v.signature {
			t.Errorf("test signer disagrees with openssl for %s:\n got %s\nwant %s", v.command, got, v.signature)
		}
		in := VerifyInput{
			Authorization:   specAuthorization(testKeyID, v.signature),
			Timestamp:       v.ts,
			SignatureMethod: "ZC2-HMAC-SHA256",
			ContentType:     v.ct,
			Host:            v.host,
			Body:            []byte(v.body),
		}
		var sec int64
		fmt.Sscan(v.ts, &sec)
		res, err := Verify(in, lookupFor(testKeyID, v.secret), unix(sec))
		if err != nil {
			t.Fatalf("%s: %v", v.command, err)
		}
		want := Result{KeyID: testKeyID, Timestamp: unix(sec), ReplayKey: "zc2:" + v.signature}
		if res != want {
			t.Errorf("got %+v, want %+v", res, want)
		}
		if got := Sign(testKeyID, []byte(v.secret), v.ts, v.ct, v.host, []byte(v.body)); got != in.Authorization {
			t.Errorf("Sign = %q, want %q", got, in.Authorization)
		}
	}
}

// validInput is a correctly signed request at time 1700000000.
func validInput() VerifyInput {
	v := opensslVectors[0]
	return VerifyInput{
		Authorization:   specAuthorization(testKeyID, v.signature),
		Timestamp:       v.ts,
		SignatureMethod: "ZC2-HMAC-SHA256",
		ContentType:     v.ct,
		Host:            v.host,
		Body:            []byte(v.body),
	}
}

func TestVerify(t *testing.T) {
	v := opensslVectors[0]
	now := unix(1700000000)
	resign := func(in VerifyInput) VerifyInput {
		in.Authorization = specAuthorization(testKeyID, specSign(v.secret, in.Timestamp, in.ContentType, in.Host, in.Body))
		return in
	}
	tests := []struct {
		name   string
		edit   func(*VerifyInput)
		now    time.Time
		lookup func(string) ([]byte, error)
		want   error // nil: accepted
	}{
		{name: "valid", edit: func(*VerifyInput) {}},
		{name: "no signature method header", edit: func(in *VerifyInput) { in.SignatureMethod = "" }},
		{name: "upper-case hex", edit: func(in *VerifyInput) { in.Authorization = specAuthorization(testKeyID, strings.ToUpper(v.signature)) }},
		{name: "5 minutes early is fine", edit: func(*VerifyInput) {}, now: now.Add(-5 * time.Minute)},
		{name: "5 minutes late is fine", edit: func(*VerifyInput) {}, now: now.Add(5 * time.Minute)},

		{name: "missing authorization", edit: func(in *VerifyInput) { in.Authorization = "" }, want: ErrMissingAuthorization},
		{name: "blank authorization", edit: func(in *VerifyInput) { in.Authorization = " \t " }, want: ErrMissingAuthorization},
		{name: "other scheme", edit: func(in *VerifyInput) { in.Authorization = "Bearer abc" }, want: ErrUnsupportedMethod},
		{name: "AWS scheme", edit: func(in *VerifyInput) {
			in.Authorization = strings.Replace(in.Authorization, "ZC2-HMAC-SHA256", "AWS4-HMAC-SHA256", 1)
		}, want: ErrUnsupportedMethod},
		{name: "other signature method header", edit: func(in *VerifyInput) { in.SignatureMethod = "ZC2-HMAC-SHA1" }, want: ErrUnsupportedMethod},
		{name: "malformed authorization", edit: func(in *VerifyInput) { in.Authorization = "ZC2-HMAC-SHA256 garbage" }, want: ErrMalformedAuthorization},
		{name: "other signed headers", edit: func(in *VerifyInput) {
			in.Authorization = strings.Replace(in.Authorization, "content-type;host", "host", 1)
		}, want: ErrMalformedAuthorization},

		{name: "missing timestamp", edit: func(in *VerifyInput) { in.Timestamp = "" }, want: ErrInvalidTimestamp},
		{name: "signed timestamp", edit: func(in *VerifyInput) { in.Timestamp = "+1700000000" }, want: ErrInvalidTimestamp},
		{name: "negative timestamp", edit: func(in *VerifyInput) { in.Timestamp = "-1" }, want: ErrInvalidTimestamp},
		{name: "timestamp in milliseconds", edit: func(in *VerifyInput) { in.Timestamp = "1700000000000" }, want: ErrInvalidTimestamp},
		{name: "date timestamp", edit: func(in *VerifyInput) { in.Timestamp = "2023-11-14T22:13:20Z" }, want: ErrInvalidTimestamp},
		{name: "timestamp twice", edit: func(in *VerifyInput) { in.Timestamp = "1700000000, 1700000000" }, want: ErrInvalidTimestamp},
		{name: "stale", edit: func(*VerifyInput) {}, now: now.Add(5*time.Minute + time.Second), want: ErrStaleTimestamp},
		{name: "from the future", edit: func(*VerifyInput) {}, now: now.Add(-5*time.Minute - time.Second), want: ErrStaleTimestamp},
		{name: "long ago", edit: func(*VerifyInput) {}, now: now.Add(24 * time.Hour), want: ErrStaleTimestamp},

		{name: "unknown key", edit: func(in *VerifyInput) { in.Authorization = specAuthorization("AKID-other", v.signature) }, want: ErrUnknownKey},
		{name: "empty secret", edit: func(*VerifyInput) {}, lookup: func(string) ([]byte, error) { return nil, nil }, want: ErrUnknownKey},

		{name: "wrong key", edit: func(*VerifyInput) {}, lookup: lookupFor(testKeyID, "not-the-secret"), want: ErrBadSignature},
		{name: "tampered body", edit: func(in *VerifyInput) {
			in.Body = bytes.Replace(in.Body, []byte("Passw0rd!"), []byte("Passw0rd?"), 1)
		}, want: ErrBadSignature},
		{name: "extra byte in body", edit: func(in *VerifyInput) { in.Body = append(in.Body, '\n') }, want: ErrBadSignature},
		{name: "tampered host", edit: func(in *VerifyInput) { in.Host = "api.example.com:443" }, want: ErrBadSignature},
		{name: "host case", edit: func(in *VerifyInput) { in.Host = "API.example.com" }, want: ErrBadSignature},
		{name: "tampered content type", edit: func(in *VerifyInput) { in.ContentType = "text/plain" }, want: ErrBadSignature},
		{name: "content type sent twice", edit: func(in *VerifyInput) { in.ContentType += ", " + in.ContentType }, want: ErrBadSignature},
		{name: "content type padded", edit: func(in *VerifyInput) { in.ContentType += " " }, want: ErrBadSignature},
		{name: "tampered timestamp", edit: func(in *VerifyInput) { in.Timestamp = "1700000001" }, want: ErrBadSignature},
		{name: "timestamp with leading zero", edit: func(in *VerifyInput) { in.Timestamp = "01700000000" }, want: ErrBadSignature},
		{name: "tampered signature", edit: func(in *VerifyInput) {
			in.Authorization = specAuthorization(testKeyID, "0"+v.signature[1:])
		}, want: ErrBadSignature},

		{name: "re-signed after tampering is valid", edit: func(in *VerifyInput) {
			in.Body = []byte(`{}`)
			*in = resign(*in)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := validInput()
			tc.edit(&in)
			at := tc.now
			if at.IsZero() {
				at = now
			}
			lookup := tc.lookup
			if lookup == nil {
				lookup = lookupFor(testKeyID, v.secret)
			}
			res, err := Verify(in, lookup, at)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if res.KeyID != testKeyID {
					t.Errorf("KeyID = %q", res.KeyID)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			for _, secretish := range []string{v.secret, v.signature, "Passw0rd"} {
				if strings.Contains(err.Error(), secretish) {
					t.Errorf("error %q reveals %q", err, secretish)
				}
			}
		})
	}
}

// The replay key must not change with the spelling of the same signature,
// or a client could replay by upper-casing the hex.
func TestReplayKeyIgnoresHexCase(t *testing.T) {
	v := opensslVectors[0]
	lower := validInput()
	upper := validInput()
	upper.Authorization = specAuthorization(testKeyID, strings.ToUpper(v.signature))
	a, err := Verify(lower, lookupFor(testKeyID, v.secret), unix(1700000000))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Verify(upper, lookupFor(testKeyID, v.secret), unix(1700000000))
	if err != nil {
		t.Fatal(err)
	}
	if a.ReplayKey != b.ReplayKey || a.ReplayKey != "zc2:"+v.signature {
		t.Fatalf("replay keys %q and %q", a.ReplayKey, b.ReplayKey)
	}
}

func TestLookupFailure(t *testing.T) {
	boom := errors.New("database is down")
	_, err := Verify(validInput(), func(string) ([]byte, error) { return nil, boom }, unix(1700000000))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the lookup error", err)
	}
	for _, e := range []error{ErrUnknownKey, ErrBadSignature, ErrMalformedAuthorization} {
		if errors.Is(err, e) {
			t.Errorf("a failed lookup reads as %v", e)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	const sig = "5e155668b0ad2fbb0f4d36fcd0db9202d8f30441faeea9a29fbc5fea80fb891a"
	accepted := []string{
		"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig,
		"ZC2-HMAC-SHA256 Credential=AK1,SignedHeaders=content-type;host,Signature=" + sig,
		"ZC2-HMAC-SHA256   Credential=AK1 ,  SignedHeaders=content-type;host,\tSignature=" + sig + "  ",
		"ZC2-HMAC-SHA256\tCredential=AK1,\tSignedHeaders=content-type;host,\tSignature=" + sig,
		"  ZC2-HMAC-SHA256 Signature=" + sig + ", Credential=AK1, SignedHeaders=content-type;host",
		"zc2-hmac-sha256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + strings.ToUpper(sig),
	}
	for _, h := range accepted {
		a, err := ParseAuthorization(h)
		if err != nil {
			t.Errorf("ParseAuthorization(%q): %v", h, err)
			continue
		}
		if a.KeyID != "AK1" || a.SignedHeaders != "content-type;host" || fmt.Sprintf("%x", a.Signature) != sig {
			t.Errorf("ParseAuthorization(%q) = %+v", h, a)
		}
	}

	refused := []struct {
		h    string
		want error
	}{
		{"", ErrMissingAuthorization},
		{"   ", ErrMissingAuthorization},
		{"Bearer tok", ErrUnsupportedMethod},
		{"ZC2-HMAC-SHA1 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig, ErrUnsupportedMethod},
		{"Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig, ErrUnsupportedMethod},
		{"ZC2-HMAC-SHA256", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 ", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=, SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=A K, SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=" + strings.Repeat("k", 129) + ", SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, Credential=AK2, SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig + ", Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig + ", Extra=1", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig + ",", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 credential=AK1, SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential = AK1, SignedHeaders=content-type;host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=host;content-type, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host;x-zc-action, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=Content-Type;Host, Signature=" + sig, ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig[1:], ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig + "00", ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + "g" + sig[1:], ErrMalformedAuthorization},
		{"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=", ErrMalformedAuthorization},
	}
	for _, tc := range refused {
		if a, err := ParseAuthorization(tc.h); !errors.Is(err, tc.want) {
			t.Errorf("ParseAuthorization(%q) = %+v, %v; want %v", tc.h, a, err, tc.want)
		}
	}
}

// TestOverHTTP signs with SignRequest, sends through a real server, and
// verifies with NewVerifyInput: Host and Content-Type must survive net/http
// on both sides.
func TestOverHTTP(t *testing.T) {
	const secret = "over-http-secret"
	now := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			t.Error(err)
		}
		res, err := Verify(NewVerifyInput(r, body), lookupFor(testKeyID, secret), now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, res.KeyID)
	}))
	defer srv.Close()

	send := func(edit func(*http.Request)) (int, string) {
		t.Helper()
		body := []byte(`{"instanceIds":["ins-0123abcd"],"password":"Passw0rd!"}`)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v2/vm", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-ZC-Action", "ResetInstancesPassword")
		SignRequest(req, body, testKeyID, []byte(secret), now)
		edit(req)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := send(func(*http.Request) {}); code != http.StatusOK || body != testKeyID {
		t.Fatalf("signed request: %d %s", code, body)
	}
	if code, body := send(func(r *http.Request) { r.Header.Add("Content-Type", "text/plain") }); code != http.StatusUnauthorized {
		t.Fatalf("two Content-Type headers: %d %s", code, body)
	}
	if code, body := send(func(r *http.Request) { r.Host = "elsewhere.example" }); code != http.StatusUnauthorized {
		t.Fatalf("changed Host: %d %s", code, body)
	}
	if code, body := send(func(r *http.Request) { r.Header.Del("Authorization") }); code != http.StatusUnauthorized || !strings.Contains(body, "missing") {
		t.Fatalf("no Authorization: %d %s", code, body)
	}
}

func TestSignRequestSetsHeaders(t *testing.T) {
	body := []byte(`{}`)
	req := httptest.NewRequest(http.MethodPost, "https://zc.example.com/api/v2/zec", bytes.NewReader(body))
	now := unix(1700000123)
	SignRequest(req, body, testKeyID, []byte("s3cret"), now)
	if got := req.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := req.Header.Get("X-ZC-Timestamp"); got != "1700000123" {
		t.Errorf("X-ZC-Timestamp = %q", got)
	}
	if got := req.Header.Get("X-ZC-Signature-Method"); got != "ZC2-HMAC-SHA256" {
		t.Errorf("X-ZC-Signature-Method = %q", got)
	}
	want := specAuthorization(testKeyID, specSign("s3cret", "1700000123", "application/json", "zc.example.com", body))
	if got := req.Header.Get("Authorization"); got != want {
		t.Errorf("Authorization = %q\nwant %q", got, want)
	}
}
