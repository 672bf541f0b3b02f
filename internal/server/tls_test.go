package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

func TestANonLoopbackAddressWithoutACertificateGetsAPersistentSelfSignedOne(t *testing.T) {
	dir := t.TempDir()
	s := &Server{cfg: Config{DataDir: dir}}
	public := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 8443}
	cfg, fp, err := s.tlsConfig(public)
	if err != nil || cfg == nil || fp == "" {
		t.Fatalf("tlsConfig = %v, %q, %v", cfg, fp, err)
	}
	st, err := os.Stat(filepath.Join(dir, "tls.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tls.key: %v %v", st, err)
	}
	_, fp2, err := s.tlsConfig(public)
	if err != nil || fp2 != fp {
		t.Errorf("the certificate changed between starts: %s, %s", fp, fp2)
	}
	if cfg, _, _ := s.tlsConfig(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}); cfg != nil {
		t.Error("loopback without a certificate should serve plain HTTP")
	}
}

func TestServeWithTLSCertificatePrintsItsFingerprint(t *testing.T) {
	// Make a certificate pair the way an operator would bring one.
	certDir := t.TempDir()
	if _, _, err := (&Server{cfg: Config{DataDir: certDir}}).tlsConfig(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 10)}); err != nil {
		t.Fatal(err)
	}
	out := &testutil.LogBuffer{}
	addr := testutil.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := Open(ctx, Config{Listen: addr, DataDir: t.TempDir(), TLSCert: filepath.Join(certDir, "tls.crt"),
		TLSKey: filepath.Join(certDir, "tls.key"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: out})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	}()
	var pinned string
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // verified below by pinning, as agents do
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			pinned = fingerprint(sum[:])
			return nil
		},
	}}}
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = client.Get("https://" + addr + "/healthz"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(out.String(), "https://") || !strings.Contains(out.String(), pinned) {
		t.Errorf("start-up output %q lacks the https URL or the fingerprint %s", out.String(), pinned)
	}
	if bytes.Count([]byte(out.String()), []byte("SHA-256")) != 1 {
		t.Errorf("fingerprint line: %q", out.String())
	}
}

// ---- item 16: the self-signed certificate's names

func TestSecurity_TheSelfSignedCertificateNamesTheAddressAndHostItServesOn(t *testing.T) {
	host, _ := os.Hostname()
	for _, c := range []struct {
		name   string
		listen net.IP
		want   []string
	}{
		{"one address", net.IPv4(192, 0, 2, 10), []string{"192.0.2.10", host, "localhost", "127.0.0.1"}},
		{"all addresses", net.IPv4zero, interfaceAddrs(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{cfg: Config{DataDir: t.TempDir()}}
			cfg, _, err := s.tlsConfig(&net.TCPAddr{IP: c.listen, Port: 8443})
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range c.want {
				if err := leaf.VerifyHostname(name); err != nil {
					t.Errorf("the certificate does not name %s: %v (DNS %v, IPs %v)", name, err, leaf.DNSNames, leaf.IPAddresses)
				}
			}
		})
	}
}

func interfaceAddrs(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
			out = append(out, n.IP.String())
		}
	}
	return out
}
