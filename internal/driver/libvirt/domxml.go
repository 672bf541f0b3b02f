package libvirt

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
)

// Names in a domain's XML that fleetpass looks at.
const (
	// agentChannelName is the virtio-serial port name QEMU's guest agent
	// listens on; libvirt talks to the agent only through a channel with
	// this target name.
	agentChannelName = "org.qemu.guest_agent.0"
	// metadataNS is fleetpass's namespace in a domain's <metadata>.
	metadataNS = "https://fleetpass.dev/xmlns/libvirt/1"
	// libosinfoNS is the namespace virt-install and virt-manager use to
	// record the installed OS.
	libosinfoNS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
)

// domainXML is the part of a domain's XML that fleetpass reads. The structs
// are kept small: encoding/xml skips everything else.
type domainXML struct {
	XMLName  xml.Name `xml:"domain"`
	Metadata struct {
		Fleetpass struct {
			OS   string `xml:"os"`
			Root string `xml:"root"`
		} `xml:"https://fleetpass.dev/xmlns/libvirt/1 instance"`
		Libosinfo struct {
			OS struct {
				ID string `xml:"id,attr"`
			} `xml:"os"`
		} `xml:"http://libosinfo.org/xmlns/libvirt/domain/1.0 libosinfo"`
	} `xml:"metadata"`
	Channels []struct {
		Target struct {
			Type string `xml:"type,attr"`
			Name string `xml:"name,attr"`
		} `xml:"target"`
	} `xml:"devices>channel"`
	Disks []struct {
		Type   string `xml:"type,attr"`
		Device string `xml:"device,attr"`
		Driver struct {
			Type string `xml:"type,attr"`
		} `xml:"driver"`
		Source struct {
			File       string    `xml:"file,attr"`
			Dev        string    `xml:"dev,attr"`
			Pool       string    `xml:"pool,attr"`
			Volume     string    `xml:"volume,attr"`
			Protocol   string    `xml:"protocol,attr"`
			Encryption *struct{} `xml:"encryption"`
		} `xml:"source"`
		// Encryption directly under <disk> is libvirt's older place.
		Encryption *struct{} `xml:"encryption"`
		ReadOnly   *struct{} `xml:"readonly"`
		Shareable  *struct{} `xml:"shareable"`
		Target     struct {
			Dev string `xml:"dev,attr"`
		} `xml:"target"`
	} `xml:"devices>disk"`
}

// diskXML is one <disk> of a domain as disk resets need it.
type diskXML struct {
	Type, Device, Format string
	File, Dev            string
	Pool, Volume         string
	Protocol             string
	Encrypted            bool
	ReadOnly, Shareable  bool
	Target               string
}

// domainInfo is what Domains reports from a domain's XML.
type domainInfo struct {
	OSType       string // "linux", "windows" or ""
	AgentChannel bool
	// Root is the root filesystem the domain's fleetpass metadata names
	// for disk resets (<fleetpass:instance><root>), or "".
	Root  string
	Disks []diskXML
}

// maxDomainXML bounds the XML we parse. Real domains' XML is a few KiB to
// some tens of KiB; this is far above that and keeps a broken daemon from
// making us parse without end.
const maxDomainXML = 4 << 20

// parseDomainXML reads the OS type and the guest agent channel from a
// domain's XML (as DomainGetXMLDesc returns it).
func parseDomainXML(data []byte) (domainInfo, error) {
	var info domainInfo
	if len(data) > maxDomainXML {
		return info, fmt.Errorf("domain XML too large (%d bytes)", len(data))
	}
	var d domainXML
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		return info, fmt.Errorf("parse domain XML: %w", err)
	}
	for _, c := range d.Channels {
		if c.Target.Type == "virtio" && c.Target.Name == agentChannelName {
			info.AgentChannel = true
		}
	}
	info.OSType = osType(d.Metadata.Fleetpass.OS, d.Metadata.Libosinfo.OS.ID)
	info.Root = strings.TrimSpace(d.Metadata.Fleetpass.Root)
	for _, x := range d.Disks {
		info.Disks = append(info.Disks, diskXML{Type: x.Type, Device: x.Device, Format: x.Driver.Type,
			File: x.Source.File, Dev: x.Source.Dev, Pool: x.Source.Pool, Volume: x.Source.Volume,
			Protocol: x.Source.Protocol, Encrypted: x.Encryption != nil || x.Source.Encryption != nil,
			ReadOnly: x.ReadOnly != nil, Shareable: x.Shareable != nil, Target: x.Target.Dev})
	}
	return info, nil
}

// osType prefers what fleetpass's own metadata says, then libosinfo's OS
// id. Anything unrecognised gives "", so callers treat it as unknown rather
// than guess.
func osType(fleetpass, libosinfo string) string {
	switch strings.ToLower(strings.TrimSpace(fleetpass)) {
	case "linux":
		return "linux"
	case "windows":
		return "windows"
	}
	id := strings.ToLower(libosinfo)
	switch {
	case strings.HasPrefix(id, "http://microsoft.com/win/"):
		return "windows"
	case id == "":
		return ""
	}
	for _, linux := range []string{
		"http://almalinux.org/", "http://archlinux.org/", "http://centos.org/",
		"http://debian.org/", "http://fedoraproject.org/", "http://gentoo.org/",
		"http://opensuse.org/", "http://redhat.com/rhel/", "http://rockylinux.org/",
		"http://suse.com/", "http://ubuntu.com/", "http://alpinelinux.org/",
		"http://oracle.com/ol/", "http://libosinfo.org/linux/",
	} {
		if strings.HasPrefix(id, linux) {
			return "linux"
		}
	}
	return ""
}
