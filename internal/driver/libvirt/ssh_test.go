package libvirt

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// testSSHD is a throwaway sshd on a loopback port that lets root in with
// one generated key, so the driver's SSH transport runs against a real
// OpenSSH server (which forwards to libvirtd's unix socket as it would on a
// remote host).
type testSSHD struct {
	port       string
	keyFile    string // the client's private key
	knownHosts string // a known_hosts file with sshd's host key
	otherHosts string // a known_hosts file with another key for the same host
}

func startSSHD(t *testing.T) *testSSHD {
	t.Helper()
	const sshd = "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("needs sshd (apt-get install openssh-server): %v", err)
	}
	dir := t.TempDir()
	writeKey := func(name string) ssh.PublicKey {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		sp, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	hostKey := writeKey("host_key")
	clientKey := writeKey("client_key")
	otherKey := writeKey("other_key")
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientKey), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}

	s := &testSSHD{keyFile: filepath.Join(dir, "client_key"), knownHosts: filepath.Join(dir, "known_hosts"), otherHosts: filepath.Join(dir, "other_hosts")}
	// A free port may be taken again before sshd binds it: try another.
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, s.port, _ = net.SplitHostPort(l.Addr().String())
		l.Close()
		addr := net.JoinHostPort("127.0.0.1", s.port)
		for file, key := range map[string]ssh.PublicKey{s.knownHosts: hostKey, s.otherHosts: otherKey} {
			if err := os.WriteFile(file, []byte(knownhosts.Line([]string{addr}, key)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		config := fmt.Sprintf(`ListenAddress %s
HostKey %s
PidFile none
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowStreamLocalForwarding yes
UseDNS no
LogLevel VERBOSE
`, addr, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"))
		conf := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		logFile, err := os.Create(filepath.Join(dir, "sshd.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatalf("start sshd: %v", err)
		}
		logFile.Close()
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		})
		up := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				up = true
				break
			}
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(50 * time.Millisecond):
			}
		}
		if up {
			return s
		}
		log, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
		if attempt == 2 {
			t.Fatalf("sshd does not listen on %s: %s", addr, log)
		}
		t.Logf("sshd did not start on %s, trying another port: %s", addr, log)
	}
}

// TestSSH connects through a real sshd to the local libvirtd: to its test
// driver (test+ssh://, a fleetpass extension for tests) and to its QEMU
// driver (qemu+ssh://, which needs no VM to list domains).
func TestSSH(t *testing.T) {
	needLibvirtd(t)
	s := startSSHD(t)
	d := startDriver(t, Config{})
	base := "root@127.0.0.1:" + s.port
	params := "?keyfile=" + s.keyFile + "&known_hosts=" + s.knownHosts

	if err := d.SetHost(Host{ID: "test", URI: "test+ssh://" + base + "/default" + params}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "test")
	doms, err := d.Domains(call(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dm := range doms {
		found = found || dm.UUID == testDomainUUID
	}
	if !found {
		t.Errorf("Domains over ssh: no test domain in %+v", doms)
	}
	wantState(t, d, driver.Ref{Host: "test", Address: testDomainUUID}, driver.PowerRunning)
	ref := defineTestDomain(t, d, "test", false)
	if err := d.Start(call(t), ref); err != nil {
		t.Fatalf("Start over ssh: %v", err)
	}
	wantState(t, d, ref, driver.PowerRunning)
	if err := d.Stop(call(t), ref); err != nil {
		t.Fatalf("Stop over ssh: %v", err)
	}
	wantState(t, d, ref, driver.PowerStopped)

	if err := d.SetHost(Host{ID: "qemu", URI: "qemu+ssh://" + base + "/system" + params}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, d, "qemu")
	if _, err := d.Domains(call(t), "qemu"); err != nil {
		t.Errorf("Domains of qemu:///system over ssh: %v", err)
	}

	// A host key that does not match known_hosts must stop the connection.
	if err := d.SetHost(Host{ID: "mitm", URI: "test+ssh://" + base + "/default?keyfile=" + s.keyFile + "&known_hosts=" + s.otherHosts}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.HostStatus("mitm").Error == "not connected yet" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := d.HostStatus("mitm"); st.Connected || !strings.Contains(st.Error, "key mismatch") {
		t.Errorf("HostStatus with a wrong host key = %+v, want a key mismatch", st)
	}
}
