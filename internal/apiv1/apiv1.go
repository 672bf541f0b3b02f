// Package apiv1 holds the wire types of fleetpass's native API (/v1). The
// server, the Go client and the CLI share them, so a field cannot drift
// between the two ends; the OpenAPI document describes the same shapes.
package apiv1

import "time"

// Error is the body of every error answer: {"error": {...}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error describes what went wrong. Code is stable and meant for programs;
// Message is for people. Details carries structured extras, such as the
// unknown instance ids of a refused request.
type Error struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	RequestID string         `json:"requestId"`
	Details   map[string]any `json:"details,omitempty"`
}

// DetailField is the key of Error.Details that names the request field an
// error is about (its JSON name, e.g. "mode", "instanceIds", "bmc.user"),
// when there is one. The message names the field too, as a prefix
// "field: ..." or in parentheses "(field)".
const DetailField = "field"

// Instance states (docs/design.md#states).
const (
	StatePending           = "PENDING"
	StateRunning           = "RUNNING"
	StateStopping          = "STOPPING"
	StateStopped           = "STOPPED"
	StateStarting          = "STARTING"
	StateRebooting         = "REBOOTING"
	StateResettingPassword = "RESETTING_PASSWORD"
	StateError             = "ERROR"
)

// Latest-operation states as the big clouds show them on an instance.
const (
	OpStateOperating = "OPERATING"
	OpStateSuccess   = "SUCCESS"
	OpStateFailed    = "FAILED"
)

// DriverLink says which driver reaches a machine and at which address.
type DriverLink struct {
	Driver  string `json:"driver"`
	Host    string `json:"host,omitempty"`
	Address string `json:"address"`
}

// LatestOperation is the summary an instance carries of its latest operation.
type LatestOperation struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	State string `json:"state"`
}

// Instance is a machine whose password fleetpass resets.
type Instance struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Tenant      string     `json:"tenant"`
	OSType      string     `json:"osType"`
	AdminUser   string     `json:"adminUser"`
	State       string     `json:"state"`
	Power       DriverLink `json:"power"`
	Guest       DriverLink `json:"guest"`
	GuestAlive  bool       `json:"guestAlive"`
	GuestSeenAt *time.Time `json:"guestSeenAt,omitempty"`
	// NoGuestChannel is set when the machine's host says it has no guest
	// agent channel at all: no password can reach it through the host.
	NoGuestChannel bool `json:"noGuestChannel,omitempty"`
	// ResetMethods are the ways this server can reset the instance's
	// password: guest (through its guest channel) and disk (by editing its
	// shut-off disk, for Linux VMs of a local libvirt host).
	ResetMethods    []string         `json:"resetMethods,omitempty"`
	Busy            bool             `json:"busy"`
	LatestOperation *LatestOperation `json:"latestOperation,omitempty"`
	// BMC describes the BMC of a bare-metal server whose power link is a
	// BMC driver (ipmi). Its password is never returned.
	BMC       *BMCStatus `json:"bmc,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
}

// BMCStatus is what an instance shows of its BMC.
type BMCStatus struct {
	// Address is the BMC's host:port (the power link's address).
	Address     string `json:"address"`
	User        string `json:"user"`
	CipherSuite int    `json:"cipherSuite"`
	// AcceptsCipherSuite0 flags a BMC that accepted a session with cipher
	// suite 0, which checks no password: anyone who knows a user name can
	// power the server. fleetpass never uses it; disable it on the BMC.
	AcceptsCipherSuite0 bool `json:"acceptsCipherSuite0,omitempty"`
	// Error is the BMC's last fault (unreachable, credentials refused),
	// empty while it answers.
	Error     string     `json:"error,omitempty"`
	CheckedAt *time.Time `json:"checkedAt,omitempty"`
}

// BMCCredentials are a BMC's login, given when a bare-metal server is
// registered (InstanceCreate.BMC) or its BMC settings change (BMCUpdate).
type BMCCredentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
	// CipherSuite is the RMCP+ cipher suite; absent means 3 (use 17 where
	// the BMC has it); 0 is refused, not taken for a default.
	CipherSuite *int `json:"cipherSuite,omitempty"`
}

// BMCUpdate changes a bare-metal server's BMC settings (admin only):
// PUT /v1/instances/{id}/bmc. Empty fields keep their value, except that
// a new user needs its password.
type BMCUpdate struct {
	// Address moves the power link to another BMC address (HOST[:PORT]).
	Address     string `json:"address,omitempty"`
	User        string `json:"user,omitempty"`
	Password    string `json:"password,omitempty"`
	CipherSuite *int   `json:"cipherSuite,omitempty"`
}

// InstanceCreate registers an instance.
type InstanceCreate struct {
	Name      string     `json:"name"`
	Tenant    string     `json:"tenant,omitempty"` // admin only; defaults to the caller's tenant
	OSType    string     `json:"osType"`
	AdminUser string     `json:"adminUser,omitempty"` // defaults to root or Administrator
	Power     DriverLink `json:"power"`
	// Guest defaults, for a bare-metal server with a BMC, to the fleetpass
	// agent's channel, which the server's agent joins when it enrols with
	// a token bound to the instance's name.
	Guest DriverLink `json:"guest"`
	// BMC is required when Power.Driver is "ipmi" (admin only).
	BMC *BMCCredentials `json:"bmc,omitempty"`
}

// InstanceList is one page of instances. NextCursor is empty on the last page.
type InstanceList struct {
	Instances  []Instance `json:"instances"`
	NextCursor string     `json:"nextCursor,omitempty"`
}

// Reset modes (docs/design.md#modes).
const (
	ModeAuto    = "auto"
	ModeOnline  = "online"
	ModeOffline = "offline"
)

// Reset methods: how the new password reaches an instance (docs/design.md#words, "reset method").
// Auto is the guest channel when the instance has one, else its disk.
const (
	MethodAuto  = "auto"
	MethodGuest = "guest"
	MethodDisk  = "disk"
)

// PasswordReset asks for the password of one or more instances to change.
// Exactly one of Password and Generate must be given.
type PasswordReset struct {
	InstanceIDs []string `json:"instanceIds"`
	// User defaults to each instance's admin user (root or Administrator).
	User string `json:"user,omitempty"`
	Mode string `json:"mode,omitempty"`
	// Method is auto (default), guest or disk. Disk implies an offline
	// reset.
	Method string `json:"method,omitempty"`
	// ForceStop is the caller's consent to shut running instances down, and
	// to cut their power if a graceful shutdown times out.
	ForceStop bool   `json:"forceStop,omitempty"`
	Password  string `json:"password,omitempty"`
	Generate  bool   `json:"generate,omitempty"`
}

// Power actions.
const (
	ActionStart  = "start"
	ActionStop   = "stop"
	ActionReboot = "reboot"
)

// Stop modes.
const (
	StopSoft         = "soft"
	StopHard         = "hard"
	StopSoftThenHard = "soft-then-hard"
)

// PowerAction asks for instances to be started, stopped or rebooted.
type PowerAction struct {
	Action      string   `json:"action"`
	InstanceIDs []string `json:"instanceIds"`
	// StopMode applies to stop and reboot; default soft (a graceful shutdown
	// that fails the item if the guest ignores it).
	StopMode string `json:"stopMode,omitempty"`
}

// Operation kinds.
const (
	KindResetPassword = "reset_password"
	KindStart         = "start"
	KindStop          = "stop"
	KindReboot        = "reboot"
)

// Operation statuses.
const (
	OperationRunning   = "running"
	OperationSucceeded = "succeeded"
	OperationFailed    = "failed"
	OperationPartial   = "partial" // some items succeeded, some failed
)

// Item states.
const (
	ItemPending   = "pending"
	ItemRunning   = "running"
	ItemSucceeded = "succeeded"
	ItemFailed    = "failed"
)

// Item steps, in the order an offline reset goes through them. An online
// reset goes queued, applying, done.
const (
	StepQueued        = "queued"
	StepShuttingDown  = "shutting_down"
	StepForceStopping = "force_stopping"
	StepStopped       = "stopped"
	StepStaging       = "staging"
	StepEditingDisk   = "editing_disk"
	StepStarting      = "starting"
	StepWaitingGuest  = "waiting_for_guest"
	StepApplying      = "applying"
	StepDone          = "done"
)

// Item is one instance's part of an operation.
type Item struct {
	InstanceID   string `json:"instanceId"`
	InstanceName string `json:"instanceName"`
	State        string `json:"state"`
	Step         string `json:"step"`
	Mode         string `json:"mode,omitempty"`
	// Shutdown tells that the item shuts its machine down (an offline
	// reset of a machine that was on when the operation was accepted).
	Shutdown  bool   `json:"shutdown,omitempty"`
	Method    string `json:"method,omitempty"`
	User      string `json:"user,omitempty"`
	ErrorCode string `json:"errorCode,omitempty"`
	Message   string `json:"message,omitempty"`
	// Detail is what the driver said of a failure (socket paths, host
	// URIs, agent ids): shown to the operator (admin) only.
	Detail     string     `json:"detail,omitempty"`
	Attempts   int        `json:"attempts"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// Requester records who asked for an operation, and from where.
type Requester struct {
	Kind string `json:"kind"` // "key" or "user"
	ID   string `json:"id"`
	// Name is the key's name (what it is for) or the console user's name,
	// for people reading who asked; empty for a key without a name.
	Name    string `json:"name,omitempty"`
	Address string `json:"address"`
}

// Operation is one accepted request and its per-instance items.
type Operation struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	Tenant      string     `json:"tenant"`
	Status      string     `json:"status"`
	RequestedBy Requester  `json:"requestedBy"`
	CreatedAt   time.Time  `json:"createdAt"`
	FinishedAt  *time.Time `json:"finishedAt,omitempty"`
	Summary     Summary    `json:"summary"`
	Items       []Item     `json:"items"`
	// GeneratedPassword is present only in the answer to the request that
	// asked for generate: true, and never again.
	GeneratedPassword string `json:"generatedPassword,omitempty"`
}

// Summary counts an operation's items by state.
type Summary struct {
	Total     int `json:"total"`
	Pending   int `json:"pending"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
}

// OperationList is one page of operations, newest first.
type OperationList struct {
	Operations []Operation `json:"operations"`
	NextCursor string      `json:"nextCursor,omitempty"`
}

// Tenant owns instances, keys and console users.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

// TenantCreate creates a tenant (admin only).
type TenantCreate struct {
	Name string `json:"name"`
}

// TenantList lists tenants.
type TenantList struct {
	Tenants []Tenant `json:"tenants"`
}

// Key is an API key as listed: never with its secret.
type Key struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Name      string     `json:"name"`
	Admin     bool       `json:"admin"`
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	LastUsed  *time.Time `json:"lastUsedAt,omitempty"`
}

// KeyCreate creates a key in a tenant (defaults to the caller's).
type KeyCreate struct {
	Name   string `json:"name"`
	Tenant string `json:"tenant,omitempty"`
}

// KeyCreated is the answer to KeyCreate: the only time the secret is shown.
type KeyCreated struct {
	Key
	Secret string `json:"secret"`
}

// KeyList lists keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// AuditEntry is one line of the audit trail.
type AuditEntry struct {
	ID          int64     `json:"id"`
	Time        time.Time `json:"time"`
	Tenant      string    `json:"tenant"`
	Actor       Requester `json:"actor"`
	Action      string    `json:"action"`
	Target      string    `json:"target,omitempty"`
	OperationID string    `json:"operationId,omitempty"`
	RequestID   string    `json:"requestId,omitempty"`
}

// AuditList is one page of the audit trail, newest first.
type AuditList struct {
	Entries    []AuditEntry `json:"entries"`
	NextCursor string       `json:"nextCursor,omitempty"`
}

// Event is one Server-Sent Event of /v1/events. Type is "operation", "item"
// or "instance"; exactly the matching field is set.
type Event struct {
	ID        int64      `json:"id"`
	Type      string     `json:"type"`
	Time      time.Time  `json:"time"`
	Operation *Operation `json:"operation,omitempty"`
	Item      *ItemEvent `json:"item,omitempty"`
	Instance  *Instance  `json:"instance,omitempty"`
}

// ItemEvent is an item change with the operation it belongs to.
type ItemEvent struct {
	OperationID string `json:"operationId"`
	Item
}
