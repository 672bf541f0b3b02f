package httpx

import (
	"net/http"
	"testing"
)

func TestBearerSchemeIsCaseInsensitiveAndOthersAreNotBearer(t *testing.T) {
	for _, c := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer id:secret", "id:secret", true},
		{"bearer id:secret", "id:secret", true},
		{"BEARER   id:secret  ", "id:secret", true},
		{"Bearer\tid:secret", "id:secret", true},
		{"  Bearer id:secret", "id:secret", true},
		{"Bearer", "", false},
		{"Bearer    ", "", false},
		{"Bearerid:secret", "", false},
		{"Basic aWQ6c2VjcmV0", "", false},
		{"Token id:secret", "", false},
		{"", "", false},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		tok, ok := BearerToken(r)
		if tok != c.token || ok != c.ok {
			t.Errorf("%q: %q %v, want %q %v", c.header, tok, ok, c.token, c.ok)
		}
	}
}
