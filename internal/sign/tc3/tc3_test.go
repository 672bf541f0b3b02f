package tc3

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	secretID = "AKIDfleetpassExample"
	host     = "127.0.0.1:42243"
)

var (
	secret = []byte("fleetpass-example-secret")
	now    = time.Unix(1796141430, 0)
)

func lookup(id string) ([]byte, error) {
	if id != secretID {
		return nil, ErrUnknownSecretID
	}
	return secret, nil
}

// signed is a request as the Go SDK sends it, signed at ts.
func signed(ts time.Time, body string) Input {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set("Authorization", Sign(secretID, secret, "cvm", ts, host, "application/json", []byte(body)))
	return Input{Authorization: h.Get("Authorization"), Timestamp: h.Get(HeaderTimestamp), Header: h, Host: host,
		Body: []byte(body), Service: "cvm"}
}

func TestVerifyAcceptsWhatSignMakes(t *testing.T) {
	in := signed(now, `{"Offset":0,"Limit":10}`)
	res, err := Verify(in, lookup, now.Add(4*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.SecretID != secretID || !res.Timestamp.Equal(now) {
		t.Errorf("result %+v", res)
	}
	// Identical requests are separate calls: nothing is remembered.
	if _, err := Verify(in, lookup, now); err != nil {
		t.Fatalf("the same request again: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Input)
		at     time.Time
		want   error
	}{
		{"no Authorization", func(in *Input) { in.Authorization = "" }, now, ErrMissingAuthorization},
		{"another scheme", func(in *Input) {
			in.Authorization = strings.Replace(in.Authorization, "TC3-HMAC-SHA256", "ZC2-HMAC-SHA256", 1)
		}, now, ErrMalformedAuthorization},
		{"another service", func(in *Input) { in.Service = "bm" }, now, ErrWrongService},
		{"no timestamp", func(in *Input) { in.Timestamp = "" }, now, ErrInvalidTimestamp},
		{"signed timestamp", func(in *Input) { in.Timestamp = "+" + in.Timestamp[1:] }, now, ErrInvalidTimestamp},
		{"more than 5 minutes old", func(*Input) {}, now.Add(5*time.Minute + time.Second), ErrStaleTimestamp},
		{"more than 5 minutes ahead", func(*Input) {}, now.Add(-5*time.Minute - time.Second), ErrStaleTimestamp},
		{"a scope date that is not the timestamp's", func(in *Input) {
			in.Authorization = strings.Replace(in.Authorization, "/2026-12-01/", "/2026-12-02/", 1)
		}, now, ErrScopeDate},
		{"unknown SecretId", func(in *Input) { in.Authorization = strings.Replace(in.Authorization, secretID, "AKIDother", 1) }, now, ErrUnknownSecretID},
		{"another body", func(in *Input) { in.Body = []byte(`{"Offset":0,"Limit":11}`) }, now, ErrBadSignature},
		{"another host", func(in *Input) { in.Host = "127.0.0.1:42244" }, now, ErrBadSignature},
		{"another content type", func(in *Input) { in.Header.Set("Content-Type", "application/json; charset=utf-8") }, now, ErrBadSignature},
		{"an unsigned payload", func(in *Input) { in.Header.Set(HeaderContentSHA256, "UNSIGNED-PAYLOAD") }, now, ErrUnsignedPayload},
		{"a signed header sent twice", func(in *Input) { in.Header.Add("Content-Type", "text/plain") }, now, ErrMalformedAuthorization},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := signed(now, `{"Offset":0,"Limit":10}`)
			tc.change(&in)
			if _, err := Verify(in, lookup, tc.at); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyAcceptsTheBodysOwnHash(t *testing.T) {
	in := signed(now, `{}`)
	in.Header.Set(HeaderContentSHA256, hexSHA256([]byte(`{}`)))
	if _, err := Verify(in, lookup, now); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyAcceptsMoreSignedHeaders(t *testing.T) {
	// Tencent's documentation signs x-tc-action too, value lower-cased.
	in := signed(now, `{}`)
	in.Header.Set("X-TC-Action", "DescribeInstances")
	auth := Authorization{SecretID: secretID, Date: "2026-12-01", Service: "cvm", SignedHeaders: []string{"content-type", "host", "x-tc-action"}}
	canonical := "content-type:application/json\nhost:" + host + "\nx-tc-action:describeinstances\n"
	sig := signature(secret, auth, in.Timestamp, canonical, in.Body)
	in.Authorization = "TC3-HMAC-SHA256 Credential=" + secretID + "/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature=" + hexOf(sig)
	if _, err := Verify(in, lookup, now); err != nil {
		t.Fatal(err)
	}
	in.Header.Set("X-TC-Action", "StopInstances")
	if _, err := Verify(in, lookup, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a signed header changed: %v", err)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestParseAuthorization(t *testing.T) {
	const sig = "dba0f440016c107dc8566c3e2a7ab6b10d0dff43769256abd79eab9d2dbba192"
	ok := "TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig
	a, err := ParseAuthorization(ok)
	if err != nil {
		t.Fatal(err)
	}
	if a.SecretID != "AKID1" || a.Date != "2026-12-01" || a.Service != "cvm" || strings.Join(a.SignedHeaders, ";") != "content-type;host" {
		t.Errorf("parsed %+v", a)
	}
	for _, bad := range []string{
		"TC3-HMAC-SHA256",
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc2_request, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-1-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/CVM/tc3_request, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=host;content-type, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig[:10],
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + strings.Repeat("zz", 32),
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig,
		"TC3-HMAC-SHA256 Credential=AKID1/2026-12-01/cvm/tc3_request, SignedHeaders=content-type;host, Signature=" + sig + ", Extra=1",
	} {
		if _, err := ParseAuthorization(bad); !errors.Is(err, ErrMalformedAuthorization) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}
