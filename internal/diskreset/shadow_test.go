package diskreset

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
)

const hash = "$y$j9T$abcdefghijklmnop$0123456789abcdefghijklmnopqrstuvwxyzABCDEF"

func TestReplaceHashChangesOnlyTheUsersHashAndDate(t *testing.T) {
	shadow := "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\nbob:$6$x$y:19001:0:99999:7:::\n"
	got, err := ReplaceHash([]byte(shadow), "alice", hash, 20000)
	if err != nil {
		t.Fatal(err)
	}
	want := "root:*:19000:0:99999:7:::\nalice:" + hash + ":20000:0:99999:7:::\nbob:$6$x$y:19001:0:99999:7:::\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestReplaceHashKeepsEveryOtherByte(t *testing.T) {
	for _, tc := range []struct{ name, shadow, want string }{
		{"no final newline", "a:x:1::::::\nroot:*:2::::::", "a:x:1::::::\nroot:" + hash + ":9::::::"},
		{"CRLF and comments kept", "# c\r\nroot:*:2:0:9:7:::\r\n", "# c\r\nroot:" + hash + ":9:0:9:7:::\r\n"},
		{"first line", "root::::::::\nx:y:1", "root:" + hash + ":9::::::\nx:y:1"},
		{"a prefix of another user is not the user", "rootx:*:1:\nroot:*:1:\n", "rootx:*:1:\nroot:" + hash + ":9:\n"},
		{"short legacy line with three fields", "root:*:1\n", "root:" + hash + ":9\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReplaceHash([]byte(tc.shadow), "root", hash, 9)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReplaceHashRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, shadow, user, hash string
		want                     error
	}{
		{"a missing user", "root:*:1:::::\n", "alice", hash, driver.ErrUserNotFound},
		{"a user named as another's prefix", "alice2:*:1:::::\n", "alice", hash, driver.ErrUserNotFound},
		{"two lines for the user", "root:*:1:\nroot:!:1:\n", "root", hash, ErrMalformed},
		{"a line with two fields", "root:*\n", "root", hash, ErrMalformed},
		{"a hash with a colon", "root:*:1:\n", "root", "$6$a:b", ErrMalformed},
		{"a hash with a newline", "root:*:1:\n", "root", "$6$a\nevil::0:", ErrMalformed},
		{"something that is not a hash", "root:*:1:\n", "root", "plaintext", ErrMalformed},
		{"a user name with a colon", "root:*:1:\n", "ro:ot", hash, ErrMalformed},
		{"an empty user name", ":*:1:\n", "", hash, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReplaceHash([]byte(tc.shadow), tc.user, tc.hash, 1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzReplaceHash(f *testing.F) {
	f.Add("root:*:19000:0:99999:7:::\nalice:!:1::::::\n", "alice")
	f.Add("root:*:1", "root")
	f.Add("\n\n:::\nroot::", "root")
	f.Fuzz(func(t *testing.T, shadow, user string) {
		got, err := ReplaceHash([]byte(shadow), user, hash, 42)
		if err != nil {
			return
		}
		// Exactly one line changed, it is the user's, and it holds the hash.
		before, after := strings.Split(shadow, "\n"), strings.Split(string(got), "\n")
		if len(before) != len(after) {
			t.Fatalf("line count changed: %d -> %d", len(before), len(after))
		}
		changed := 0
		for i := range before {
			if before[i] == after[i] {
				continue
			}
			changed++
			f := strings.Split(after[i], ":")
			if f[0] != user || f[1] != hash || f[2] != "42" {
				t.Fatalf("line %d became %q", i, after[i])
			}
		}
		if changed > 1 {
			t.Fatalf("%d lines changed", changed)
		}
		if h, ok := HashOf(got, user); !ok || h != hash {
			t.Fatalf("HashOf = %q, %v", h, ok)
		}
	})
}

func files(m map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if s, ok := m[p]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
}

func TestGuestMethodIsTheGuestsOwn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		files  map[string]string
		want   string
		rounds int
		source string
	}{
		{"Debian 12's PAM: yescrypt", map[string]string{
			"/etc/pam.d/common-password": "# here are the per-package modules\npassword\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\npassword\trequisite\tpam_deny.so\n",
			"/etc/login.defs":            "ENCRYPT_METHOD SHA512\n"},
			"yescrypt", 0, "/etc/pam.d/common-password"},
		{"Red Hat's system-auth: sha512 with rounds", map[string]string{
			"/etc/pam.d/system-auth": "password    sufficient    pam_unix.so sha512 shadow nullok use_authtok rounds=65536\n"},
			"sha512", 65536, "/etc/pam.d/system-auth"},
		{"a module path and -password", map[string]string{
			"/etc/pam.d/common-password": "-password required /lib/x86_64-linux-gnu/security/pam_unix.so sha256\n"},
			"sha256", 0, "/etc/pam.d/common-password"},
		{"PAM without a method falls back to login.defs", map[string]string{
			"/etc/pam.d/common-password": "password required pam_unix.so obscure\n",
			"/etc/login.defs":            "# ENCRYPT_METHOD DES\nENCRYPT_METHOD YESCRYPT\n"},
			"yescrypt", 0, "/etc/login.defs"},
		{"a commented-out method does not count", map[string]string{
			"/etc/pam.d/common-password": "password required pam_unix.so obscure # yescrypt\n"},
			"sha512", 0, "default"},
		{"md5 is upgraded to sha512", map[string]string{
			"/etc/pam.d/common-password": "password required pam_unix.so md5\n"},
			"sha512", 0, "/etc/pam.d/common-password"},
		{"DES in login.defs is upgraded to sha512", map[string]string{"/etc/login.defs": "ENCRYPT_METHOD DES\n"},
			"sha512", 0, "/etc/login.defs"},
		{"other modules' options are not pam_unix's", map[string]string{
			"/etc/pam.d/common-password": "password requisite pam_pwquality.so yescrypt\npassword required pam_unix.so sha256\n"},
			"sha256", 0, "/etc/pam.d/common-password"},
		{"nothing at all: sha512", nil, "sha512", 0, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := GuestMethod(files(tc.files))
			if m.Name != tc.want || m.Rounds != tc.rounds || m.Source != tc.source {
				t.Fatalf("GuestMethod = %+v, want %s rounds %d from %s", m, tc.want, tc.rounds, tc.source)
			}
		})
	}
}

func FuzzGuestMethod(f *testing.F) {
	f.Add("password [success=1 default=ignore] pam_unix.so obscure yescrypt rounds=5", "ENCRYPT_METHOD SHA512")
	f.Add("password [a=b", "ENCRYPT_METHOD")
	f.Fuzz(func(t *testing.T, pam, defs string) {
		m := GuestMethod(files(map[string]string{"/etc/pam.d/common-password": pam, "/etc/login.defs": defs}))
		if m.Prefix == "" || m.Prefix[0] != '$' || m.Rounds < 0 {
			t.Fatalf("GuestMethod = %+v", m)
		}
	})
}

func TestRequestRoundTripsWithThePasswordAfterTheLine(t *testing.T) {
	var b bytes.Buffer
	req := Request{Disks: []Disk{{Path: "/d.qcow2", Format: "qcow2"}}, Root: "/dev/sda", User: "root", Instance: "ins-1"}
	if err := WriteRequest(&b, req, []byte("Zq\n9w{\"x\"}")); err != nil {
		t.Fatal(err)
	}
	line, _, _ := bytes.Cut(b.Bytes(), []byte("\n"))
	if bytes.Contains(line, []byte("Zq")) {
		t.Fatalf("the JSON line holds the password: %s", line)
	}
	got, pw, err := ReadRequest(&b)
	if err != nil {
		t.Fatal(err)
	}
	if string(pw) != "Zq\n9w{\"x\"}" || got.User != "root" || got.Disks[0].Path != "/d.qcow2" || got.Root != "/dev/sda" {
		t.Fatalf("ReadRequest = %+v, %q", got, pw)
	}
}

func TestReadRequestRefusesMalformedInput(t *testing.T) {
	for name, in := range map[string]string{
		"no newline":           `{"user":"root","passwordLength":3}`,
		"short password":       "{\"user\":\"root\",\"passwordLength\":9}\nabc",
		"no password":          "{\"user\":\"root\",\"passwordLength\":0}\n",
		"huge password length": "{\"user\":\"root\",\"passwordLength\":100000000}\nabc",
		"not JSON":             "hello\nabc",
		"endless line":         strings.Repeat("x", maxRequestLine+10) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := ReadRequest(strings.NewReader(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("{\"user\":\"root\",\"passwordLength\":3}\nabc"))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, pw, err := ReadRequest(bytes.NewReader(data))
		if err == nil && len(pw) != req.PasswordLength {
			t.Fatalf("password of %d bytes for length %d", len(pw), req.PasswordLength)
		}
	})
}
