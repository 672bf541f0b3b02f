// Package password holds the rules a new login password must follow, and
// generates passwords that follow them.
//
// A rule set is a Policy: plain data that can be sent to the web console as
// JSON (see Policy.Spec), so the console can check a password as the user
// types it, with the same words the server uses. Check reports which rules a
// password broke as Violations. Nothing this package returns ever contains
// the password, not even one of its characters, so errors and violations may
// be shown to API clients and written to logs.
//
// Each front door enforces the rule of the document it implements
// (ActionAPI, BareMetal); the native API and the console use Strictest for
// the OS types of the selected instances.
package password

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"
)

// Rule codes. They are stable: API dialects and the console key on them.
const (
	RuleLength       = "length"
	RuleCharset      = "charset"
	RuleClasses      = "classes"
	RuleContainsUser = "contains_user"
	RuleFirstChar    = "first_char"
)

// MinUserNameLength is the shortest user name that the contains_user rule
// looks for. Like Windows, shorter names are ignored: a two-letter name
// would forbid too many good passwords while adding nothing to their
// strength.
const MinUserNameLength = 3

// ErrRejected is matched (with errors.Is) by every *Error returned by Check.
var ErrRejected = errors.New("password rejected")

// A Policy is a set of password rules, as data.
//
// Lengths count characters (Unicode code points), not bytes; all the
// policies of this package only allow ASCII anyway.
type Policy struct {
	// Name identifies the policy in errors and in the console, e.g. "linux".
	Name string `json:"name"`
	// MinLength is the smallest number of characters.
	MinLength int `json:"minLength"`
	// MaxLength is the largest number of characters; 0 means no limit.
	MaxLength int `json:"maxLength,omitempty"`
	// Allowed lists every character a password may contain.
	Allowed string `json:"allowed"`
	// Classes are the character classes counted by MinClasses.
	Classes []Class `json:"classes,omitempty"`
	// MinClasses is how many Classes must each have at least one character
	// in the password.
	MinClasses int `json:"minClasses,omitempty"`
	// ForbidUser forbids the user name (compared case-insensitively) inside
	// the password, once the name has MinUserNameLength characters.
	ForbidUser bool `json:"forbidUser,omitempty"`
	// ForbidFirst lists characters a password must not start with.
	ForbidFirst string `json:"forbidFirst,omitempty"`
}

// A Class is a named set of characters, such as "digits".
type Class struct {
	// Name is meant for humans: "uppercase letters".
	Name  string `json:"name"`
	Chars string `json:"chars"`
}

// A Rule is one requirement of a policy, in words.
type Rule struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// A Violation names a rule a password broke. Message depends only on the
// policy and the rule, never on the password.
type Violation struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Error is the error returned by Check. It holds no trace of the password.
type Error struct {
	Policy     string
	Violations []Violation
}

func (e *Error) Error() string {
	msgs := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		msgs[i] = v.Message
	}
	return "password does not meet the " + e.Policy + " rules: it " + strings.Join(msgs, "; it ")
}

// Unwrap lets callers test for ErrRejected without knowing the type.
func (e *Error) Unwrap() error { return ErrRejected }

// Has reports whether the rule with the given code was broken.
func (e *Error) Has(rule string) bool {
	for _, v := range e.Violations {
		if v.Rule == rule {
			return true
		}
	}
	return false
}

// Check tells whether password follows policy p for the given user name
// (which may be empty). It returns nil or an *Error listing every broken
// rule, in the order of p.Rules.
func Check(p Policy, password []byte, user string) error {
	var vs []Violation
	broken := func(code string) {
		vs = append(vs, Violation{Rule: code, Message: p.message(code)})
	}
	if n := utf8.RuneCount(password); n < p.MinLength || (p.MaxLength > 0 && n > p.MaxLength) {
		broken(RuleLength)
	}
	if !onlyFrom(password, p.Allowed) {
		broken(RuleCharset)
	}
	if p.MinClasses > 0 && countClasses(password, p.Classes, p.MinClasses) < p.MinClasses {
		broken(RuleClasses)
	}
	if p.ForbidUser && containsUser(password, user) {
		broken(RuleContainsUser)
	}
	if r, _ := utf8.DecodeRune(password); p.ForbidFirst != "" && len(password) > 0 && strings.ContainsRune(p.ForbidFirst, r) {
		broken(RuleFirstChar)
	}
	if len(vs) == 0 {
		return nil
	}
	return &Error{Policy: p.Name, Violations: vs}
}

func onlyFrom(password []byte, allowed string) bool {
	for _, r := range string(password) {
		if r == utf8.RuneError || !strings.ContainsRune(allowed, r) {
			return false
		}
	}
	return true
}

// countClasses stops counting at enough, so a long password costs no more
// than needed.
func countClasses(password []byte, classes []Class, enough int) int {
	n := 0
	for _, c := range classes {
		if bytes.ContainsAny(password, c.Chars) {
			n++
			if n >= enough {
				break
			}
		}
	}
	return n
}

// containsUser folds ASCII case only: every policy here allows only ASCII,
// so a user name with other letters cannot match an acceptable password.
func containsUser(password []byte, user string) bool {
	if utf8.RuneCountInString(user) < MinUserNameLength {
		return false
	}
	u := []byte(user)
	for i := 0; i+len(u) <= len(password); i++ {
		if asciiEqualFold(password[i:i+len(u)], u) {
			return true
		}
	}
	return false
}

func asciiEqualFold(a, b []byte) bool {
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
