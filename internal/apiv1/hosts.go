package apiv1

import "time"

// Instance states that only machines behind a host connection have.
const (
	// StateUnknown: fleetpass cannot reach the machine's host (its libvirt
	// connection is down), so the machine's state is not known right now.
	StateUnknown = "UNKNOWN"
	// StateMissing: the host no longer has the machine (its domain was
	// undefined). The instance and its history stay until someone deletes
	// it; it comes back to life if the machine reappears.
	StateMissing = "MISSING"
)

// Host is a hypervisor fleetpass manages the machines of (POST /v1/hosts):
// a libvirt connection whose domains become instances.
type Host struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Driver is the host's driver: "libvirt".
	Driver string `json:"driver"`
	// URI is the libvirt connection URI: qemu:///system, qemu+ssh://...,
	// qemu+tls://...
	URI string `json:"uri"`
	// Tenant the host's instances belong to.
	Tenant string `json:"tenant"`
	// MaxConcurrency bounds the items worked at once on this host.
	MaxConcurrency int `json:"maxConcurrency"`
	// DefaultOSType is the OS type of domains whose metadata tells none.
	DefaultOSType string `json:"defaultOsType"`
	// Connected tells whether the connection is up now; Error is the last
	// connection error while it is down.
	Connected      bool   `json:"connected"`
	Error          string `json:"error,omitempty"`
	LibvirtVersion string `json:"libvirtVersion,omitempty"`
	// Owner is the replica that follows the host now (its events, its
	// inventory and this status); empty while none does, and for
	// a tenant key (replica ids are the operator's).
	Owner     string    `json:"owner,omitempty"`
	Instances int       `json:"instances"`
	CreatedAt time.Time `json:"createdAt"`
}

// HostCreate adds a host.
type HostCreate struct {
	URI  string `json:"uri"`
	Name string `json:"name,omitempty"` // defaults to the URI's host name, or "local"
	// Tenant the host's instances belong to (admin only; defaults to the
	// caller's tenant).
	Tenant         string `json:"tenant,omitempty"`
	MaxConcurrency int    `json:"maxConcurrency,omitempty"` // default 4
	DefaultOSType  string `json:"defaultOsType,omitempty"`  // default linux
}

// HostList is a list of hosts.
type HostList struct {
	Hosts []Host `json:"hosts"`
}
