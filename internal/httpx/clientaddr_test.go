package httpx

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted, err := ParsePrefixes([]string{"10.0.0.0/8, 192.0.2.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer, xff string
		trusted         []netip.Prefix
		want            string
	}{
		{"no proxies: the header is ignored", "203.0.113.9:5000", "198.51.100.1", nil, "203.0.113.9"},
		{"an untrusted peer's header is ignored", "203.0.113.9:5000", "198.51.100.1", trusted, "203.0.113.9"},
		{"a trusted proxy names the client", "10.1.2.3:5000", "198.51.100.1", trusted, "198.51.100.1"},
		{"the nearest untrusted hop wins over a forged left part", "10.1.2.3:5000", "6.6.6.6, 198.51.100.1, 10.9.9.9", trusted, "198.51.100.1"},
		{"all hops trusted: the farthest", "10.1.2.3:5000", "10.2.2.2, 192.0.2.1", trusted, "10.2.2.2"},
		{"a malformed hop stops at the last good one", "10.1.2.3:5000", "junk, 10.4.4.4", trusted, "10.4.4.4"},
		{"no header from a trusted proxy: the proxy", "192.0.2.1:80", "", trusted, "192.0.2.1"},
		{"IPv6 loopback proxy", "[::1]:80", "2001:db8::7", trusted, "2001:db8::7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.peer
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := clientAddr(r, c.trusted); got != c.want {
				t.Errorf("clientAddr = %q, want %q", got, c.want)
			}
		})
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}

// FuzzClientAddr feeds X-Forwarded-For headers, which anyone can send: the
// answer is always an address, the peer's or one the header holds.
func FuzzClientAddr(f *testing.F) {
	f.Add("198.51.100.1")
	f.Add("6.6.6.6, 198.51.100.1, 10.9.9.9")
	f.Add(",,, ,")
	f.Add("[::1], fe80::1%eth0")
	trusted, _ := ParsePrefixes([]string{"10.0.0.0/8", "::/0", "0.0.0.0/0"})
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.1.1.1:80"
		r.Header.Set("X-Forwarded-For", xff)
		got := clientAddr(r, trusted)
		if got == "10.1.1.1" {
			return
		}
		if _, err := netip.ParseAddr(got); err != nil || !strings.Contains(strings.ToLower(xff), got[:1]) {
			t.Fatalf("clientAddr(%q) = %q, not an address from the header", xff, got)
		}
	})
}
