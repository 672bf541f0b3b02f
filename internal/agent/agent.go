// Package agent is the fleetpass agent (docs/design.md#the-agent), the
// program that runs on each machine: it enrols once with a one-time token,
// keeps an outbound long-poll connection to the server (so it works behind
// NAT), and applies the set-password commands the server seals to its own
// key, with chpasswd on Linux and NetUserSetInfo on Windows. At start-up it
// applies the commands that waited for it (passwords staged while the
// machine was off) before it reports ready.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

// Version is the agent's version, reported at enrolment and in heartbeats.
const Version = "0.1.0"

// State is what enrolment leaves on disk: the agent's identity, its key
// pair and how to reach and recognise the server. The file is private to
// root (mode 0600): it holds the private key and the secret.
type State struct {
	Server string `json:"server"`
	// Fingerprint pins the server's TLS certificate (SHA-256 of its DER),
	// taken at enrolment; empty only for plain HTTP on loopback.
	Fingerprint string `json:"tlsFingerprint,omitempty"`
	AgentID     string `json:"agentId"`
	InstanceID  string `json:"instanceId"`
	Tenant      string `json:"tenant"`
	Secret      string `json:"secret"`
	PublicKey   []byte `json:"publicKey"`
	PrivateKey  []byte `json:"privateKey"`
}

// LoadState reads the state file.
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: enrol the agent first (fleetpass-agent enroll)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("agent state %s: %w", path, err)
	}
	if st.AgentID == "" || st.Secret == "" || len(st.PublicKey) != agentproto.KeySize || len(st.PrivateKey) != agentproto.KeySize {
		return nil, fmt.Errorf("agent state %s is incomplete; enrol again", path)
	}
	return &st, nil
}

// Save writes the state file atomically, readable by its owner only.
func (st *State) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("agent state directory: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	return nil
}

func (st *State) keys() (public, private *[agentproto.KeySize]byte) {
	public, private = new([agentproto.KeySize]byte), new([agentproto.KeySize]byte)
	copy(public[:], st.PublicKey)
	copy(private[:], st.PrivateKey)
	return public, private
}
