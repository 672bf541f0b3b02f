package libvirt

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// dial opens the byte stream to libvirtd that t describes. The whole of it
// (TCP, SSH or TLS handshakes) is bounded by timeout and ctx.
//
// We dial ourselves rather than through go-libvirt's dialers because those
// take no context, and its SSH dialer never closes the SSH client it opens
// and falls back to password authentication.
func dial(ctx context.Context, t target, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch t.transport {
	case transportUnix:
		var d net.Dialer
		return d.DialContext(ctx, "unix", t.socket)
	case transportSSH:
		return dialSSH(ctx, t)
	case transportTLS:
		return dialTLS(ctx, t)
	}
	return nil, fmt.Errorf("unsupported transport %q", t.transport)
}

func dialTLS(ctx context.Context, t target) (net.Conn, error) {
	ca, cert, key := defaultPKICA, defaultPKICert, defaultPKIKey
	if t.pkiPath != "" {
		ca = filepath.Join(t.pkiPath, "cacert.pem")
		cert = filepath.Join(t.pkiPath, "clientcert.pem")
		key = filepath.Join(t.pkiPath, "clientkey.pem")
	}
	// Read at every dial, so that renewed certificates are picked up by
	// the next reconnect.
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ServerName:   t.host,
		MinVersion:   tls.VersionTLS12,
	}
	if t.noVerify {
		// The operator asked for it with no_verify=1.
		cfg.InsecureSkipVerify = true //nolint:gosec
	} else {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate found in %s", ca)
		}
		cfg.RootCAs = pool
	}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.host, strconv.Itoa(t.port)))
	if err != nil {
		return nil, err
	}
	// After the handshake libvirtd sends one byte telling whether it
	// accepted our certificate (1) or not; until it is read, RPCs would
	// wait for an answer that never comes.
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(deadline)
	}
	var status [1]byte
	if _, err := io.ReadFull(c, status[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read libvirtd's verdict on our certificate: %w", err)
	}
	if status[0] != 1 {
		c.Close()
		return nil, errors.New("libvirtd refused our client certificate (or our address)")
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

func dialSSH(ctx context.Context, t target) (net.Conn, error) {
	cfg, err := sshConfig(t)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(t.host, strconv.Itoa(t.port))
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if !t.noVerify {
		if err := preferKnownHostKeys(cfg, t, addr, tcp.RemoteAddr()); err != nil {
			tcp.Close()
			return nil, err
		}
	}
	// x/crypto/ssh's handshake takes no context: a deadline bounds it and
	// closing the connection ends it early when ctx is cancelled.
	if deadline, ok := ctx.Deadline(); ok {
		_ = tcp.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { tcp.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(tcp, addr, cfg)
	if !stop() {
		// ctx ended during the handshake; tcp is closed.
		if err == nil {
			sc.Close()
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, ctx.Err())
	}
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, err)
	}
	_ = tcp.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	// Opening the channel is one round trip; run it aside so ctx bounds it.
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Dial("unix", t.socket)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			client.Close()
			return nil, fmt.Errorf("open %s on %s through ssh: %w", t.socket, addr, r.err)
		}
		return &sshConn{Conn: r.c, client: client}, nil
	case <-ctx.Done():
		client.Close()
		return nil, fmt.Errorf("open %s on %s through ssh: %w", t.socket, addr, ctx.Err())
	}
}

// sshConn is a stream forwarded through an SSH connection that is used for
// nothing else, so closing the stream closes the SSH connection too.
type sshConn struct {
	net.Conn
	client *ssh.Client
	once   sync.Once
}

func (c *sshConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if cerr := c.client.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	})
	return err
}

// sshConfig builds the client configuration: public key authentication
// only (a control plane has nobody to type a password), host key checked
// against known_hosts unless no_verify=1.
func sshConfig(t target) (*ssh.ClientConfig, error) {
	name := t.user
	if name == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("no user in URI and no current user: %w", err)
		}
		name = u.Username
	}
	keyFile := t.keyFile
	if keyFile == "" {
		var err error
		if keyFile, err = defaultKeyFile(); err != nil {
			return nil, err
		}
	}
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	clear(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("ssh key %s is protected by a passphrase, which is not supported", keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("parse ssh key %s: %w", keyFile, err)
	}
	cfg := &ssh.ClientConfig{
		User: name,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
	}
	if t.noVerify {
		// The operator asked for it with no_verify=1.
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec
		return cfg, nil
	}
	known := t.knownHosts
	if known == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("no known_hosts in URI and no home directory: %w", err)
		}
		known = filepath.Join(home, ".ssh", "known_hosts")
	}
	cb, err := knownhosts.New(known)
	if err != nil {
		return nil, fmt.Errorf("read known hosts: %w", err)
	}
	cfg.HostKeyCallback = cb
	return cfg, nil
}

func defaultKeyFile() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no keyfile in URI and no home directory: %w", err)
	}
	for _, name := range []string{"id_ed25519", "id_rsa"} {
		p := filepath.Join(home, ".ssh", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("ssh key: %w", err)
		}
	}
	return "", fmt.Errorf("no keyfile in URI and neither ~/.ssh/id_ed25519 nor ~/.ssh/id_rsa exists")
}

// preferKnownHostKeys restricts the host key algorithms to the types of the
// keys known_hosts holds for the host. Without it the server may offer a
// key of another type first (say ECDSA when only the Ed25519 key is
// known), and the check fails although the host is known.
func preferKnownHostKeys(cfg *ssh.ClientConfig, t target, addr string, remote net.Addr) error {
	// Asking about a key that cannot match makes knownhosts list the
	// keys it knows for the host.
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return err
	}
	var keyErr *knownhosts.KeyError
	if err := cfg.HostKeyCallback(addr, remote, probe); !errors.As(err, &keyErr) {
		return nil // leave it to the handshake to say what is wrong
	}
	if len(keyErr.Want) == 0 {
		return fmt.Errorf("host %s is not in known_hosts (add its key, or set no_verify=1)", t.host)
	}
	var algos []string
	for _, k := range keyErr.Want {
		switch typ := k.Key.Type(); typ {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, typ)
		}
	}
	cfg.HostKeyAlgorithms = algos
	return nil
}
