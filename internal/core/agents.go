package core

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Names of the fleetpass agent's drivers: its guest channel, and the power
// driver of machines that only the agent reaches (no power control).
const (
	AgentGuestDriver  = "agent"
	ManualPowerDriver = "manual"
)

// Limits of enrolment tokens.
const (
	DefaultAgentTokenTTL = time.Hour
	MaxAgentTokenTTL     = 30 * 24 * time.Hour
)

// agentTokenPrefix makes tokens recognisable in a leaked log or paste.
const agentTokenPrefix = "fpat_"

// GuestDriver returns the guest channel registered under name, or nil.
// The agent's HTTP endpoints reach their channel through it.
func (s *Service) GuestDriver(name string) driver.Guest { return s.drivers.Guest[name] }

// CreateAgentToken makes a single-use enrolment token for the fleetpass
// agent, bound to a tenant (the caller's own unless admin) and optionally
// to an instance name. The token is returned once; the store keeps its hash.
func (s *Service) CreateAgentToken(ctx context.Context, p Principal, req apiv1.AgentTokenCreate) (apiv1.AgentTokenCreated, error) {
	tenant, err := p.TenantFor(req.Tenant)
	if err != nil {
		return apiv1.AgentTokenCreated{}, err
	}
	name := strings.TrimSpace(req.InstanceName)
	if len(name) > 128 || ctlchar.Contains(name) {
		return apiv1.AgentTokenCreated{}, fieldErrorf(CodeInvalidArgument, "instanceName", "at most 128 printable characters (no control characters)")
	}
	ttl := DefaultAgentTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxAgentTokenTTL {
			return apiv1.AgentTokenCreated{}, fieldErrorf(CodeInvalidArgument, "ttl", "a duration such as 1h, more than 0 and at most %s", MaxAgentTokenTTL)
		}
		ttl = d
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return apiv1.AgentTokenCreated{}, &Error{Code: CodeInternal, Message: "could not make a token", Err: err}
	}
	token := agentTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	now := s.store.Now().UTC().Truncate(time.Millisecond)
	rec := store.AgentToken{ID: NewID("fpt", 12), Tenant: tenant, InstanceName: name, TokenHash: hashSecret([]byte(token)),
		CreatedBy: p.ID, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", tenant)
			}
			return err
		}
		if err := s.store.CreateAgentToken(ctx, tx, rec); err != nil {
			return err
		}
		return s.audit(ctx, tx, p, tenant, "agent_token.create", rec.ID, "")
	})
	if err != nil {
		return apiv1.AgentTokenCreated{}, wrapStore(err)
	}
	return apiv1.AgentTokenCreated{ID: rec.ID, Token: token, Tenant: tenant, InstanceName: name, ExpiresAt: rec.ExpiresAt}, nil
}

// AgentEnrolment is what an agent tells about itself when it enrols.
type AgentEnrolment struct {
	Token     string
	Hostname  string
	OSType    string
	Version   string
	PublicKey []byte
	// MachineID is the SMBIOS system UUID the agent read, if any.
	MachineID string
	Address   string // the agent's network address, for the audit trail
}

// AgentIdentity is what an enrolled agent gets back.
type AgentIdentity struct {
	AgentID, InstanceID, Tenant, Secret string
}

// EnrollAgent spends an enrolment token: it registers the agent's machine
// as an instance (guest channel "agent", power "manual") and the agent's
// identity, in one transaction. When the machine is a VM the tenant's
// libvirt inventory knows already (its SMBIOS UUID is a domain's UUID), the
// agent becomes that instance's guest channel instead, and libvirt keeps
// its power; so it does for a bare-metal server registered with its BMC,
// found by the name the token is bound to, whose BMC keeps its power. Unknown, used and expired tokens are refused alike.
func (s *Service) EnrollAgent(ctx context.Context, e AgentEnrolment) (AgentIdentity, error) {
	if e.OSType != OSLinux && e.OSType != OSWindows {
		return AgentIdentity{}, fieldErrorf(CodeInvalidArgument, "os", "must be linux or windows")
	}
	if len(e.PublicKey) != 32 {
		return AgentIdentity{}, fieldErrorf(CodeInvalidArgument, "publicKey", "an X25519 public key of 32 bytes")
	}
	host := strings.TrimSpace(e.Hostname)
	if host == "" || len(host) > 128 || ctlchar.Contains(host) {
		return AgentIdentity{}, fieldErrorf(CodeInvalidArgument, "hostname", "1-128 printable characters (no control characters)")
	}
	if len(e.Version) > 64 || ctlchar.Contains(e.Version) {
		return AgentIdentity{}, fieldErrorf(CodeInvalidArgument, "version", "at most 64 characters")
	}
	if _, ok := s.drivers.Guest[AgentGuestDriver]; !ok {
		return AgentIdentity{}, errorf(CodeUnknownDriver, "this server has no agent channel")
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return AgentIdentity{}, &Error{Code: CodeInternal, Message: "could not make the agent's secret", Err: err}
	}
	id := AgentIdentity{AgentID: NewID("agt", 16), InstanceID: NewID("ins", 10), Secret: base64.RawURLEncoding.EncodeToString(secret)}
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		tok, err := s.store.UseAgentToken(ctx, tx, hashSecret([]byte(strings.TrimSpace(e.Token))), id.AgentID, s.store.Now())
		if errors.Is(err, store.ErrNotFound) {
			return errorf(CodeUnauthenticated, "the enrolment token is unknown, used or expired")
		}
		if err != nil {
			return err
		}
		id.Tenant = tok.Tenant
		name := tok.InstanceName
		if name == "" {
			name = host
		}
		guest := apiv1.DriverLink{Driver: AgentGuestDriver, Address: id.AgentID}
		in, err := s.vmInstance(ctx, tx, tok.Tenant, tok.InstanceName, e.MachineID)
		if errors.Is(err, store.ErrNotFound) {
			in, err = s.bareMetalInstance(ctx, tx, tok.Tenant, tok.InstanceName)
		}
		switch {
		case err == nil:
			id.InstanceID = in.ID
			if err := s.store.SetInstanceGuest(ctx, tx, in.ID, guest); err != nil {
				return linkError(err)
			}
		case errors.Is(err, store.ErrNotFound):
			in = apiv1.Instance{ID: id.InstanceID, Tenant: tok.Tenant, Name: name, OSType: e.OSType,
				AdminUser: DefaultAdminUser(e.OSType), State: apiv1.StatePending,
				Power: apiv1.DriverLink{Driver: ManualPowerDriver, Address: id.AgentID}, Guest: guest}
			if err := s.checkQuota(ctx, tx, tok.Tenant, 1); err != nil {
				return err
			}
			if err := s.store.CreateInstance(ctx, tx, &in); err != nil {
				return linkError(err)
			}
		default:
			return err
		}
		if err := s.store.CreateAgent(ctx, tx, store.Agent{ID: id.AgentID, InstanceID: in.ID, Tenant: tok.Tenant,
			PublicKey: e.PublicKey, SecretHash: hashSecret([]byte(id.Secret)), Hostname: host, OSType: e.OSType,
			Version: e.Version, CreatedAt: s.store.Now()}); err != nil {
			return err
		}
		if err := events.EmitInstance(ctx, tx, s.store, in.ID); err != nil {
			return err
		}
		p := Principal{Kind: "agent-token", ID: tok.ID, Tenant: tok.Tenant, Address: e.Address}
		return s.audit(ctx, tx, p, tok.Tenant, "agent.enroll", in.ID, "")
	})
	if err != nil {
		return AgentIdentity{}, wrapStore(err)
	}
	s.bus.Poke()
	return id, nil
}

// vmInstance finds the tenant's libvirt instance whose domain UUID is
// machineID, for an agent enrolling with a token bound to name. The UUID
// alone is not trusted: any machine can claim any UUID, and a domain's is
// no secret in its tenant. So the token must name that very instance, an
// explicit grant by someone who may manage it; a token bound to another
// name, or to none, is refused for a known VM rather than making a second
// instance of it. A VM that already has an agent is not taken over: its
// agent goes with its instance.
func (s *Service) vmInstance(ctx context.Context, tx *sql.Tx, tenant, name, machineID string) (apiv1.Instance, error) {
	if machineID == "" {
		return apiv1.Instance{}, store.ErrNotFound
	}
	in, err := s.store.FindInstanceByPowerAddress(ctx, tx, tenant, LibvirtDriver, strings.ToLower(machineID))
	if err != nil {
		return in, err
	}
	if name != in.Name {
		return apiv1.Instance{}, errorf(CodeForbidden,
			"this machine is the virtual machine %q of a libvirt host; enrol it with a token bound to that name (fleetpass agents token create --name %q)",
			in.Name, in.Name)
	}
	if in.Guest.Driver == AgentGuestDriver {
		return apiv1.Instance{}, errorf(CodeInstanceExists, "the virtual machine %s has an enrolled agent already", in.Name)
	}
	return in, nil
}

// AuthenticateAgent checks an agent's credentials and returns its record.
// Unknown agents and wrong secrets give the same answer.
func (s *Service) AuthenticateAgent(ctx context.Context, agentID string, secret []byte) (store.Agent, error) {
	unauth := errorf(CodeUnauthenticated, "unknown agent or wrong secret")
	a, err := s.store.GetAgent(ctx, s.store.DB, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, unauth
	}
	if err != nil {
		return store.Agent{}, storeFailed(err)
	}
	if subtle.ConstantTimeCompare(hashSecret(secret), a.SecretHash) != 1 {
		return store.Agent{}, unauth
	}
	// Deleting its instance revokes the agent.
	if _, err := s.store.GetInstance(ctx, s.store.DB, a.InstanceID); errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, unauth
	} else if err != nil {
		return store.Agent{}, storeFailed(err)
	}
	return a, nil
}
