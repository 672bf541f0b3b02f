// Package ctlchar finds and neutralises control characters in text that
// came from elsewhere (names, host names, agent messages): a name such as
// "\x1b[2J" must be refused at input and, printed anyway, show as text
// instead of clearing a terminal.
//
// Control characters are the C0 set (U+0000-U+001F), DEL (U+007F) and the
// C1 set (U+0080-U+009F); invalid UTF-8 counts too, since a terminal may
// read its bytes as C1 controls.
package ctlchar

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Is reports whether r is a control character.
func Is(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f)
}

// Contains reports whether s holds a control character or invalid UTF-8.
func Contains(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if Is(r) || (r == utf8.RuneError && size == 1) {
			return true
		}
		i += size
	}
	return false
}

// Escape returns s with every control character written as a Go escape
// (\n, \t, \x1b, \u0085) and every invalid byte as \xNN, and backslashes
// left alone; text without control characters is returned as it is.
func Escape(s string) string {
	if !Contains(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && Is(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case Is(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Replace returns s with each control character and invalid byte replaced
// by a space, for text a program makes from output it does not control
// (an agent's report of a command's stderr) before sending it on.
func Replace(s string) string {
	if !Contains(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if Is(r) || (r == utf8.RuneError && size == 1) {
			b.WriteByte(' ')
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
