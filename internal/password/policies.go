package password

import "strings"

// OS types understood by Strictest. They match the instance OS types.
const (
	OSLinux   = "linux"
	OSWindows = "windows"
)

const (
	lowers = "abcdefghijklmnopqrstuvwxyz"
	uppers = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits = "0123456789"
	// Printable ASCII punctuation without ':' (chpasswd reads "user:password"
	// lines) and without space (a leading or trailing space is invisible and
	// easily lost by forms, shells and copy and paste).
	hostSpecials = "!\"#$%&'()*+,-./;<=>?@[\\]^_`{|}~"
)

// The policies are functions rather than variables so that no caller can
// change the rules of another by editing a shared slice.

// Linux is the rule for Linux instances through the native API and the
// console: 8 to 64 printable ASCII characters other than space and ':', with
// at least 3 of lowercase letters, uppercase letters, digits and special
// characters.
func Linux() Policy {
	return Policy{
		Name:       OSLinux,
		MinLength:  8,
		MaxLength:  64,
		Allowed:    lowers + uppers + digits + hostSpecials,
		Classes:    fourClasses(hostSpecials),
		MinClasses: 3,
	}
}

// Windows is the rule for Windows instances through the native API and the
// console: the Linux character set, 12 to 64 characters, at least 3 classes,
// and not containing the user name (as Windows' own complexity rule).
func Windows() Policy {
	return Policy{
		Name:       OSWindows,
		MinLength:  12,
		MaxLength:  64,
		Allowed:    lowers + uppers + digits + hostSpecials,
		Classes:    fourClasses(hostSpecials),
		MinClasses: 3,
		ForbidUser: true,
	}
}

// ActionAPI is the rule of ResetInstancesPassword: 8 to 16 characters from
// a-z, A-Z, 0-9 and !@#$%^+*(). The document's own example uses a backtick,
// which its rule does not list; the rule wins.
func ActionAPI() Policy {
	const specials = "!@#$%^+*()"
	return Policy{
		Name:      "action-api",
		MinLength: 8,
		MaxLength: 16,
		Allowed:   lowers + uppers + digits + specials,
		// The document asks for no mix of classes; the classes are still
		// listed so that the console can show them and Generate uses them.
		Classes: fourClasses(specials),
	}
}

// BareMetal is the rule of ResetDevicePasswd: 8 to 16 characters, only
// letters, digits and !@#$%&^*(), with at least two of those three kinds.
func BareMetal() Policy {
	const specials = "!@#$%&^*()"
	return Policy{
		Name:      "bare-metal",
		MinLength: 8,
		MaxLength: 16,
		Allowed:   lowers + uppers + digits + specials,
		Classes: []Class{
			{Name: "letters", Chars: lowers + uppers},
			{Name: "digits", Chars: digits},
			{Name: "special characters", Chars: specials},
		},
		MinClasses: 2,
	}
}

// tencentSpecials are the special characters Tencent Cloud's
// ResetInstancesPassword lists.
const tencentSpecials = "()`~!@#$%^&*-+=_|{}[]:;'<>,.?/"

// TencentLinux is Tencent Cloud API 3.0's rule for Linux instances
// (ResetInstancesPassword): 8 to 30 characters from a-z, A-Z, 0-9 and
// ()`~!@#$%^&*-+=_|{}[]:;'<>,.?/, at least 3 of those four kinds, not
// starting with '/'.
func TencentLinux() Policy {
	return Policy{
		Name:        "tencent-linux",
		MinLength:   8,
		MaxLength:   30,
		Allowed:     lowers + uppers + digits + tencentSpecials,
		Classes:     fourClasses(tencentSpecials),
		MinClasses:  3,
		ForbidFirst: "/",
	}
}

// TencentWindows is Tencent Cloud API 3.0's rule for Windows instances: 12
// to 30 characters of the Linux rule's set, at least 3 kinds, not starting
// with '/', and not containing the user name.
func TencentWindows() Policy {
	p := TencentLinux()
	p.Name, p.MinLength, p.ForbidUser = "tencent-windows", 12, true
	return p
}

// Tencent is the Tencent rule for a batch of instances with the given OS
// types: like Strictest, a password it accepts is accepted by the rule of
// every type listed, and an unknown type counts as both.
func Tencent(osTypes ...string) Policy {
	return forTypes(TencentLinux(), TencentWindows(), osTypes)
}

func fourClasses(specials string) []Class {
	return []Class{
		{Name: "lowercase letters", Chars: lowers},
		{Name: "uppercase letters", Chars: uppers},
		{Name: "digits", Chars: digits},
		{Name: "special characters", Chars: specials},
	}
}

// Strictest returns the policy for a batch of instances with the given OS
// types (OSLinux, OSWindows; case and surrounding space are ignored): a
// password it accepts is accepted by the policy of every type listed. An
// unknown OS type, or no type at all, yields the strictest policy of all,
// since a password too weak for some instance must not slip through.
func Strictest(osTypes ...string) Policy {
	return forTypes(Linux(), Windows(), osTypes)
}

// forTypes picks, of one family's Linux and Windows rules, the one a batch of
// the given OS types needs: both combined when the batch mixes them, and
// when a type is unknown or none is given, so that a password too weak for
// some instance cannot slip through.
func forTypes(linux, windows Policy, osTypes []string) Policy {
	hasLinux, hasWindows := classify(osTypes)
	switch {
	case hasLinux && !hasWindows:
		return linux
	case hasWindows && !hasLinux:
		return windows
	default:
		return combine(linux, windows)
	}
}

// classify says which kinds of OS a batch holds (case and surrounding space
// ignored); an unknown type counts as both.
func classify(osTypes []string) (linux, windows bool) {
	for _, t := range osTypes {
		switch strings.ToLower(strings.TrimSpace(t)) {
		case OSLinux:
			linux = true
		case OSWindows:
			windows = true
		default:
			linux, windows = true, true
		}
	}
	return linux, windows
}

// combine returns a policy that accepts only what both a and b accept. It
// expects a and b to name the same classes (true of Linux and Windows): two
// class-count rules over different classes cannot be expressed as one.
func combine(a, b Policy) Policy {
	p := Policy{
		Name:       a.Name + "+" + b.Name,
		MinLength:  max(a.MinLength, b.MinLength),
		MaxLength:  minLimit(a.MaxLength, b.MaxLength),
		MinClasses: max(a.MinClasses, b.MinClasses),
		ForbidUser: a.ForbidUser || b.ForbidUser,
	}
	p.ForbidFirst = a.ForbidFirst
	for _, r := range b.ForbidFirst {
		if !strings.ContainsRune(p.ForbidFirst, r) {
			p.ForbidFirst += string(r)
		}
	}
	p.Allowed = intersect(a.Allowed, b.Allowed)
	for _, c := range a.Classes {
		p.Classes = append(p.Classes, Class{Name: c.Name, Chars: intersect(c.Chars, p.Allowed)})
	}
	return p
}

// minLimit is min where 0 means unlimited.
func minLimit(a, b int) int {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	default:
		return min(a, b)
	}
}

func intersect(a, b string) string {
	var sb strings.Builder
	for _, r := range a {
		if strings.ContainsRune(b, r) {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}
