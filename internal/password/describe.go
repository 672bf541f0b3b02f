package password

import (
	"fmt"
	"strconv"
	"strings"
)

// Spec is what the console needs to mirror a policy: its parameters, and
// its rules in the words the server uses. It marshals to one flat JSON
// object.
type Spec struct {
	Policy
	Description string `json:"description"`
	Rules       []Rule `json:"rules"`
	// MinUserNameLength mirrors the package constant of the same name.
	MinUserNameLength int `json:"minUserNameLength,omitempty"`
}

// Spec returns the policy with its description and rules, for the console.
func (p Policy) Spec() Spec {
	s := Spec{Policy: p, Description: p.Describe(), Rules: p.Rules()}
	if p.ForbidUser {
		s.MinUserNameLength = MinUserNameLength
	}
	return s
}

// Rules lists the rules of p in the order Check reports them.
func (p Policy) Rules() []Rule {
	codes := []string{RuleLength, RuleCharset}
	if p.MinClasses > 0 {
		codes = append(codes, RuleClasses)
	}
	if p.ForbidUser {
		codes = append(codes, RuleContainsUser)
	}
	if p.ForbidFirst != "" {
		codes = append(codes, RuleFirstChar)
	}
	rules := make([]Rule, len(codes))
	for i, c := range codes {
		rules[i] = Rule{Code: c, Message: p.message(c)}
	}
	return rules
}

// Describe returns the rules of p in one English sentence, for API errors
// and the console.
func (p Policy) Describe() string {
	rules := p.Rules()
	msgs := make([]string, len(rules))
	for i, r := range rules {
		msgs[i] = r.Message
	}
	return "The password " + strings.Join(msgs, "; ") + "."
}

// message is the text of one rule. It is built from the policy alone, which
// is what guarantees that no error ever repeats any part of a password.
func (p Policy) message(code string) string {
	switch code {
	case RuleLength:
		switch {
		case p.MaxLength == 0:
			return fmt.Sprintf("must be at least %d characters long", p.MinLength)
		case p.MaxLength == p.MinLength:
			return fmt.Sprintf("must be exactly %d characters long", p.MinLength)
		default:
			return fmt.Sprintf("must be %d to %d characters long", p.MinLength, p.MaxLength)
		}
	case RuleCharset:
		return "may contain only " + describeCharset(p.Allowed)
	case RuleClasses:
		names := make([]string, len(p.Classes))
		for i, c := range p.Classes {
			names[i] = c.Name
			if d := describeChars(c.Chars); d != "" && len(d) <= 16 {
				names[i] += " (" + d + ")"
			}
		}
		return fmt.Sprintf("must contain at least %d of: %s", p.MinClasses, strings.Join(names, ", "))
	case RuleContainsUser:
		return "must not contain the user name, in any case"
	case RuleFirstChar:
		return "must not start with " + joinOr(p.ForbidFirst)
	default:
		return "must follow the " + code + " rule"
	}
}

// describeCharset names a set close to all of printable ASCII by what it
// leaves out, which is much shorter than listing 90 characters.
func describeCharset(allowed string) string {
	const first, last = ' ', '~'
	var missing []string
	for c := rune(first); c <= last; c++ {
		if strings.ContainsRune(allowed, c) {
			continue
		}
		if c == ' ' {
			missing = append(missing, "space")
		} else {
			missing = append(missing, strconv.QuoteRune(c))
		}
	}
	allASCII := true
	for _, r := range allowed {
		if r < first || r > last {
			allASCII = false
		}
	}
	if allASCII && len(missing) <= 8 {
		if len(missing) == 0 {
			return "printable ASCII characters"
		}
		return "printable ASCII characters other than " + joinAnd(missing)
	}
	return describeChars(allowed)
}

// describeChars writes runs of three or more consecutive letters or digits
// as ranges ("a-z") and the rest as one literal group: "a-z, A-Z, 0-9 and
// !@#$%^+*()". Punctuation is never folded into a range: "$-&" would make
// people guess what lies between.
func describeChars(chars string) string {
	rs := []rune(chars)
	var parts []string
	var rest strings.Builder
	for i := 0; i < len(rs); {
		j := i
		for j+1 < len(rs) && rs[j+1] == rs[j]+1 && sameKind(rs[j], rs[j+1]) {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, string(rs[i])+"-"+string(rs[j]))
		} else {
			for _, r := range rs[i : j+1] {
				rest.WriteRune(r)
			}
		}
		i = j + 1
	}
	if rest.Len() > 0 {
		parts = append(parts, rest.String())
	}
	return joinAnd(parts)
}

func joinAnd(parts []string) string {
	if len(parts) <= 1 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// joinOr quotes each character of chars: "'/'", "'/' or '-'".
func joinOr(chars string) string {
	var quoted []string
	for _, r := range chars {
		quoted = append(quoted, strconv.QuoteRune(r))
	}
	if len(quoted) <= 1 {
		return strings.Join(quoted, "")
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
}

func sameKind(a, b rune) bool {
	kind := func(r rune) int {
		switch {
		case 'a' <= r && r <= 'z':
			return 1
		case 'A' <= r && r <= 'Z':
			return 2
		case '0' <= r && r <= '9':
			return 3
		}
		return 0
	}
	return kind(a) != 0 && kind(a) == kind(b)
}
