package libvirt

import (
	"strings"
	"testing"
)

const agentChannelXML = `<channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-1-vm/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>`

func domXML(metadata, devices string) string {
	return `<domain type='kvm' id='1'>
  <name>vm</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <metadata>` + metadata + `</metadata>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
    ` + devices + `
  </devices>
</domain>`
}

func TestParseDomainXML(t *testing.T) {
	fleetpass := func(os string) string {
		return `<fleetpass:instance xmlns:fleetpass="` + metadataNS + `"><os>` + os + `</os></fleetpass:instance>`
	}
	libosinfo := func(id string) string {
		return `<libosinfo:libosinfo xmlns:libosinfo="` + libosinfoNS + `"><libosinfo:os id="` + id + `"/></libosinfo:libosinfo>`
	}
	tests := []struct {
		name    string
		xml     string
		want    domainInfo
		wantErr string
	}{
		{"bare", domXML("", ""), domainInfo{}, ""},
		{"agent channel", domXML("", agentChannelXML), domainInfo{AgentChannel: true}, ""},
		{"spice channel only", domXML("", `<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>`), domainInfo{}, ""},
		{"guestfwd channel with the agent's name", domXML("", `<channel type='pty'><target type='guestfwd' name='org.qemu.guest_agent.0'/></channel>`), domainInfo{}, ""},
		{"fleetpass linux", domXML(fleetpass("linux"), agentChannelXML), domainInfo{OSType: "linux", AgentChannel: true}, ""},
		{"fleetpass windows", domXML(fleetpass(" Windows "), ""), domainInfo{OSType: "windows"}, ""},
		{"fleetpass beats libosinfo", domXML(fleetpass("linux")+libosinfo("http://microsoft.com/win/2k22"), ""), domainInfo{OSType: "linux"}, ""},
		{"fleetpass unknown, libosinfo decides", domXML(fleetpass("plan9")+libosinfo("http://microsoft.com/win/10"), ""), domainInfo{OSType: "windows"}, ""},
		{"libosinfo windows", domXML(libosinfo("http://microsoft.com/win/2k19"), ""), domainInfo{OSType: "windows"}, ""},
		{"libosinfo debian", domXML(libosinfo("http://debian.org/debian/12"), ""), domainInfo{OSType: "linux"}, ""},
		{"libosinfo ubuntu", domXML(libosinfo("http://ubuntu.com/ubuntu/24.04"), ""), domainInfo{OSType: "linux"}, ""},
		{"libosinfo freebsd", domXML(libosinfo("http://freebsd.org/freebsd/14.0"), ""), domainInfo{}, ""},
		{"wrong namespace", domXML(`<x:instance xmlns:x="https://example.com/"><os>linux</os></x:instance>`, ""), domainInfo{}, ""},
		{"no namespace", domXML(`<instance><os>linux</os></instance>`, ""), domainInfo{}, ""},
		{"not a domain", `<network><name>default</name></network>`, domainInfo{}, "parse domain XML"},
		{"garbage", `not xml`, domainInfo{}, "parse domain XML"},
		{"empty", ``, domainInfo{}, "parse domain XML"},
		{"truncated", domXML("", agentChannelXML)[:200], domainInfo{}, "parse domain XML"},
		{"too large", "<domain>" + strings.Repeat(" ", maxDomainXML) + "</domain>", domainInfo{}, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDomainXML([]byte(tt.xml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseDomainXML = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDomainXML: %v", err)
			}
			if got != tt.want {
				t.Errorf("parseDomainXML = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseDomainXML(f *testing.F) {
	f.Add(domXML("", agentChannelXML))
	f.Add(domXML(`<fleetpass:instance xmlns:fleetpass="`+metadataNS+`"><os>windows</os></fleetpass:instance>`, ""))
	f.Add(domXML(`<libosinfo:libosinfo xmlns:libosinfo="`+libosinfoNS+`"><libosinfo:os id="http://microsoft.com/win/11"/></libosinfo:libosinfo>`, ""))
	f.Add(`<domain><devices><channel><target type="virtio" name="org.qemu.guest_agent.0"/></channel></devices></domain>`)
	f.Add(`<domain>`)
	f.Fuzz(func(t *testing.T, data string) {
		info, err := parseDomainXML([]byte(data))
		if err != nil {
			if info != (domainInfo{}) {
				t.Fatalf("error %v with a non-zero result %+v", err, info)
			}
			return
		}
		switch info.OSType {
		case "", "linux", "windows":
		default:
			t.Fatalf("OSType %q", info.OSType)
		}
		if info.AgentChannel && !strings.Contains(data, agentChannelName) && !strings.Contains(data, "&") {
			t.Fatalf("agent channel found in XML that does not name it: %q", data)
		}
	})
}
