package realvm

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/sign/zc2"
)

// httpClient talks to the server, pinning its certificate.
func (s *server) httpClient() *http.Client {
	want := s.fingerprint
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the pin below is the check
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if hex.EncodeToString(sum[:]) != want {
				return errors.New("certificate does not match the pin")
			}
			return nil
		},
	}}}
}

// send posts body (JSON) and decodes the answer into out.
func send(hc *http.Client, req *http.Request, out any) (int, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("answer %d: %s", resp.StatusCode, data)
		}
	}
	return resp.StatusCode, nil
}

// tenantKey makes an API key of the test tenant, for the dialects.
func (s *server) tenantKey() (id, secret string) {
	s.t.Helper()
	k, err := s.client.CreateKey(s.t.Context(), apiv1.KeyCreate{Name: "dialects", Tenant: tenant})
	if err != nil {
		s.t.Fatal(err)
	}
	return k.ID, k.Secret
}

// action calls the action API (path /api/v2/vm or /api/v2/zec), signed
// with ZC2-HMAC-SHA256, and returns the status and the answer.
func (s *server) action(path, action, keyID, secret string, body any) (int, map[string]any) {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodPost, s.url+path, bytes.NewReader(b))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-ZC-Action", action)
	req.Header.Set("X-ZC-Version", "2022-11-20")
	zc2.SignRequest(req, b, keyID, []byte(secret), time.Now())
	var out map[string]any
	status, err := send(s.httpClient(), req, &out)
	if err != nil {
		s.t.Fatal(err)
	}
	return status, out
}

// consoleSession signs in to the console as its first admin (changing the
// initial password, as the console requires) and returns a client with
// the session cookie and the anti-forgery token.
type consoleSession struct {
	s    *server
	hc   *http.Client
	csrf string
}

func (s *server) console() *consoleSession {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.dir, "data", "console-credentials"))
	if err != nil {
		s.t.Fatal(err)
	}
	var cred struct{ User, Password string }
	if err := json.Unmarshal(data, &cred); err != nil {
		s.t.Fatal(err)
	}
	cs := &consoleSession{s: s, hc: s.httpClient()}
	var info struct {
		CSRFToken string `json:"csrfToken"`
	}
	if status := cs.post("/console/api/sign-in", map[string]string{"user": cred.User, "password": cred.Password}, &info); status != http.StatusOK {
		s.t.Fatalf("console sign-in: %d", status)
	}
	cs.csrf = info.CSRFToken
	if status := cs.post("/console/api/password", map[string]string{"current": cred.Password, "new": "Console-" + newPassword()}, &info); status != http.StatusOK {
		s.t.Fatalf("console password change: %d", status)
	}
	cs.csrf = info.CSRFToken
	return cs
}

// post sends what the console's pages send: same origin, session cookie,
// anti-forgery token.
func (cs *consoleSession) post(path string, body, out any) int {
	cs.s.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(cs.s.t.Context(), http.MethodPost, cs.s.url+path, bytes.NewReader(b))
	if err != nil {
		cs.s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", cs.s.url)
	req.Header.Set("X-CSRF-Token", cs.csrf)
	status, err := send(cs.hc, req, out)
	if err != nil {
		cs.s.t.Fatal(err)
	}
	return status
}
