package ipmi_test

import (
	"net"
	"strings"
	"testing"

	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
)

func TestCipherSuites(t *testing.T) {
	for _, tc := range []struct {
		suite int
		ok    bool
		why   string
	}{
		{0, false, "authenticates nobody"},
		{1, false, "does not encrypt"},
		{2, false, "does not encrypt"},
		{3, true, ""},
		{6, false, "does not encrypt"},
		{8, true, ""},
		{12, true, ""},
		{15, false, "does not encrypt"},
		{17, true, ""},
		{19, true, ""},
		{20, false, "does not exist"},
		{-1, false, "does not exist"},
	} {
		err := ipmi.ValidateCipherSuite(tc.suite)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), tc.why)) {
			t.Errorf("suite %d: %v, want ok=%v (%q)", tc.suite, err, tc.ok, tc.why)
		}
	}
}

func TestBMCAddresses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.21", "10.0.0.21:623"},
		{"10.0.0.21:6230", "10.0.0.21:6230"},
		{"bmc-7.mgmt.example", "bmc-7.mgmt.example:623"},
		{"[fd00::21]:623", "[fd00::21]:623"},
		{"fd00::21", "[fd00::21]:623"},
		{"[fd00::21]", "[fd00::21]:623"},
		{"a:b:c", ""},
		{"", ""},
		{"10.0.0.21:0", ""},
		{"10.0.0.21:70000", ""},
		{"10.0.0.21:http", ""},
		{"bmc host", ""},
		{"bmc;rm -rf /", ""},
		{"user@bmc", ""},
	} {
		got, err := ipmi.ParseAddress(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseAddress(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseAddress: whatever the input, an accepted address is host:port
// with a valid port, names a host of the allowed characters, and is its own
// normal form.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.21", "bmc:623", "[::1]:1", "fd00::21", "a:b:c", ":623", "host:", "h\x00st"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ipmi.ParseAddress(s)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(got)
		if err != nil || host == "" || port == "" || port == "0" {
			t.Fatalf("ParseAddress(%q) = %q: not host:port", s, got)
		}
		if strings.ContainsAny(host, " /@;\x00\n[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
			t.Fatalf("ParseAddress(%q) = %q: host has a forbidden character", s, got)
		}
		again, err := ipmi.ParseAddress(got)
		if err != nil || again != got {
			t.Fatalf("ParseAddress(%q) = %q, but that parses to %q, %v", s, got, again, err)
		}
	})
}
