package password

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

type checkCase struct {
	name   string
	policy Policy
	pw     string
	user   string
	want   []string // rule codes, in order; nil means accepted
}

// runCheckCases also asserts, for every case, the promises that hold for
// any password: the error names the policy, and never shows the password.
func runCheckCases(t *testing.T, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.policy, []byte(tc.pw), tc.user)
			if got := ruleCodes(t, err); !slices.Equal(got, tc.want) {
				t.Fatalf("Check(%s, %q, %q) broke %v, want %v", tc.policy.Name, tc.pw, tc.user, got, tc.want)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrRejected) {
				t.Errorf("errors.Is(err, ErrRejected) = false")
			}
			if !strings.Contains(err.Error(), tc.policy.Name) {
				t.Errorf("error %q does not name the policy", err)
			}
			if tc.pw != "" && strings.Contains(err.Error(), tc.pw) && !strings.Contains(allErrorTexts(tc.policy), tc.pw) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func ruleCodes(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *password.Error", err, err)
	}
	codes := make([]string, len(pe.Violations))
	for i, v := range pe.Violations {
		codes[i] = v.Rule
	}
	return codes
}

var (
	length    = []string{RuleLength}
	charset   = []string{RuleCharset}
	classes   = []string{RuleClasses}
	brokeUser = []string{RuleContainsUser}
)

func TestRuleLength(t *testing.T) {
	runCheckCases(t, []checkCase{
		{"linux/empty", Linux(), "", "", []string{RuleLength, RuleClasses}},
		{"linux/7 is too short", Linux(), "Ab1!xyz", "", length},
		{"linux/8 is enough", Linux(), "Ab1!xyzw", "", nil},
		{"linux/64 is the most", Linux(), "Ab1!" + strings.Repeat("x", 60), "", nil},
		{"linux/65 is too long", Linux(), "Ab1!" + strings.Repeat("x", 61), "", length},
		{"windows/11 is too short", Windows(), "Abcdefgh1!x", "", length},
		{"windows/12 is enough", Windows(), "Abcdefgh1!xy", "", nil},
		{"windows/65 is too long", Windows(), "Ab1!" + strings.Repeat("x", 61), "", length},
		{"action-api/7 is too short", ActionAPI(), "abcdEF1", "", length},
		{"action-api/8 is enough", ActionAPI(), "abcdEFG1", "", nil},
		{"action-api/16 is the most", ActionAPI(), "abcdEFG1abcdEFG1", "", nil},
		{"action-api/17 is too long", ActionAPI(), "abcdEFG1abcdEFG1x", "", length},
		{"bare-metal/7 is too short", BareMetal(), "abcd123", "", length},
		{"bare-metal/16 is the most", BareMetal(), "abcd1234abcd1234", "", nil},
		{"bare-metal/17 is too long", BareMetal(), "abcd1234abcd1234x", "", length},
		// Characters, not bytes: 16 characters in 24 bytes is a charset
		// problem only.
		{"action-api/counts characters", ActionAPI(), "abcdefgh" + strings.Repeat("é", 8), "", charset},
		{"linux/counts characters", Linux(), "ééé", "", []string{RuleLength, RuleCharset, RuleClasses}},
		{"no maximum", Policy{Name: "open", MinLength: 2, Allowed: "a"}, strings.Repeat("a", 1000), "", nil},
	})
}

func TestRuleCharset(t *testing.T) {
	runCheckCases(t, []checkCase{
		// The action API's own example has a backtick its rule does not list.
		{"action-api/backtick", ActionAPI(), "Passw0rd`12", "", charset},
		{"action-api/space", ActionAPI(), "Pass w0rd12", "", charset},
		{"action-api/ampersand is not listed", ActionAPI(), "Passw0rd&12", "", charset},
		{"action-api/every listed special", ActionAPI(), "aA1!@#$%^+*()", "", nil},
		{"bare-metal/plus is not listed", BareMetal(), "Passw0rd+", "", charset},
		{"bare-metal/every listed special", BareMetal(), "a1!@#$%&^*()", "", nil},
		{"linux/colon", Linux(), "Passw0rd:x", "", charset},
		{"linux/newline", Linux(), "Passw0rd!\n", "", charset},
		{"linux/carriage return", Linux(), "Passw0rd!\r", "", charset},
		{"linux/tab", Linux(), "Pass\tw0rd!", "", charset},
		{"linux/space", Linux(), "Pass w0rd!", "", charset},
		{"linux/NUL", Linux(), "Passw0rd!\x00", "", charset},
		{"linux/DEL", Linux(), "Passw0rd!\x7f", "", charset},
		{"linux/non-ASCII letter", Linux(), "Pässw0rd!", "", charset},
		{"linux/invalid UTF-8", Linux(), "Passw0rd!\xff", "", charset},
		{"linux/every special", Linux(), "aA1" + hostSpecials, "", nil},
		{"windows/colon", Windows(), "Passw0rd!:xy", "", charset},
		{"windows/control character", Windows(), "Passw0rd!\x01xy", "", charset},
	})
}

func TestRuleClasses(t *testing.T) {
	runCheckCases(t, []checkCase{
		{"linux/one class", Linux(), "abcdefgh", "", classes},
		{"linux/two classes", Linux(), "abcdefg1", "", classes},
		{"linux/lower upper digit", Linux(), "abcdefG1", "", nil},
		{"linux/lower special digit", Linux(), "abcdef!1", "", nil},
		{"linux/upper special digit", Linux(), "ABCDEF!1", "", nil},
		{"linux/lower upper special", Linux(), "abcdeF!x", "", nil},
		{"windows/two classes", Windows(), "abcdefghijk1", "", classes},
		{"windows/three classes", Windows(), "abcdefghijK1", "", nil},
		{"bare-metal/letters only", BareMetal(), "abcdEFGH", "", classes},
		{"bare-metal/digits only", BareMetal(), "12345678", "", classes},
		{"bare-metal/specials only", BareMetal(), "!@#$%&^*", "", classes},
		{"bare-metal/letters digits", BareMetal(), "abcd1234", "", nil},
		{"bare-metal/letters specials", BareMetal(), "abcd!@#$", "", nil},
		{"bare-metal/digits specials", BareMetal(), "1234!@#$", "", nil},
		{"action-api/asks for no mix", ActionAPI(), "abcdefgh", "", nil},
	})
}

func TestRuleContainsUser(t *testing.T) {
	runCheckCases(t, []checkCase{
		{"windows/same case", Windows(), "xAdministrator1!", "Administrator", brokeUser},
		{"windows/upper case", Windows(), "xADMINISTRATOR1!", "Administrator", brokeUser},
		{"windows/lower case", Windows(), "xadministrator1!", "Administrator", brokeUser},
		{"windows/at the start", Windows(), "aliceAbcdef1!", "alice", brokeUser},
		{"windows/at the end", Windows(), "Abcdef1!ALICE", "alice", brokeUser},
		{"windows/only part of the name", Windows(), "Administ1!xyz", "Administrator", nil},
		{"windows/short name ignored", Windows(), "abAbcdef123!", "ab", nil},
		{"windows/three letter name", Windows(), "BobAbcdef123!", "bob", brokeUser},
		{"windows/no user", Windows(), "Abcdefgh123!", "", nil},
		{"linux/allows the user name", Linux(), "Root1234!", "root", nil},
		{"strictest/forbids the user name", Strictest(OSLinux, OSWindows), "MyRoot1234!x", "root", brokeUser},
	})
}

func TestSeveralRules(t *testing.T) {
	runCheckCases(t, []checkCase{
		{"linux/all but user", Linux(), "ab:", "", []string{RuleLength, RuleCharset, RuleClasses}},
		{"windows/all four", Windows(), "root:", "root", []string{RuleLength, RuleCharset, RuleClasses, RuleContainsUser}},
		{"bare-metal/length and charset", BareMetal(), "a1+", "", []string{RuleLength, RuleCharset}},
	})
}

func TestErrorText(t *testing.T) {
	err := Check(BareMetal(), []byte("abc"), "")
	want := "password does not meet the bare-metal rules: it must be 8 to 16 characters long; " +
		"it must contain at least 2 of: letters (a-z and A-Z), digits (0-9), special characters (!@#$%&^*())"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var pe *Error
	if !errors.As(err, &pe) || !pe.Has(RuleClasses) || pe.Has(RuleCharset) {
		t.Fatalf("Has: got %+v", pe)
	}
}

func TestStrictest(t *testing.T) {
	both := combine(Linux(), Windows())
	tests := []struct {
		osTypes []string
		want    Policy
	}{
		{[]string{"linux"}, Linux()},
		{[]string{"linux", "linux"}, Linux()},
		{[]string{"windows"}, Windows()},
		{[]string{" Windows "}, Windows()},
		{[]string{"LINUX", "windows"}, both},
		{[]string{"windows", "linux", "linux"}, both},
		{nil, both},
		{[]string{"freebsd"}, both},
		{[]string{"linux", ""}, both},
	}
	for _, tc := range tests {
		if got := Strictest(tc.osTypes...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Strictest(%q) = %+v, want %+v", tc.osTypes, got, tc.want)
		}
	}
}

// combine assumes that the policies it merges count the same classes.
func TestLinuxAndWindowsShareClasses(t *testing.T) {
	if !reflect.DeepEqual(Linux().Classes, Windows().Classes) {
		t.Fatal("Linux and Windows classes differ; combine cannot merge them")
	}
}

// A password the combined policy accepts must be accepted by each part, for
// any user.
func TestStrictestAcceptsOnlyWhatEveryPartAccepts(t *testing.T) {
	both := Strictest(OSLinux, OSWindows)
	rng := rand.New(rand.NewPCG(1, 2))
	users := []string{"", "root", "Administrator", "ab"}
	const good, bad = "abcABC012!~root", " :\t\xc3\xa9"
	accepted := 0
	for range 20000 {
		pw := make([]byte, rng.IntN(70))
		for i := range pw {
			if rng.IntN(50) == 0 {
				pw[i] = bad[rng.IntN(len(bad))]
			} else {
				pw[i] = good[rng.IntN(len(good))]
			}
		}
		user := users[rng.IntN(len(users))]
		if Check(both, pw, user) != nil {
			continue
		}
		accepted++
		for _, p := range []Policy{Linux(), Windows()} {
			if err := Check(p, pw, user); err != nil {
				t.Fatalf("%s accepts %q for %q but %v", both.Name, pw, user, err)
			}
		}
	}
	if accepted < 100 {
		t.Fatalf("only %d random passwords accepted; the test proves little", accepted)
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		policy Policy
		want   string
	}{
		{Linux(), "The password must be 8 to 64 characters long; may contain only printable ASCII characters other than space and ':'; must contain at least 3 of: lowercase letters (a-z), uppercase letters (A-Z), digits (0-9), special characters."},
		{Windows(), "The password must be 12 to 64 characters long; may contain only printable ASCII characters other than space and ':'; must contain at least 3 of: lowercase letters (a-z), uppercase letters (A-Z), digits (0-9), special characters; must not contain the user name, in any case."},
		{ActionAPI(), "The password must be 8 to 16 characters long; may contain only a-z, A-Z, 0-9 and !@#$%^+*()."},
		{BareMetal(), "The password must be 8 to 16 characters long; may contain only a-z, A-Z, 0-9 and !@#$%&^*(); must contain at least 2 of: letters (a-z and A-Z), digits (0-9), special characters (!@#$%&^*())."},
		{Policy{Name: "pin", MinLength: 6, MaxLength: 6, Allowed: "0123456789"}, "The password must be exactly 6 characters long; may contain only 0-9."},
		{Policy{Name: "open", MinLength: 1, Allowed: " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"}, "The password must be at least 1 characters long; may contain only printable ASCII characters."},
	}
	for _, tc := range tests {
		if got := tc.policy.Describe(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.policy.Name, got, tc.want)
		}
	}
}

// The console decodes the spec as JSON and mirrors the rules; these are the
// field names it relies on.
func TestSpecJSON(t *testing.T) {
	b, err := json.Marshal(Windows().Spec())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"name", "minLength", "maxLength", "allowed", "classes", "minClasses", "forbidUser", "description", "rules", "minUserNameLength"} {
		if _, ok := got[key]; !ok {
			t.Errorf("spec JSON has no %q: %s", key, b)
		}
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Policy, Windows()) {
		t.Errorf("policy does not survive JSON: %+v", back.Policy)
	}
	if len(back.Rules) != 4 || back.Rules[3].Code != RuleContainsUser {
		t.Errorf("rules = %+v", back.Rules)
	}
}

// Every message Check can return is one of the policy's published rules,
// so the console can show the same words.
func TestViolationsAreRules(t *testing.T) {
	for _, p := range allPolicies() {
		err := Check(p, []byte("root:\x01"), "root")
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("%s: %v", p.Name, err)
		}
		for _, v := range pe.Violations {
			if !slices.Contains(p.Rules(), Rule{Code: v.Rule, Message: v.Message}) {
				t.Errorf("%s: violation %+v is not among the rules %+v", p.Name, v, p.Rules())
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	for _, p := range allPolicies() {
		t.Run(p.Name, func(t *testing.T) {
			wantLen := 20
			if p.MaxLength == 16 {
				wantLen = 16
			}
			seen := map[string]bool{}
			for range 200 {
				pw, err := Generate(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := Check(p, pw, ""); err != nil {
					t.Fatalf("generated password rejected: %v", err)
				}
				if n := utf8.RuneCount(pw); n != wantLen {
					t.Fatalf("generated %d characters, want %d", n, wantLen)
				}
				for _, c := range p.Classes {
					if !strings.ContainsAny(string(pw), c.Chars) {
						t.Fatalf("generated password has no %s", c.Name)
					}
				}
				if seen[string(pw)] {
					t.Fatal("the same password was generated twice")
				}
				seen[string(pw)] = true
			}
		})
	}
}

func TestGenerateForUser(t *testing.T) {
	// A short alphabet makes the user name likely to appear by chance, so
	// this exercises the retry.
	p := Policy{Name: "small", MinLength: 8, MaxLength: 8, Allowed: "abcd", ForbidUser: true}
	for range 100 {
		pw, err := GenerateForUser(p, "abc")
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(p, pw, "abc"); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

func TestGenerateUnsatisfiable(t *testing.T) {
	tests := []Policy{
		{Name: "no characters", MinLength: 8},
		{Name: "min above max", MinLength: 10, MaxLength: 5, Allowed: "abc"},
		{Name: "too few classes", MinLength: 8, Allowed: "ab", Classes: []Class{{"a", "a"}, {"b", "b"}}, MinClasses: 3},
		{Name: "user is everything", MinLength: 8, MaxLength: 8, Allowed: "a", ForbidUser: true},
	}
	for _, p := range tests {
		user := ""
		if p.ForbidUser {
			user = "aaa"
		}
		if pw, err := GenerateForUser(p, user); !errors.Is(err, ErrUnsatisfiable) {
			t.Errorf("%s: got %q, %v; want ErrUnsatisfiable", p.Name, pw, err)
		}
	}
}

func allPolicies() []Policy {
	return []Policy{Linux(), Windows(), ActionAPI(), BareMetal(), Strictest(OSLinux, OSWindows),
		TencentLinux(), TencentWindows(), Tencent(OSLinux, OSWindows)}
}
