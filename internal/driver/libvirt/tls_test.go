package libvirt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir, under the names libvirt uses (cacert.pem,
// servercert.pem, serverkey.pem, clientcert.pem, clientkey.pem). libvirt
// checks the key usages, so they are set as its documentation asks.
func testPKI(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, "PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fleetpass test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("cacert.pem", "CERTIFICATE", caDER)
	for i, c := range []struct {
		name string
		eku  x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"client", x509.ExtKeyUsageClientAuth}} {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(int64(i + 2)),
			Subject:               pkix.Name{CommonName: "fleetpass test " + c.name},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{c.eku},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(c.name+"cert.pem", "CERTIFICATE", der)
		writeKey(c.name+"key.pem", k)
	}
}

// TestTLS connects over TLS, with a client certificate, to a private
// libvirtd that listens for TLS on a loopback port.
func TestTLS(t *testing.T) {
	needLibvirtd(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	var pki string
	startPrivateLibvirtd(t, func(dir string) []string {
		pki = filepath.Join(dir, "pki")
		if err := os.Mkdir(pki, 0o700); err != nil {
			t.Fatal(err)
		}
		testPKI(t, pki)
		conf := fmt.Sprintf(`listen_tls = 1
listen_tcp = 0
listen_addr = "127.0.0.1"
tls_port = "%s"
auth_tls = "none"
ca_file = "%[2]s/cacert.pem"
cert_file = "%[2]s/servercert.pem"
key_file = "%[2]s/serverkey.pem"
`, port, pki)
		file := filepath.Join(dir, "libvirtd.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--listen", "-f", file}
	})

	d := startDriver(t, Config{})
	uri := "test+tls://127.0.0.1:" + port + "/default?pkipath=" + pki
	if err := d.SetHost(Host{ID: "tls", URI: uri}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "tls")
	wantState(t, d, driver.Ref{Host: "tls", Address: testDomainUUID}, driver.PowerRunning)

	// Without the CA, the server's certificate cannot be checked...
	other := t.TempDir()
	testPKI(t, other)
	for _, name := range []string{"clientcert.pem", "clientkey.pem"} {
		b, err := os.ReadFile(filepath.Join(pki, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(other, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetHost(Host{ID: "bad-ca", URI: "test+tls://127.0.0.1:" + port + "/default?pkipath=" + other}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.HostStatus("bad-ca").Error == "not connected yet" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := d.HostStatus("bad-ca"); st.Connected || !strings.Contains(st.Error, "certificate") {
		t.Errorf("HostStatus with another CA = %+v, want a certificate error", st)
	}
	// ...unless the operator says not to.
	if err := d.SetHost(Host{ID: "bad-ca", URI: "test+tls://127.0.0.1:" + port + "/default?no_verify=1&pkipath=" + other}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "bad-ca")

	// libvirtd refuses a client certificate of another CA.
	stranger := t.TempDir()
	testPKI(t, stranger)
	b, err := os.ReadFile(filepath.Join(pki, "cacert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stranger, "cacert.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.SetHost(Host{ID: "stranger", URI: "test+tls://127.0.0.1:" + port + "/default?pkipath=" + stranger}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for d.HostStatus("stranger").Error == "not connected yet" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := d.HostStatus("stranger"); st.Connected || !strings.Contains(st.Error, "certificate") {
		t.Errorf("HostStatus with a client certificate of another CA = %+v", st)
	}
}
