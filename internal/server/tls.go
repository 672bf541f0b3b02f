package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig decides how to serve: with the operator's certificate; over
// plain HTTP on loopback (the demo); or, on any other address without a
// certificate, with a self-signed one kept in the data directory, whose
// fingerprint is printed so clients and agents can pin it.
func (s *Server) tlsConfig(addr net.Addr) (*tls.Config, string, error) {
	var cert tls.Certificate
	var err error
	switch {
	case s.cfg.TLSCert != "" || s.cfg.TLSKey != "":
		if s.cfg.TLSCert == "" || s.cfg.TLSKey == "" {
			return nil, "", errors.New("--tls-cert and --tls-key go together")
		}
		cert, err = tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return nil, "", fmt.Errorf("load TLS certificate: %w", err)
		}
	default:
		host, _, _ := net.SplitHostPort(addr.String())
		if isLoopback(host) {
			return nil, "", nil
		}
		names, ips := servedNames(host)
		cert, err = selfSigned(s.cfg.DataDir, names, ips)
		if err != nil {
			return nil, "", err
		}
		if missing := uncovered(cert, names, ips); len(missing) > 0 && s.log != nil {
			// Made for another address: kept, since clients and agents
			// pinned its fingerprint, but say how to get a fitting one.
			s.log.Warn("the self-signed certificate does not name the address served on; clients checking names will refuse it "+
				"(pinning its fingerprint still works); delete tls.crt and tls.key in the data directory to make a new one",
				"missing", strings.Join(missing, ", "))
		}
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, fingerprint(sum[:]), nil
}

func fingerprint(sum []byte) string {
	h := strings.ToUpper(hex.EncodeToString(sum))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// servedNames are the names a self-signed certificate for listen host
// should carry: the machine's host name, localhost and the
// loopback addresses, and the address served on, or every address of the
// machine's interfaces when it listens on all of them.
func servedNames(host string) ([]string, []net.IP) {
	names := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		if host != "" {
			names = append(names, host)
		}
	case ip.IsUnspecified():
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	default:
		ips = append(ips, ip)
	}
	return names, ips
}

// uncovered lists the names and addresses cert does not carry.
func uncovered(cert tls.Certificate, names []string, ips []net.IP) []string {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			out = append(out, n)
		}
	}
	for _, ip := range ips {
		if leaf.VerifyHostname(ip.String()) != nil {
			out = append(out, ip.String())
		}
	}
	return out
}

// selfSigned loads or creates the data directory's self-signed certificate,
// naming names and ips.
func selfSigned(dir string, names []string, ips []net.IP) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return cert, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load self-signed certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	hostname, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fleetpass " + hostname},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePrivate(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certPath, keyPath)
}
