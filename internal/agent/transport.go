package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// normalizeFingerprint accepts "AB:CD:..." or plain hex, any case.
func normalizeFingerprint(fp string) (string, error) {
	h := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(fp)))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", errors.New("--tls-fingerprint: want the SHA-256 of the server certificate, 64 hex digits (colons allowed)")
	}
	return h, nil
}

func certFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newHTTPClient makes the client for server. With a fingerprint, the
// server's certificate must be exactly the pinned one (a self-signed
// certificate needs no CA); without one, https uses the system's CAs. Plain
// http is allowed only to a loopback address: a password never crosses a
// network unencrypted.
func newHTTPClient(server, fingerprint string) (*http.Client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want https://HOST:PORT", server)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // long polls: the request context bounds them
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	switch u.Scheme {
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("server URL %q: plain http is allowed only on loopback; use https", server)
		}
	case "https":
		if fingerprint != "" {
			want, err := normalizeFingerprint(fingerprint)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = &tls.Config{
				MinVersion: tls.VersionTLS12,
				// The chain is not checked against CAs: the pin is stronger.
				InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 || certFingerprint(cs.PeerCertificates[0].Raw) != want {
						return errors.New("the server's TLS certificate does not match the pinned fingerprint")
					}
					return nil
				},
			}
		} else {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	default:
		return nil, fmt.Errorf("server URL %q: want https:// (or http:// on loopback)", server)
	}
	return &http.Client{Transport: tr}, nil
}

// apiError is an answer of the server other than success.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("server answered %d", e.Status)
}

// post sends v as JSON to path and decodes the answer into out (if any).
func post(ctx context.Context, c *http.Client, server, path, auth string, v, out any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(server, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fleetpass-agent/"+Version)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(b, &eb)
		return &apiError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(out); err != nil {
		return fmt.Errorf("server answer: %w", err)
	}
	return nil
}
