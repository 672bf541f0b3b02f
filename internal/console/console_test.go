package console

import (
	"net/http/httptest"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	cases := []struct {
		name, origin, fetchSite string
		want                    bool
	}{
		{"same origin", "http://console.example:8080", "", true},
		{"same origin, other case", "HTTP://Console.Example:8080", "", true},
		{"other host", "https://evil.example", "", false},
		{"other port", "http://console.example:9090", "", false},
		{"null origin", "null", "", false},
		{"no origin, same-origin fetch", "", "same-origin", true},
		{"no origin, cross-site fetch", "", "cross-site", false},
		{"nothing at all", "", "", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "http://console.example:8080/console/api/sign-in", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.fetchSite != "" {
			r.Header.Set("Sec-Fetch-Site", c.fetchSite)
		}
		if got := sameOrigin(r); got != c.want {
			t.Errorf("%s: sameOrigin = %v, want %v", c.name, got, c.want)
		}
	}
}
