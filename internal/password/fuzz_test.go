package password

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCheck asserts that Check agrees with a plain reading of the rules,
// that its error text depends only on the policy and the rules broken (so it
// can never reveal the password), and that Generate's output always passes.
func FuzzCheck(f *testing.F) {
	seeds := []struct {
		policy uint8
		pw     string
		user   string
	}{
		{0, "", ""},
		{0, "Passw0rd!", "root"},
		{0, "ab:", ""},
		{0, "must be 8 to 64", ""},
		{1, "xAdministrator1!", "Administrator"},
		{1, "short", "Administrator"},
		{2, "Passw0rd`12", ""},
		{2, "abcdefgh" + strings.Repeat("é", 8), ""},
		{3, "12345678", ""},
		{3, "a1!@#$%&^*()", "root"},
		{4, "MyRoot1234!x", "root"},
		{4, "\xff\xfe\x00\n", "\xff\xfe"},
	}
	for _, s := range seeds {
		f.Add(s.policy, []byte(s.pw), s.user)
	}
	policies := allPolicies()
	f.Fuzz(func(t *testing.T, which uint8, pw []byte, user string) {
		p := policies[int(which)%len(policies)]
		err := Check(p, pw, user)

		want := oracle(p, pw, user)
		if got := codesOf(err); !slices.Equal(got, want) {
			t.Fatalf("%s: Check(%q, %q) broke %v, the rules say %v", p.Name, pw, user, got, want)
		}
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("error %v does not match ErrRejected", err)
			}
			// Built from the rule codes alone, without the password.
			if ref := errorFor(p, want); err.Error() != ref {
				t.Fatalf("error text depends on more than the rules broken:\n got %s\nwant %s", err, ref)
			}
			if len(pw) > 0 && strings.Contains(err.Error(), string(pw)) && !strings.Contains(allErrorTexts(p), string(pw)) {
				t.Fatalf("error %q contains the password %q", err, pw)
			}
		}

		gen, err := GenerateForUser(p, user)
		if err != nil {
			t.Fatalf("GenerateForUser(%s, %q): %v", p.Name, user, err)
		}
		if err := Check(p, gen, user); err != nil {
			t.Fatalf("generated password fails its own policy: %v", err)
		}
		gen, err = Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(p, gen, ""); err != nil {
			t.Fatalf("generated password fails its own policy: %v", err)
		}
	})
}

func codesOf(err error) []string {
	var pe *Error
	if !errors.As(err, &pe) {
		return nil
	}
	var codes []string
	for _, v := range pe.Violations {
		codes = append(codes, v.Rule)
	}
	return codes
}

// oracle restates the rules as simply as possible, with the standard
// library doing the work, to cross-check Check.
func oracle(p Policy, pw []byte, user string) []string {
	var broken []string
	s := string(pw)
	if n := utf8.RuneCountInString(s); n < p.MinLength || (p.MaxLength > 0 && n > p.MaxLength) {
		broken = append(broken, RuleLength)
	}
	if !utf8.ValidString(s) || strings.Trim(s, p.Allowed) != "" {
		broken = append(broken, RuleCharset)
	}
	if p.MinClasses > 0 {
		n := 0
		for _, c := range p.Classes {
			if strings.ContainsAny(s, c.Chars) {
				n++
			}
		}
		if n < p.MinClasses {
			broken = append(broken, RuleClasses)
		}
	}
	// Only ASCII letters fold: every policy allows only ASCII, so folding
	// more could only reject passwords that are rejected anyway.
	if p.ForbidUser && utf8.RuneCountInString(user) >= MinUserNameLength &&
		strings.Contains(asciiLower(s), asciiLower(user)) {
		broken = append(broken, RuleContainsUser)
	}
	if r, _ := utf8.DecodeRuneInString(s); s != "" && strings.ContainsRune(p.ForbidFirst, r) {
		broken = append(broken, RuleFirstChar)
	}
	return broken
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func errorFor(p Policy, codes []string) string {
	e := &Error{Policy: p.Name}
	for _, c := range codes {
		e.Violations = append(e.Violations, Violation{Rule: c, Message: p.message(c)})
	}
	return e.Error()
}

// allErrorTexts is every error text Check can return for p: one per subset
// of its rules. A password found in an error must come from this text.
func allErrorTexts(p Policy) string {
	rules := p.Rules()
	var texts []string
	for mask := 1; mask < 1<<len(rules); mask++ {
		var codes []string
		for i, r := range rules {
			if mask&(1<<i) != 0 {
				codes = append(codes, r.Code)
			}
		}
		texts = append(texts, errorFor(p, codes))
	}
	return strings.Join(texts, "\x00")
}
