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
			if got.OSType != tt.want.OSType || got.AgentChannel != tt.want.AgentChannel {
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
	f.Add(`<domain><devices><disk type="file" device="disk"><driver type="qcow2"/><source file="/a b"><encryption/></source><readonly/></disk></devices></domain>`)
	f.Fuzz(func(t *testing.T, data string) {
		info, err := parseDomainXML([]byte(data))
		if err != nil {
			if info.OSType != "" || info.AgentChannel || info.Root != "" || info.Disks != nil {
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

func TestParseDomainXMLReadsDisksAndRoot(t *testing.T) {
	x := `<domain><metadata><fleetpass:instance xmlns:fleetpass="` + metadataNS + `"><root> /dev/sda1 </root></fleetpass:instance></metadata>
<devices>
  <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/v/a.qcow2"/><target dev="vda"/></disk>
  <disk type="block" device="disk"><driver type="raw"/><source dev="/dev/sdz"/><target dev="vdb"/><readonly/></disk>
  <disk type="file" device="cdrom"><source file="/iso"/><target dev="hdc"/></disk>
  <disk type="network" device="disk"><source protocol="rbd" name="p/i"/><target dev="vdc"/></disk>
  <disk type="file" device="disk"><source file="/v/luks.img"><encryption format="luks"/></source><target dev="vdd"/></disk>
</devices></domain>`
	info, err := parseDomainXML([]byte(x))
	if err != nil {
		t.Fatal(err)
	}
	if info.Root != "/dev/sda1" {
		t.Errorf("Root = %q", info.Root)
	}
	want := []diskXML{
		{Type: "file", Device: "disk", Format: "qcow2", File: "/v/a.qcow2", Target: "vda"},
		{Type: "block", Device: "disk", Format: "raw", Dev: "/dev/sdz", Target: "vdb", ReadOnly: true},
		{Type: "file", Device: "cdrom", File: "/iso", Target: "hdc"},
		{Type: "network", Device: "disk", Protocol: "rbd", Target: "vdc"},
		{Type: "file", Device: "disk", File: "/v/luks.img", Target: "vdd", Encrypted: true},
	}
	if len(info.Disks) != len(want) {
		t.Fatalf("Disks = %+v", info.Disks)
	}
	for i := range want {
		if info.Disks[i] != want[i] {
			t.Errorf("disk %d = %+v, want %+v", i, info.Disks[i], want[i])
		}
	}
}
