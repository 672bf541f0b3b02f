package zc2

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var sentinels = []error{
	ErrMissingAuthorization, ErrMalformedAuthorization, ErrUnsupportedMethod,
	ErrInvalidTimestamp, ErrStaleTimestamp, ErrUnknownKey, ErrBadSignature,
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzParseAuthorization(f *testing.F) {
	const sig = "5e155668b0ad2fbb0f4d36fcd0db9202d8f30441faeea9a29fbc5fea80fb891a"
	for _, s := range []string{
		"",
		"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=content-type;host, Signature=" + sig,
		"ZC2-HMAC-SHA256\tSignature=" + sig + ",Credential=AK1 ,SignedHeaders=content-type;host",
		"ZC2-HMAC-SHA256 Credential=AK1, SignedHeaders=host, Signature=" + sig,
		"ZC2-HMAC-SHA256 Credential=a=b, SignedHeaders=content-type;host, Signature=" + sig,
		"ZC2-HMAC-SHA256 ,,,",
		"Bearer x",
		"ZC2-HMAC-SHA256 Credential=\x00, SignedHeaders=content-type;host, Signature=" + sig,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseAuthorization(h)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("ParseAuthorization(%q): error %v matches no sentinel", h, err)
			}
			return
		}
		if a.KeyID == "" || strings.ContainsAny(a.KeyID, " \t,") || a.SignedHeaders != SignedHeaders || len(a.Signature) != 32 {
			t.Fatalf("ParseAuthorization(%q) accepted %+v", h, a)
		}
		// What was accepted must say the same thing in the canonical form.
		again, err := ParseAuthorization(specAuthorization(a.KeyID, hex.EncodeToString(a.Signature)))
		if err != nil || again.KeyID != a.KeyID || !bytes.Equal(again.Signature, a.Signature) {
			t.Fatalf("canonical form of %+v parses as %+v, %v", a, again, err)
		}
		if a.ReplayKey() != "zc2:"+hex.EncodeToString(a.Signature) {
			t.Fatalf("ReplayKey = %q", a.ReplayKey())
		}
	})
}

// FuzzVerify signs arbitrary requests with the test-side signer and checks
// that Verify accepts exactly those signed in time with the right secret,
// and that an arbitrary Authorization header only passes if it carries the
// right signature.
func FuzzVerify(f *testing.F) {
	for _, v := range opensslVectors {
		f.Add([]byte(v.secret), []byte(v.body), v.host, v.ct, int64(0), "")
	}
	f.Add([]byte("k"), []byte(nil), "", "", int64(300), "ZC2-HMAC-SHA256 Credential=AKID-test-1, SignedHeaders=content-type;host, Signature=00")
	f.Add([]byte("k"), []byte("{}"), "h\nhost:x", "a\n", int64(-301), "")
	f.Add([]byte(""), []byte("{}"), "h", "application/json", int64(1), "")
	f.Fuzz(func(t *testing.T, secret, body []byte, host, ct string, skew int64, auth string) {
		now := time.Unix(1700000000, 0)
		skew %= 1000 // seconds; wide enough to cross MaxClockSkew both ways
		ts := strconv.FormatInt(now.Unix()+skew, 10)
		good := specSign(string(secret), ts, ct, host, body)
		in := VerifyInput{
			Authorization: specAuthorization(testKeyID, good),
			Timestamp:     ts,
			ContentType:   ct,
			Host:          host,
			Body:          body,
		}
		lookup := lookupFor(testKeyID, string(secret))

		_, err := Verify(in, lookup, now)
		switch {
		case skew > 300 || skew < -300:
			if !errors.Is(err, ErrStaleTimestamp) {
				t.Fatalf("skew %ds: got %v", skew, err)
			}
			return
		case len(secret) == 0:
			if !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("empty secret: got %v", err)
			}
			return
		case err != nil:
			t.Fatalf("correctly signed request refused: %v", err)
		}

		tampered := in
		tampered.Body = append(bytes.Clone(body), 'x')
		if _, err := Verify(tampered, lookup, now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered body: got %v", err)
		}
		tampered = in
		tampered.Host = host + "x"
		if _, err := Verify(tampered, lookup, now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered host: got %v", err)
		}

		in.Authorization = auth
		_, err = Verify(in, lookup, now)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		a, perr := ParseAuthorization(auth)
		if perr != nil || hex.EncodeToString(a.Signature) != good {
			t.Fatalf("Verify accepted Authorization %q, which lacks the signature %s", auth, good)
		}
	})
}
