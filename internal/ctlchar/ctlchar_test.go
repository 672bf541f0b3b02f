package ctlchar

import (
	"testing"
	"unicode/utf8"
)

func TestControlCharactersAreFoundAndEscaped(t *testing.T) {
	for _, c := range []struct {
		in       string
		contains bool
		escaped  string
	}{
		{"web-01", false, "web-01"},
		{"café ünïcode 名前", false, "café ünïcode 名前"},
		{`back\slash`, false, `back\slash`},
		{"\x1b[2J", true, `\x1b[2J`},
		{"a\nb\tc\rd", true, `a\nb\tc\rd`},
		{"nul\x00", true, `nul\x00`},
		{"del\x7f", true, `del\x7f`},
		{"c1\u0085next \u009b", true, `c1\u0085next \u009b`},
		{"bad\xffutf8", true, `bad\xffutf8`},
		{"\u00a0nbsp", false, "\u00a0nbsp"},
	} {
		if got := Contains(c.in); got != c.contains {
			t.Errorf("Contains(%q) = %v", c.in, got)
		}
		if got := Escape(c.in); got != c.escaped {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.escaped)
		}
		if Contains(Replace(c.in)) {
			t.Errorf("Replace(%q) = %q still holds a control character", c.in, Replace(c.in))
		}
	}
}

func FuzzEscapeLeavesNoControlCharacter(f *testing.F) {
	for _, s := range []string{"\x1b[2J", "ok", "\xc2\x85", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		if Contains(e) || !utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q", s, e)
		}
		if !Contains(s) && e != s {
			t.Fatalf("Escape changed clean text %q to %q", s, e)
		}
		if r := Replace(s); Contains(r) {
			t.Fatalf("Replace(%q) = %q", s, r)
		}
	})
}
