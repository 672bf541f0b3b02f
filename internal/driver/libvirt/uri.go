package libvirt

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Defaults for connection URIs, as libvirt's own client uses them.
const (
	defaultSocket  = "/var/run/libvirt/libvirt-sock"
	defaultSSHPort = 22
	defaultTLSPort = 16514
	defaultPKICA   = "/etc/pki/CA/cacert.pem"
	defaultPKICert = "/etc/pki/libvirt/clientcert.pem"
	defaultPKIKey  = "/etc/pki/libvirt/private/clientkey.pem"
)

// Transports a target is reached through.
const (
	transportUnix = "unix"
	transportSSH  = "ssh"
	transportTLS  = "tls"
)

// target is a parsed connection URI: how to reach libvirtd, and which of its
// hypervisor drivers to open once connected.
type target struct {
	transport string // transportUnix, transportSSH or transportTLS
	// driverURI is what ConnectToURI asks libvirtd for: the daemon-side
	// URI, without transport or host (qemu:///system, test:///default).
	driverURI string

	socket string // unix socket: local, or remote at the end of an SSH connection

	user string // SSH only; "" means the current user
	host string // SSH and TLS
	port int    // SSH and TLS

	keyFile    string // SSH private key; "" means ~/.ssh/id_ed25519 then id_rsa
	knownHosts string // SSH known_hosts; "" means ~/.ssh/known_hosts
	noVerify   bool   // skip the SSH host key or TLS server certificate check

	pkiPath string // TLS directory with cacert.pem, clientcert.pem, clientkey.pem; "" means libvirt's defaults
}

// drivers maps a URI's hypervisor driver to the only path fleetpass opens on
// it. qemu:///session is left out on purpose: it needs a per-user daemon
// that a control plane does not run.
var drivers = map[string]string{
	"qemu": "/system",
	"test": "/default", // libvirt's mock driver, for tests
}

// queryParams lists the parameters each transport understands. Anything
// else is refused rather than ignored, so that an operator's typo (or a
// libvirt option we do not implement) does not silently do nothing.
var queryParams = map[string][]string{
	transportUnix: {"socket"},
	transportSSH:  {"socket", "keyfile", "known_hosts", "no_verify"},
	transportTLS:  {"pkipath", "no_verify"},
}

// parseURI parses a libvirt connection URI as an operator writes it. Error
// messages never repeat a password that was (wrongly) put in the URI, nor
// the values of parameters we do not know, which could be secrets.
func parseURI(raw string) (target, error) {
	var t target
	if raw == "" {
		return t, errors.New("empty URI")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URI, password included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return t, fmt.Errorf("malformed URI: %w", err)
	}
	if u.Opaque != "" {
		return t, fmt.Errorf("malformed URI: want scheme://[host]/path, e.g. qemu:///system")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return t, errors.New("malformed URI: fragments (#...) are not allowed")
	}
	drv, transport, _ := strings.Cut(strings.ToLower(u.Scheme), "+")
	path, ok := drivers[drv]
	if !ok {
		return t, fmt.Errorf("unsupported URI scheme %q: want qemu, qemu+unix, qemu+ssh or qemu+tls (or test... for tests)", u.Scheme)
	}
	if u.Path != path {
		return t, fmt.Errorf("unsupported path %q for %s: want %s://...%s", u.Path, drv, drv, path)
	}
	t.driverURI = drv + "://" + path
	if transport == "" {
		transport = transportUnix
	}
	allowed, ok := queryParams[transport]
	if !ok {
		return t, fmt.Errorf("unsupported transport %q in URI scheme %q: want unix, ssh or tls", transport, u.Scheme)
	}
	t.transport = transport

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return t, errors.New("malformed URI query")
	}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			// The name only: the value could be a secret.
			return t, fmt.Errorf("unsupported URI parameter %q for %s URIs (supported: %s)", k, transport, strings.Join(allowed, ", "))
		}
		if len(vs) != 1 {
			return t, fmt.Errorf("URI parameter %q given %d times", k, len(vs))
		}
	}
	if v := q.Get("no_verify"); v != "" {
		switch v {
		case "0":
		case "1":
			t.noVerify = true
		default:
			return t, fmt.Errorf("URI parameter no_verify must be 0 or 1, not %q", v)
		}
	}
	t.socket = q.Get("socket")
	t.keyFile = q.Get("keyfile")
	t.knownHosts = q.Get("known_hosts")
	t.pkiPath = q.Get("pkipath")
	for name, p := range map[string]string{"socket": t.socket, "keyfile": t.keyFile, "known_hosts": t.knownHosts, "pkipath": t.pkiPath} {
		if q.Has(name) && !strings.HasPrefix(p, "/") {
			return t, fmt.Errorf("URI parameter %s must be an absolute path, not %q", name, p)
		}
	}
	if _, set := u.User.Password(); set {
		// Not repeated. Password authentication is not supported anyway:
		// a password in a URI ends up in logs and process listings.
		return t, errors.New("passwords in URIs are not supported: use an SSH key (keyfile=)")
	}

	switch transport {
	case transportUnix:
		if u.Host != "" || u.User != nil {
			return t, fmt.Errorf("a %s URI names no host: use %s+ssh:// or %s+tls:// for a remote host", u.Scheme, drv, drv)
		}
		if t.socket == "" {
			t.socket = defaultSocket
		}
		return t, nil
	case transportSSH:
		t.port = defaultSSHPort
		if t.socket == "" {
			t.socket = defaultSocket
		}
		if u.User != nil {
			t.user = u.User.Username()
			if t.user == "" {
				return t, errors.New("empty user name in URI")
			}
		}
	case transportTLS:
		t.port = defaultTLSPort
		if u.User != nil {
			return t, errors.New("a TLS URI takes no user name: the client certificate identifies the client")
		}
	}
	t.host = u.Hostname()
	if t.host == "" {
		return t, fmt.Errorf("a %s URI needs a host: %s://HOST%s", u.Scheme, u.Scheme, path)
	}
	if strings.Contains(t.host, ":") {
		// Only an IPv6 address may hold a colon (url.Parse lets "::"
		// through as host ":" without a port).
		if _, err := netip.ParseAddr(t.host); err != nil {
			return t, fmt.Errorf("invalid host %q: an IPv6 address goes in brackets, e.g. [2001:db8::1]", t.host)
		}
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return t, fmt.Errorf("invalid port %q", p)
		}
		t.port = n
	}
	return t, nil
}

// String returns the URI for logs and errors: user, host, port and the
// parameters we know (paths, not secrets), in a canonical order.
func (t target) String() string {
	drv, path, _ := strings.Cut(t.driverURI, "://")
	u := url.URL{Path: path}
	q := url.Values{}
	switch t.transport {
	case transportUnix:
		u.Scheme = drv
		if t.socket != defaultSocket {
			u.Scheme = drv + "+unix"
			q.Set("socket", t.socket)
		}
	case transportSSH:
		u.Scheme = drv + "+ssh"
		if t.user != "" {
			u.User = url.User(t.user)
		}
		if t.socket != defaultSocket {
			q.Set("socket", t.socket)
		}
		if t.keyFile != "" {
			q.Set("keyfile", t.keyFile)
		}
		if t.knownHosts != "" {
			q.Set("known_hosts", t.knownHosts)
		}
	case transportTLS:
		u.Scheme = drv + "+tls"
		if t.pkiPath != "" {
			q.Set("pkipath", t.pkiPath)
		}
	}
	if t.transport != transportUnix {
		u.Host = t.host
		if t.port != defaultPort(t.transport) {
			u.Host = net.JoinHostPort(t.host, strconv.Itoa(t.port))
		} else if strings.Contains(t.host, ":") {
			u.Host = "[" + t.host + "]"
		}
		if t.noVerify {
			q.Set("no_verify", "1")
		}
	}
	// Slashes need no escaping in a query; paths read better without.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "%2F", "/")
	return u.String()
}

func defaultPort(transport string) int {
	switch transport {
	case transportSSH:
		return defaultSSHPort
	case transportTLS:
		return defaultTLSPort
	}
	return 0
}
