package realvm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/testutil"
	"github.com/fleetpass/fleetpass/internal/vmtest"
)

const (
	adminKeyID  = "fpk-realvm"
	adminSecret = "realvm-admin-secret-0123456789"
	tenant      = "acme"
	// shutdownTimeout is the server's --shutdown-timeout: how long a guest
	// that ignores a graceful shutdown keeps running before a forced stop
	// (with consent) or a failed item (without).
	shutdownTimeout = 10 * time.Second
)

// server is a real `fleetpass serve` process managing qemu:///system.
type server struct {
	t           testing.TB
	dir         string
	port        int
	url         string
	fingerprint string
	cmd         *exec.Cmd
	logs        *testutil.LogBuffer
	client      *client.Client
	lv          *vmtest.Libvirt
	img         *vmtest.GuestImage
	args, env   []string
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildServer builds cmd/fleetpass once per test binary, with
// cmd/fleetpass-diskreset beside it (where serve looks for it).
func buildServer(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fleetpass-realvm-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "fleetpass")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/fleetpass/fleetpass/cmd/fleetpass")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build fleetpass: %v\n%s", err, out)
			return
		}
		cmd = exec.Command("go", "build", "-o", filepath.Join(dir, "fleetpass-diskreset"), "github.com/fleetpass/fleetpass/cmd/fleetpass-diskreset")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build fleetpass-diskreset: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startServer starts libvirtd if needed, the guest image, and a fleetpass
// server with the local libvirt host. The server's certificate names the
// address guests reach the host by, and its fingerprint is what their
// agents pin.
func startServer(t testing.TB) *server {
	t.Helper()
	lv := vmtest.Libvirtd(t)
	img := vmtest.Image(t)
	s := &server{t: t, dir: t.TempDir(), logs: &testutil.LogBuffer{}, lv: lv, img: img}
	certFile, keyFile := s.makeCert()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s.url = fmt.Sprintf("https://127.0.0.1:%d", s.port)
	s.args = []string{"serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", s.port),
		"--data-dir", filepath.Join(s.dir, "data"),
		"--tls-cert", certFile, "--tls-key", keyFile,
		"--libvirt", "qemu:///system", "--libvirt-tenant", tenant,
		"--shutdown-timeout", shutdownTimeout.String(),
		"--boot-timeout", "3m", "--guest-timeout", "3m",
		"--sync-interval", "2s",
		"--log-level", "debug"}
	// libguestfs's environment for disk resets (the appliance kernel,
	// force_tcg), as an operator would set it for the server.
	s.env = append(append(os.Environ(), vmtest.Guestfs(t)...),
		"FLEETPASS_ADMIN_KEY_ID="+adminKeyID, "FLEETPASS_ADMIN_KEY_SECRET="+adminSecret)
	s.launch()
	t.Cleanup(s.stop)
	c, err := client.New(s.url, adminKeyID, adminSecret, client.WithPinnedCertificate(s.fingerprint))
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	s.waitReady()
	return s
}

// launch starts the server process.
func (s *server) launch() {
	s.t.Helper()
	s.cmd = exec.Command(buildServer(s.t), s.args...)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := s.client.Ready(s.t.Context()); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("fleetpass did not become ready: %v\n%s", err, s.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill kills the server with SIGKILL, as a crash or the OOM killer would,
// and start starts it again on the same data directory.
func (s *server) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Wait()
}

func (s *server) restart() {
	s.t.Helper()
	s.launch()
	s.waitReady()
}

func (s *server) stop() {
	if s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	if s.t.Failed() {
		s.t.Logf("fleetpass log:\n%s", tail(s.logs.String(), 150))
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// makeCert writes a self-signed certificate for the loopback address and
// for 10.0.2.2, the host as QEMU's user-mode network shows it to guests.
func (s *server) makeCert() (certFile, keyFile string) {
	s.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "fleetpass realvm"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 2, 2)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		s.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		s.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(s.dir, "tls.crt"), filepath.Join(s.dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		s.t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	s.fingerprint = hex.EncodeToString(sum[:])
	return certFile, keyFile
}

// vm defines a VM (not started).
func (s *server) vm(o vmtest.VMOptions) *vmtest.VM {
	s.t.Helper()
	return s.lv.DefineVM(s.t, s.img, o)
}

// instanceOf waits until the inventory has made an instance of the VM and
// ok holds for it, and returns it.
func (s *server) instanceOf(v *vmtest.VM, what string, ok func(apiv1.Instance) bool) apiv1.Instance {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last apiv1.Instance
	for {
		list, err := s.client.ListInstances(s.t.Context(), client.InstanceFilter{Tenant: tenant, NamePrefix: v.Name, Limit: 10})
		if err != nil {
			s.t.Fatal(err)
		}
		for _, in := range list.Instances {
			if in.Power.Address == v.UUID {
				last = in
				if ok == nil || ok(in) {
					return in
				}
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("instance of %s: not %s after 90 s; last seen %+v", v.Name, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func running(in apiv1.Instance) bool { return in.State == apiv1.StateRunning && in.GuestAlive }
func stopped(in apiv1.Instance) bool { return in.State == apiv1.StateStopped }

// resetAndWait sends a native reset and waits for its operation to end.
func (s *server) resetAndWait(req apiv1.PasswordReset, password string) *apiv1.Operation {
	s.t.Helper()
	op, err := s.client.ResetPasswordSecret(s.t.Context(), req, []byte(password))
	if err != nil {
		s.t.Fatalf("reset: %v", err)
	}
	return s.wait(op.ID)
}

func (s *server) wait(id string) *apiv1.Operation {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Minute)
	defer cancel()
	op, err := s.client.WaitOperation(ctx, id)
	if err != nil {
		s.t.Fatalf("wait for operation %s: %v", id, err)
	}
	return op
}

// waitLatest waits for the instance's latest operation (one a dialect
// started) to end.
func (s *server) waitLatest(id string) *apiv1.Operation {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		in, err := s.client.GetInstance(s.t.Context(), id)
		if err != nil {
			s.t.Fatal(err)
		}
		if in.LatestOperation != nil {
			return s.wait(in.LatestOperation.ID)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("instance %s has no operation", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustSucceed(t testing.TB, op *apiv1.Operation) {
	t.Helper()
	if op.Status != apiv1.OperationSucceeded {
		t.Fatalf("operation %s: %s; items %+v", op.ID, op.Status, op.Items)
	}
}

// checkLogins proves a reset the way a user would: the new password logs
// in, the old one is refused.
func checkLogins(t testing.TB, v *vmtest.VM, user, newPW, oldPW string) {
	t.Helper()
	v.WaitSSH(t, 2*time.Minute)
	if err := v.CanLogin(user, newPW); err != nil {
		t.Fatalf("%s: login as %s with the new password: %v", v.Name, user, err)
	}
	if oldPW == "" {
		return
	}
	err := v.CanLogin(user, oldPW)
	if !errors.Is(err, vmtest.ErrAuthFailed) {
		t.Fatalf("%s: login as %s with the old password: %v, want it refused", v.Name, user, err)
	}
}

// assertNoSecret fails if a password shows in the server's log, its data
// directory (database and WAL included), libvirt's logs (/var/log/libvirt,
// whose qemu/ holds each domain's QEMU log) or libvirtd's state of its
// domains (/run/libvirt/qemu), in plain or base64 form (as QEMU's monitor
// and the agent channel carry it). A directory that cannot be walked or a
// file that cannot be read fails the test too: a scan that looked at
// nothing must not pass.
func (s *server) assertNoSecret(passwords ...string) {
	s.t.Helper()
	log := []byte(s.logs.String())
	for _, pw := range passwords {
		if testutil.ContainsSecret(log, pw) {
			s.t.Errorf("the server log shows a password")
		}
		for _, dir := range []string{s.dir, "/var/log/libvirt", "/run/libvirt/qemu"} {
			testutil.AssertNotInDir(s.t, dir, pw)
		}
	}
}

// watchArgv records, until stop is called, whether any process's
// command line shows one of the passwords.
func watchArgv(t testing.TB, passwords ...string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	found := make(chan string, 1)
	go func() {
		for {
			select {
			case <-done:
				close(found)
				return
			case <-time.After(50 * time.Millisecond):
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				data, err := os.ReadFile(p)
				if err != nil {
					continue
				}
				for _, pw := range passwords {
					if bytes.Contains(data, []byte(pw)) {
						select {
						case found <- p:
						default:
						}
					}
				}
			}
		}
	}()
	return func() {
		close(done)
		if p, ok := <-found; ok && p != "" {
			t.Errorf("a process's argv showed a password: %s", p)
		}
	}
}

// newPassword makes a password every dialect accepts.
func newPassword() string { return testutil.NewPassword() }
