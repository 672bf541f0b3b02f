package diskreset

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// Method is a password hash method as crypt(3) names it by its prefix.
type Method struct {
	Name   string // yescrypt, sha512, ...
	Prefix string // the crypt(3) prefix: $y$, $6$, ...
	// Rounds is the cost the guest asks for (pam_unix rounds=N), 0 for
	// the method's default.
	Rounds int
	// Source says where the guest named it: a file, or "default".
	Source string
}

// methods maps pam_unix options and login.defs ENCRYPT_METHOD values to
// crypt prefixes. MD5, DES and bigcrypt are not here on purpose: a guest
// that asks for them gets SHA-512, which every glibc since 2.7 (2007)
// verifies, rather than a hash broken in seconds.
var methods = map[string]Method{
	"yescrypt":      {Name: "yescrypt", Prefix: "$y$"},
	"gost_yescrypt": {Name: "gost-yescrypt", Prefix: "$gy$"},
	"sha512":        {Name: "sha512", Prefix: "$6$"},
	"sha256":        {Name: "sha256", Prefix: "$5$"},
	"blowfish":      {Name: "bcrypt", Prefix: "$2b$"},
	"bcrypt":        {Name: "bcrypt", Prefix: "$2b$"},
}

// DefaultMethod is used when the guest names none: shadow's own default
// without ENCRYPT_METHOD is DES, which nobody wants.
var DefaultMethod = Method{Name: "sha512", Prefix: "$6$", Source: "default"}

// PAMFiles are the PAM configurations whose pam_unix password line tells
// the hash method, in the order they are consulted: Debian and Ubuntu,
// then the Red Hat family, then the service passwd uses.
var PAMFiles = []string{
	"/etc/pam.d/common-password",
	"/etc/pam.d/system-auth",
	"/etc/pam.d/password-auth",
	"/etc/pam.d/passwd",
}

// LoginDefs is shadow's configuration, consulted after PAM.
const LoginDefs = "/etc/login.defs"

// GuestMethod returns the hash method the guest itself uses to set
// passwords: its PAM pam_unix setting, else ENCRYPT_METHOD in
// /etc/login.defs, else DefaultMethod. read returns a file's content, or an
// error when it cannot be read (a missing file is no method).
func GuestMethod(read func(path string) ([]byte, error)) Method {
	for _, path := range PAMFiles {
		b, err := read(path)
		if err != nil {
			continue
		}
		if m, ok := pamMethod(b); ok {
			m.Source = path
			return m
		}
	}
	if b, err := read(LoginDefs); err == nil {
		if m, ok := loginDefsMethod(b); ok {
			m.Source = LoginDefs
			return m
		}
	}
	return DefaultMethod
}

// pamMethod reads the hash method of the pam_unix password line(s): the
// last method option of the first such line that names one, as pam_unix
// reads its options in order.
func pamMethod(conf []byte) (Method, bool) {
	for _, line := range strings.Split(string(conf), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		// type control module [options]; control may be [a=b c=d].
		if len(f) < 3 || strings.TrimPrefix(f[0], "-") != "password" {
			continue
		}
		rest := f[1:]
		if strings.HasPrefix(rest[0], "[") {
			for len(rest) > 0 && !strings.HasSuffix(rest[0], "]") {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				continue
			}
		}
		rest = rest[1:]
		if len(rest) == 0 {
			continue
		}
		module := rest[0]
		if module != "pam_unix.so" && !strings.HasSuffix(module, "/pam_unix.so") {
			continue
		}
		var m Method
		var found bool
		rounds := 0
		for _, opt := range rest[1:] {
			if mm, ok := methods[opt]; ok {
				m, found = mm, true
			}
			if v, ok := strings.CutPrefix(opt, "rounds="); ok {
				if n, err := strconv.Atoi(v); err == nil && n > 0 {
					rounds = n
				}
			}
			if opt == "md5" || opt == "bigcrypt" {
				m, found = methods["sha512"], true
			}
		}
		if found {
			m.Rounds = rounds
			return m, true
		}
	}
	return Method{}, false
}

// loginDefsMethod reads ENCRYPT_METHOD from login.defs.
func loginDefsMethod(conf []byte) (Method, bool) {
	var m Method
	var found bool
	for _, line := range strings.Split(string(conf), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "ENCRYPT_METHOD" {
			continue
		}
		switch strings.ToUpper(f[1]) {
		case "YESCRYPT":
			m, found = methods["yescrypt"], true
		case "GOST_YESCRYPT":
			m, found = methods["gost_yescrypt"], true
		case "SHA512", "MD5", "DES":
			m, found = methods["sha512"], true
		case "SHA256":
			m, found = methods["sha256"], true
		case "BCRYPT":
			m, found = methods["bcrypt"], true
		}
	}
	return m, found
}

// ErrMalformed marks a shadow file or a hash that cannot be edited safely.
var ErrMalformed = errors.New("malformed")

// ReplaceHash returns shadow with user's password hash replaced by hash
// and its date of last change set to today (days since 1970-01-01, as
// chpasswd does, so an aged password does not ask for a change at the first
// login). Every other byte is kept. A user with no line gives an error
// wrapping driver.ErrUserNotFound.
func ReplaceHash(shadow []byte, user, hash string, today int64) ([]byte, error) {
	if user == "" || strings.ContainsAny(user, ":\n\x00") {
		return nil, fmt.Errorf("user name %q: %w", user, ErrMalformed)
	}
	if len(hash) < 4 || hash[0] != '$' || strings.ContainsAny(hash, ":\n\x00 \t") {
		return nil, fmt.Errorf("hash: %w", ErrMalformed)
	}
	prefix := []byte(user + ":")
	start := 0
	found := -1
	for start < len(shadow) {
		end := bytes.IndexByte(shadow[start:], '\n')
		if end < 0 {
			end = len(shadow)
		} else {
			end += start
		}
		if bytes.HasPrefix(shadow[start:end], prefix) {
			if found >= 0 {
				// Two lines for one user: which one the guest reads is
				// not ours to guess.
				return nil, fmt.Errorf("user %q has more than one line in /etc/shadow: %w", user, ErrMalformed)
			}
			found = start
		}
		start = end + 1
	}
	if found < 0 {
		return nil, fmt.Errorf("no line for user %q in /etc/shadow: %w", user, driver.ErrUserNotFound)
	}
	end := bytes.IndexByte(shadow[found:], '\n')
	if end < 0 {
		end = len(shadow)
	} else {
		end += found
	}
	fields := strings.Split(string(shadow[found:end]), ":")
	if len(fields) < 3 {
		return nil, fmt.Errorf("the line of user %q in /etc/shadow has %d fields: %w", user, len(fields), ErrMalformed)
	}
	fields[1] = hash
	fields[2] = strconv.FormatInt(today, 10)
	line := strings.Join(fields, ":")
	out := make([]byte, 0, len(shadow)+len(hash))
	out = append(out, shadow[:found]...)
	out = append(out, line...)
	out = append(out, shadow[end:]...)
	return out, nil
}

// HashOf returns user's hash field in shadow, and whether the user has a
// line.
func HashOf(shadow []byte, user string) (string, bool) {
	for _, line := range strings.Split(string(shadow), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 2 && f[0] == user {
			return f[1], true
		}
	}
	return "", false
}
