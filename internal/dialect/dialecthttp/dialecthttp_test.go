package dialecthttp

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var (
	errKnown  = errors.New("sig: the header is malformed")
	errQuoted = errors.New("sig: stale")
)

func TestMatchSentinelGivesTheRulesMessageOrTheErrorsOwnText(t *testing.T) {
	table := []Sentinel[string]{{Err: errKnown, Code: "MALFORMED"}, {Err: errQuoted, Code: "STALE", Message: "too old"}}
	for _, c := range []struct {
		err        error
		code, msg  string
		wantsMatch bool
	}{
		{fmt.Errorf("verify: %w", errKnown), "MALFORMED", "verify: sig: the header is malformed", true},
		{errKnown, "MALFORMED", "the header is malformed", true},
		{errQuoted, "STALE", "too old", true},
		{errors.New("the database is down"), "", "", false},
	} {
		code, msg, ok := MatchSentinel(c.err, "sig: ", table)
		if code != c.code || msg != c.msg || ok != c.wantsMatch {
			t.Errorf("%v: got %q %q %v, want %q %q %v", c.err, code, msg, ok, c.code, c.msg, c.wantsMatch)
		}
	}
}

func TestDecodeObjectNamesTheProblemWithoutQuotingTheInput(t *testing.T) {
	var v struct {
		IDs []string `json:"ids"`
	}
	for _, c := range []struct{ body, want string }{
		{"", ""},
		{"  \n", ""},
		{`{"ids":["a"]}`, ""},
		{`{"ids":"secret-value"}`, `field "ids" must be []string`},
		{`{"ids":`, "malformed"},
		{`{"ids":[} secret`, "syntax error at byte 9"},
		{`[1]`, "it must be a JSON object"},
		{`{} {}`, "more than one JSON value"},
	} {
		err := DecodeObject([]byte(c.body), &v, "field %q must be %s")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.body, got, c.want)
		}
		if strings.Contains(got, "secret") {
			t.Errorf("%q: the error quotes the input: %q", c.body, got)
		}
	}
	if !IsMoreThanOne(DecodeObject([]byte(`1 2`), new(int), "%s %s")) {
		t.Error("two values are not reported as more than one")
	}
}

func TestReadBodyRefusesOneByteOverTheLimit(t *testing.T) {
	for _, c := range []struct {
		n       int
		tooLong bool
	}{{10, false}, {11, true}} {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", c.n)))
		b, err := ReadBody(httptest.NewRecorder(), r, 10)
		if errors.Is(err, ErrBodyTooLarge) != c.tooLong || (!c.tooLong && len(b) != c.n) {
			t.Errorf("%d bytes: got %d bytes, %v", c.n, len(b), err)
		}
	}
}
