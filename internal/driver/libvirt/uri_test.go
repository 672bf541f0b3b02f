package libvirt

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    target
		str     string // String(), when it differs from uri
		wantErr string // substring of the error
	}{
		{uri: "qemu:///system", want: target{transport: "unix", driverURI: "qemu:///system", socket: defaultSocket}},
		{uri: "QEMU:///system", want: target{transport: "unix", driverURI: "qemu:///system", socket: defaultSocket}, str: "qemu:///system"},
		{uri: "qemu:///system?socket=/run/x.sock", want: target{transport: "unix", driverURI: "qemu:///system", socket: "/run/x.sock"}, str: "qemu+unix:///system?socket=/run/x.sock"},
		{uri: "qemu+unix:///system?socket=/tmp/s", want: target{transport: "unix", driverURI: "qemu:///system", socket: "/tmp/s"}, str: "qemu+unix:///system?socket=/tmp/s"},
		{uri: "qemu+unix:///system", want: target{transport: "unix", driverURI: "qemu:///system", socket: defaultSocket}, str: "qemu:///system"},
		{uri: "test:///default", want: target{transport: "unix", driverURI: "test:///default", socket: defaultSocket}},
		{uri: "qemu+ssh://kvm1.example.com/system", want: target{transport: "ssh", driverURI: "qemu:///system", socket: defaultSocket, host: "kvm1.example.com", port: 22}},
		{
			uri:  "qemu+ssh://root@10.0.0.5:2222/system?keyfile=/etc/fleetpass/id_ed25519&known_hosts=/etc/fleetpass/known_hosts",
			want: target{transport: "ssh", driverURI: "qemu:///system", socket: defaultSocket, user: "root", host: "10.0.0.5", port: 2222, keyFile: "/etc/fleetpass/id_ed25519", knownHosts: "/etc/fleetpass/known_hosts"},
			str:  "qemu+ssh://root@10.0.0.5:2222/system?keyfile=/etc/fleetpass/id_ed25519&known_hosts=/etc/fleetpass/known_hosts",
		},
		{uri: "qemu+ssh://root@[::1]:2222/system?no_verify=1&socket=/run/libvirt/libvirt-sock", want: target{transport: "ssh", driverURI: "qemu:///system", socket: "/run/libvirt/libvirt-sock", user: "root", host: "::1", port: 2222, noVerify: true}, str: "qemu+ssh://root@[::1]:2222/system?no_verify=1&socket=/run/libvirt/libvirt-sock"},
		{uri: "test+ssh://root@127.0.0.1:2022/default", want: target{transport: "ssh", driverURI: "test:///default", socket: defaultSocket, user: "root", host: "127.0.0.1", port: 2022}},
		{uri: "qemu+tls://kvm1/system", want: target{transport: "tls", driverURI: "qemu:///system", host: "kvm1", port: 16514}},
		{uri: "qemu+tls://kvm1:16515/system?pkipath=/etc/fleetpass/pki&no_verify=1", want: target{transport: "tls", driverURI: "qemu:///system", host: "kvm1", port: 16515, pkiPath: "/etc/fleetpass/pki", noVerify: true}, str: "qemu+tls://kvm1:16515/system?no_verify=1&pkipath=/etc/fleetpass/pki"},
		{uri: "qemu+tls://kvm1/system?no_verify=0", want: target{transport: "tls", driverURI: "qemu:///system", host: "kvm1", port: 16514}, str: "qemu+tls://kvm1/system"},

		{uri: "", wantErr: "empty URI"},
		{uri: "xen:///system", wantErr: `unsupported URI scheme "xen"`},
		{uri: "vbox:///session", wantErr: "unsupported URI scheme"},
		{uri: "qemu:///session", wantErr: `unsupported path "/session"`},
		{uri: "qemu://", wantErr: "unsupported path"},
		{uri: "qemu+tcp://kvm1/system", wantErr: `unsupported transport "tcp"`},
		{uri: "qemu+libssh2://kvm1/system", wantErr: "unsupported transport"},
		{uri: "qemu+ext:///system?command=/bin/sh", wantErr: "unsupported transport"},
		{uri: "qemu://kvm1/system", wantErr: "names no host"},
		{uri: "qemu+ssh:///system", wantErr: "needs a host"},
		{uri: "qemu+tls://root@kvm1/system", wantErr: "takes no user name"},
		{uri: "qemu+ssh://kvm1:0/system", wantErr: "invalid port"},
		{uri: "qemu+ssh://kvm1:99999/system", wantErr: "invalid port"},
		{uri: "qemu+ssh://kvm1/system?keyfile=id_rsa", wantErr: "absolute path"},
		{uri: "qemu+ssh://kvm1/system?no_verify=yes", wantErr: "must be 0 or 1"},
		{uri: "qemu+ssh://kvm1/system?pkipath=/x", wantErr: `unsupported URI parameter "pkipath"`},
		{uri: "qemu+ssh://kvm1/system?keyfile=/a&keyfile=/b", wantErr: "given 2 times"},
		{uri: "qemu+tls://kvm1/system?socket=/x", wantErr: "unsupported URI parameter"},
		{uri: "qemu:///system?name=qemu:///session", wantErr: "unsupported URI parameter"},
		{uri: "qemu:///system#frag", wantErr: "fragments"},
		{uri: "qemu:system", wantErr: "malformed URI"},
		{uri: "qemu+ssh://kvm1 x/system", wantErr: "malformed URI"},
		{uri: "qemu+ssh://@kvm1/system", wantErr: "empty user name"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := parseURI(tt.uri)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseURI(%q) = %+v, %v; want error containing %q", tt.uri, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseURI(%q): %v", tt.uri, err)
			}
			if got != tt.want {
				t.Errorf("parseURI(%q) =\n %+v, want\n %+v", tt.uri, got, tt.want)
			}
			str := tt.str
			if str == "" {
				str = tt.uri
			}
			if s := got.String(); s != str {
				t.Errorf("String() = %q, want %q", s, str)
			}
		})
	}
}

func TestParseURIHidesSecrets(t *testing.T) {
	const secret = "Sup3rS3cret"
	for _, uri := range []string{
		"qemu+ssh://root:" + secret + "@kvm1/system",
		"qemu+tls://root:" + secret + "@kvm1/system",
		"qemu+ssh://root:" + secret + "@kvm1:bad/system",
		"qemu+ssh://root:" + secret + "@kvm 1/system",
		"qemu+ssh://root:" + secret + "@kvm1/system?%zz",
		"qemu+ssh://kvm1/system?password=" + secret,
		"qemu+ssh://kvm1/system?no_verify=" + secret[:4] + "&password=" + secret,
		"qemu:///system?passwd=" + secret,
	} {
		_, err := parseURI(uri)
		if err == nil {
			t.Errorf("parseURI(%q) succeeded, want an error", uri)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("parseURI(%q): error shows the secret: %v", uri, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"qemu:///system",
		"qemu+unix:///system?socket=/run/x",
		"test:///default",
		"qemu+ssh://root@h:2222/system?keyfile=/k&known_hosts=/kh&no_verify=1",
		"qemu+tls://h/system?pkipath=/p",
		"qemu+ssh://u:p@[::1]:22/system",
		"qemu+ssh://%zz/system",
		"qemu+tls://h:/system",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		got, err := parseURI(uri)
		if err != nil {
			return
		}
		// What we log must parse back to the same target.
		again, err := parseURI(got.String())
		if err != nil {
			t.Fatalf("parseURI(%q) = %+v, whose String %q does not parse: %v", uri, got, got.String(), err)
		}
		if again != got {
			t.Fatalf("parseURI(%q) = %+v, but its String %q parses to %+v", uri, got, got.String(), again)
		}
		switch got.transport {
		case transportUnix:
			if got.host != "" || got.socket == "" {
				t.Fatalf("unix target %+v", got)
			}
		case transportSSH, transportTLS:
			if got.host == "" || got.port < 1 || got.port > 65535 {
				t.Fatalf("remote target %+v", got)
			}
		default:
			t.Fatalf("transport %q", got.transport)
		}
		if got.driverURI != "qemu:///system" && got.driverURI != "test:///default" {
			t.Fatalf("driver URI %q", got.driverURI)
		}
	})
}
