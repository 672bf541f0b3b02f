package apiv1

import "time"

// AgentTokenCreate asks for a one-time enrolment token of the fleetpass
// agent (POST /v1/agent-tokens).
type AgentTokenCreate struct {
	// Tenant the enrolled instance belongs to (admin only; defaults to the
	// caller's tenant).
	Tenant string `json:"tenant,omitempty"`
	// InstanceName binds the token to an instance name; empty lets the
	// agent use its host name.
	InstanceName string `json:"instanceName,omitempty"`
	// TTL is how long the token may be used, as a Go duration ("1h");
	// default 1h, at most 30 days.
	TTL string `json:"ttl,omitempty"`
}

// AgentTokenCreated is a new token. Token is shown only here: the server
// keeps its hash.
type AgentTokenCreated struct {
	ID           string    `json:"id"`
	Token        string    `json:"token"`
	Tenant       string    `json:"tenant"`
	InstanceName string    `json:"instanceName,omitempty"`
	ExpiresAt    time.Time `json:"expiresAt"`
}

// States of an enrolment token.
const (
	TokenActive  = "active"
	TokenUsed    = "used"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
)

// AgentToken is an enrolment token as listed: never the token itself.
type AgentToken struct {
	ID           string     `json:"id"`
	Tenant       string     `json:"tenant"`
	InstanceName string     `json:"instanceName,omitempty"`
	State        string     `json:"state"`
	CreatedBy    string     `json:"createdBy"`
	CreatedAt    time.Time  `json:"createdAt"`
	ExpiresAt    time.Time  `json:"expiresAt"`
	UsedAt       *time.Time `json:"usedAt,omitempty"`
	RevokedAt    *time.Time `json:"revokedAt,omitempty"`
	// AgentID is the agent that used the token.
	AgentID string `json:"agentId,omitempty"`
}

// AgentTokenList is the answer of GET /v1/agent-tokens.
type AgentTokenList struct {
	Tokens []AgentToken `json:"tokens"`
}
