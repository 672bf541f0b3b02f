//go:build cgo && linux

package qga

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/libcrypt"
)

// setPasswordArgs returns the arguments of the last guest-set-user-password
// f received.
func setPasswordArgs(t *testing.T, f *fakeAgent) (line string, secret []byte, crypted bool) {
	t.Helper()
	lines := f.lines()
	for i := len(lines) - 1; i >= 0; i-- {
		var cmd struct {
			Execute   string
			Arguments struct {
				Password string
				Crypted  *bool
			}
		}
		if err := json.Unmarshal(lines[i], &cmd); err != nil || cmd.Execute != "guest-set-user-password" {
			continue
		}
		if cmd.Arguments.Crypted == nil {
			t.Fatalf("guest-set-user-password without crypted: %s", lines[i])
		}
		b, err := base64.StdEncoding.DecodeString(cmd.Arguments.Password)
		if err != nil {
			t.Fatalf("password is not base64: %v", err)
		}
		return string(lines[i]), b, *cmd.Arguments.Crypted
	}
	t.Fatal("the agent got no guest-set-user-password")
	return "", nil, false
}

func TestChannelSendsALinuxGuestAHashAndOtherGuestsThePassword(t *testing.T) {
	password := []byte("Cl3ar-Passw0rd")
	b64 := base64.StdEncoding.EncodeToString(password)
	for _, osType := range []string{driver.OSLinux, "windows", ""} {
		t.Run("os "+osType, func(t *testing.T) {
			f := userAgent("{\"return\": {}}\n", 0, true)
			ref := driver.Ref{InstanceID: "ins-test", Address: f.listen(t), OSType: osType}
			if err := (&Channel{}).SetPassword(testContext(t), ref, "alice", password); err != nil {
				t.Fatalf("SetPassword: %v", err)
			}
			line, secret, crypted := setPasswordArgs(t, f)
			if osType != driver.OSLinux {
				if crypted || string(secret) != string(password) {
					t.Errorf("a %q guest got %s, want the password, not crypted", osType, line)
				}
				return
			}
			if !crypted || strings.Contains(line, string(password)) || strings.Contains(line, b64) {
				t.Fatalf("a Linux guest got %s, want a hash, crypted", line)
			}
			if !strings.HasPrefix(string(secret), "$6$rounds=100000$") {
				t.Errorf("hash %q: want SHA-512 with 100000 rounds", secret)
			}
			if ok, err := libcrypt.Verify(password, string(secret)); !ok || err != nil {
				t.Errorf("the hash sent does not verify the password: %v, %v", ok, err)
			}
			if string(password) != "Cl3ar-Passw0rd" {
				t.Error("SetPassword changed the caller's password buffer")
			}
		})
	}
}

func TestGuestSecretSaltsEachHash(t *testing.T) {
	a, _, err := GuestSecret(driver.OSLinux, []byte("same-password"))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := GuestSecret(driver.OSLinux, []byte("same-password"))
	if err != nil {
		t.Fatal(err)
	}
	if string(a) == string(b) {
		t.Errorf("two hashes of one password are equal: %s", a)
	}
}

func TestChannelWithholdsAnAnswerThatEchoesTheHash(t *testing.T) {
	password := []byte("Ech0ed-Passw0rd")
	var sent []byte
	f := userAgent("", 0, true)
	probe := f.handle
	f.handle = func(execute string, args json.RawMessage) string {
		if execute != "guest-set-user-password" {
			return probe(execute, args)
		}
		var a struct{ Password string }
		_ = json.Unmarshal(args, &a)
		sent, _ = base64.StdEncoding.DecodeString(a.Password)
		answer, _ := json.Marshal(map[string]any{"error": map[string]string{"class": "GenericError",
			"desc": "chpasswd: line 1: bad entry alice:" + string(sent) + " (" + a.Password + ")"}})
		return string(answer) + "\n"
	}
	ref := driver.Ref{InstanceID: "ins-test", Address: f.listen(t), OSType: driver.OSLinux}
	err := (&Channel{}).SetPassword(testContext(t), ref, "alice", password)
	if err == nil {
		t.Fatal("SetPassword succeeded")
	}
	if len(sent) == 0 {
		t.Fatal("the agent got no hash")
	}
	msg := err.Error()
	for e := err; e != nil; e = errors.Unwrap(e) {
		msg += "\n" + e.Error()
	}
	if strings.Contains(msg, string(sent)) || strings.Contains(msg, base64.StdEncoding.EncodeToString(sent)) {
		t.Errorf("the error shows the hash: %s", msg)
	}
	if !strings.Contains(msg, "withheld") {
		t.Errorf("the error does not say it was withheld: %s", msg)
	}
}
