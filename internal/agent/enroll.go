package agent

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/fleetpass/fleetpass/internal/agentproto"
)

// EnrollOptions are the inputs of an enrolment.
type EnrollOptions struct {
	Server      string
	Token       string
	Fingerprint string
	// Hostname defaults to the machine's host name.
	Hostname string
}

// Enroll spends a one-time token: it makes the agent's key pair, registers
// the machine with the server and returns the state to save. The private
// key never leaves the machine.
func Enroll(ctx context.Context, o EnrollOptions) (*State, error) {
	if o.Server == "" || o.Token == "" {
		return nil, fmt.Errorf("enrolment needs the server URL and a token")
	}
	fp := ""
	if o.Fingerprint != "" {
		var err error
		if fp, err = normalizeFingerprint(o.Fingerprint); err != nil {
			return nil, err
		}
	}
	c, err := newHTTPClient(o.Server, fp)
	if err != nil {
		return nil, err
	}
	// One request: its connection must not outlive the enrolment.
	defer c.CloseIdleConnections()
	host := o.Hostname
	if host == "" {
		if host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
	}
	pub, priv, err := agentproto.NewKeyPair()
	if err != nil {
		return nil, fmt.Errorf("make the agent's key pair: %w", err)
	}
	var resp agentproto.EnrollResponse
	err = post(ctx, c, o.Server, agentproto.PathEnroll, "", agentproto.EnrollRequest{Token: o.Token, Hostname: host,
		OS: runtime.GOOS, Version: Version, PublicKey: pub[:], MachineID: machineID()}, &resp)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	return &State{Server: o.Server, Fingerprint: fp, AgentID: resp.AgentID, InstanceID: resp.InstanceID,
		Tenant: resp.Tenant, Secret: resp.Secret, PublicKey: pub[:], PrivateKey: priv[:]}, nil
}

// machineID reads the SMBIOS system UUID (Linux; root may read it). It is
// empty where there is none, and on other systems for now.
func machineID() string {
	b, err := os.ReadFile("/sys/class/dmi/id/product_uuid")
	if err != nil {
		return ""
	}
	id := strings.ToLower(strings.TrimSpace(string(b)))
	if len(id) != 36 {
		return ""
	}
	return id
}
