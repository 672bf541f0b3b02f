// Package agentproto is the wire protocol between the fleetpass agent and
// the server (docs/design.md#the-agent): JSON over HTTP(S), always opened by
// the agent (so it works behind NAT), and the sealing of set-password
// commands to the agent's own X25519 key with NaCl's anonymous sealed boxes.
//
// The agent long-polls POST /agent/v1/poll; each poll is also a heartbeat.
// The server answers with the commands waiting for the agent, at once when
// there are some, else after the hold time with none. The agent acks each
// command with POST /agent/v1/ack. Commands are rows in the server's
// database until acked, so neither side's restart loses one.
package agentproto

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"
)

// Paths of the agent endpoints.
const (
	PathEnroll = "/agent/v1/enroll"
	PathPoll   = "/agent/v1/poll"
	PathAck    = "/agent/v1/ack"
)

// Results of a command, as the agent reports them.
const (
	ResultOK           = "ok"
	ResultUserNotFound = "user_not_found"
	ResultFailed       = "failed"
	// ResultBadCommand: the agent could not open or parse the command
	// (sealed to another key, garbled).
	ResultBadCommand = "bad_command"
)

// KindSetPassword is the only command kind so far.
const KindSetPassword = "set-password"

// EnrollRequest is what `fleetpass-agent enroll` sends.
type EnrollRequest struct {
	Token    string `json:"token"`
	Hostname string `json:"hostname"`
	OS       string `json:"os"` // linux | windows
	Version  string `json:"version"`
	// PublicKey is the agent's X25519 public key (32 bytes); its private
	// key never leaves the machine.
	PublicKey []byte `json:"publicKey"`
	// MachineID is the machine's SMBIOS system UUID when it has one. A
	// virtual machine's is its hypervisor's domain UUID, so the server can
	// attach the agent to the instance the hypervisor's inventory made
	// instead of registering the machine twice.
	MachineID string `json:"machineId,omitempty"`
}

// EnrollResponse gives the agent its identity.
type EnrollResponse struct {
	AgentID    string `json:"agentId"`
	InstanceID string `json:"instanceId"`
	Tenant     string `json:"tenant"`
	// Secret authenticates the agent's later requests (Bearer
	// AGENT_ID:SECRET); the server keeps only its hash.
	Secret string `json:"secret"`
}

// PollRequest is a heartbeat and a request for commands.
type PollRequest struct {
	// Session is random per agent process: the server tells a restarted
	// agent from a reconnecting one by it.
	Session string `json:"session"`
	// Ready is false until the agent has applied the commands waiting at
	// its start-up (staged passwords); the server reports the guest alive
	// only once it is true.
	Ready   bool   `json:"ready"`
	Version string `json:"version,omitempty"`
}

// PollResponse carries the commands to run, oldest first.
type PollResponse struct {
	Commands []Command `json:"commands"`
}

// Command is one command for the agent.
type Command struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	User string `json:"user"`
	// Sealed is the password in a sealed box to the agent's public key.
	Sealed []byte `json:"sealed"`
}

// Ack reports a command's result. Message never contains the password.
type Ack struct {
	ID       string `json:"id"`
	Result   string `json:"result"`
	ExitCode int    `json:"exitCode,omitempty"`
	Message  string `json:"message,omitempty"`
}

// KeySize is the size of X25519 keys.
const KeySize = 32

// NewKeyPair makes an agent key pair.
func NewKeyPair() (public, private *[KeySize]byte, err error) {
	return box.GenerateKey(rand.Reader)
}

// Seal seals secret to the agent's public key. Only the holder of the
// private key can open it; the server keeps no key of its own for it.
func Seal(public []byte, secret []byte) ([]byte, error) {
	if len(public) != KeySize {
		return nil, fmt.Errorf("agent public key: want %d bytes, got %d", KeySize, len(public))
	}
	var pk [KeySize]byte
	copy(pk[:], public)
	return box.SealAnonymous(nil, secret, &pk, rand.Reader)
}

// ErrOpen is returned when a sealed box does not open with the agent's keys.
var ErrOpen = errors.New("the sealed command does not open with this agent's key")

// Open opens a sealed box. The caller wipes the result.
func Open(sealed []byte, public, private *[KeySize]byte) ([]byte, error) {
	out, ok := box.OpenAnonymous(nil, sealed, public, private)
	if !ok {
		return nil, ErrOpen
	}
	return out, nil
}
