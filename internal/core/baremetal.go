package core

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/driver/ipmi"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// IPMIDriver is the name of the IPMI power driver of bare-metal servers.
const IPMIDriver = ipmi.DriverName

// Error codes of bare-metal registration: the BMC was asked, and said no.
const (
	CodeBMCUnreachable = "BMC_UNREACHABLE"
	CodeBMCAuthFailed  = "BMC_AUTH_FAILED"
	CodeBMCCipherSuite = "BMC_CIPHER_SUITE_REFUSED"
)

// IPMI limits (IPMI 2.0 §13.28: user names of 16 bytes, passwords of 20).
const (
	maxBMCUser     = 16
	maxBMCPassword = 20
)

// BMCLogin is what the checker needs to reach a BMC.
type BMCLogin struct {
	Address     string
	User        string
	Password    []byte
	CipherSuite int
}

// BMCCheck is what a check of a BMC found.
type BMCCheck struct {
	On            bool
	AcceptsSuite0 bool
}

// BMCChecker checks a BMC's address and credentials before fleetpass
// trusts them, so a typo is refused at registration rather than found at
// the first reset. The IPMI driver implements it (a Redfish driver would
// too, under its own name).
type BMCChecker interface {
	CheckBMC(ctx context.Context, powerDriver string, b BMCLogin) (BMCCheck, error)
}

// SetBMCChecker installs the BMC checker; without one, bare-metal servers
// with a BMC cannot be registered.
func (s *Service) SetBMCChecker(c BMCChecker) { s.bmcs = c }

// bareMetal is a validated bare-metal registration.
type bareMetal struct {
	login BMCLogin
	check BMCCheck
}

// prepareBareMetal validates a registration with a BMC power link and asks
// the BMC. Only an admin may do it: a BMC is power over a physical server,
// and its credentials are the operator's.
func (s *Service) prepareBareMetal(ctx context.Context, p Principal, req *apiv1.InstanceCreate) (*bareMetal, error) {
	if !p.Admin {
		return nil, errorf(CodeLinkForbidden, "only the operator (an admin) may register an instance with, or change, a power or guest link; "+
			"a server with a BMC is registered by the operator")
	}
	if req.Power.Driver != IPMIDriver {
		return nil, fieldErrorf(CodeInvalidArgument, "bmc", "only for a power link of driver %q", IPMIDriver)
	}
	if req.BMC == nil {
		return nil, fieldErrorf(CodeInvalidArgument, "bmc", "the BMC's user and password are required with power driver %q", IPMIDriver)
	}
	if _, ok := s.drivers.Power[IPMIDriver]; !ok || s.bmcs == nil {
		return nil, fieldErrorf(CodeUnknownDriver, "power.driver", "%q is not a power driver of this server", IPMIDriver)
	}
	if _, ok := s.drivers.Guest[AgentGuestDriver]; !ok {
		return nil, fieldErrorf(CodeUnknownDriver, "guest.driver", "this server has no agent channel (%q)", AgentGuestDriver)
	}
	if req.Guest.Driver == "" {
		// The server's fleetpass agent joins the instance when it enrols.
		req.Guest = apiv1.DriverLink{Driver: AgentGuestDriver}
	}
	if req.Guest.Driver != AgentGuestDriver {
		return nil, fieldErrorf(CodeInvalidArgument, "guest.driver", "a bare-metal server is reached through the fleetpass agent (%q)", AgentGuestDriver)
	}
	if req.Guest.Address != "" {
		return nil, fieldErrorf(CodeInvalidArgument, "guest.address", "leave it empty; the server's agent joins the instance when it enrols with a token bound to its name")
	}
	addr, err := ipmi.ParseAddress(strings.TrimSpace(req.Power.Address))
	if err != nil {
		return nil, fieldErrorf(CodeInvalidArgument, "power.address", "%v", err)
	}
	req.Power.Address, req.Power.Host = addr, ""
	suite := ipmi.DefaultCipherSuite
	if req.BMC.CipherSuite != nil {
		suite = *req.BMC.CipherSuite
	}
	login, err := bmcLogin(addr, req.BMC.User, req.BMC.Password, suite)
	if err != nil {
		return nil, err
	}
	check, err := s.checkBMC(ctx, login)
	if err != nil {
		sealer.Wipe(login.Password)
		return nil, err
	}
	return &bareMetal{login: login, check: check}, nil
}

// bmcLogin validates a BMC's user, password and cipher suite.
func bmcLogin(addr, user, password string, suite int) (BMCLogin, error) {
	if user == "" || len(user) > maxBMCUser || strings.ContainsFunc(user, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return BMCLogin{}, fieldErrorf(CodeInvalidArgument, "bmc.user", "1-%d printable ASCII characters without spaces", maxBMCUser)
	}
	if password == "" || len(password) > maxBMCPassword {
		return BMCLogin{}, fieldErrorf(CodeInvalidArgument, "bmc.password", "1-%d bytes (IPMI 2.0's limit)", maxBMCPassword)
	}
	if err := ipmi.ValidateCipherSuite(suite); err != nil {
		return BMCLogin{}, fieldErrorf(CodeInvalidArgument, "bmc.cipherSuite", "%v", err)
	}
	return BMCLogin{Address: addr, User: user, Password: []byte(password), CipherSuite: suite}, nil
}

// checkBMC asks the BMC, mapping its faults to codes an operator can act
// on. The messages name the BMC and the user, never the password.
func (s *Service) checkBMC(ctx context.Context, login BMCLogin) (BMCCheck, error) {
	c, err := s.bmcs.CheckBMC(ctx, IPMIDriver, login)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, driver.ErrControllerAuth):
		return c, &Error{Code: CodeBMCAuthFailed, Message: fmt.Sprintf("the BMC at %s refused user %q or its password", login.Address, login.User)}
	case errors.Is(err, driver.ErrControllerCipher):
		return c, &Error{Code: CodeBMCCipherSuite, Message: fmt.Sprintf("the BMC at %s does not accept cipher suite %d; try 17 or 3, whichever it offers",
			login.Address, login.CipherSuite)}
	case errors.Is(err, context.Canceled):
		return c, err
	}
	return c, &Error{Code: CodeBMCUnreachable, Message: fmt.Sprintf("the BMC at %s does not answer IPMI over LAN (UDP port %s); check the address, the network and that IPMI over LAN is enabled",
		login.Address, portOf(login.Address))}
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// createBareMetal stores a bare-metal instance's BMC in the transaction
// that creates the instance. The password is sealed with the instance id
// as associated data.
func (s *Service) createBareMetal(ctx context.Context, tx *sql.Tx, in *apiv1.Instance, bm *bareMetal) error {
	sealed, err := s.sealer.Seal(bm.login.Password, bmcAAD(in.ID))
	if err != nil {
		return err
	}
	now := s.store.Now()
	return s.store.PutBMC(ctx, tx, store.BMC{InstanceID: in.ID, User: bm.login.User, PasswordSealed: sealed,
		CipherSuite: bm.login.CipherSuite, AcceptsSuite0: bm.check.AcceptsSuite0, CheckedAt: &now})
}

// powerLinkFree refuses a second instance on a BMC, of any tenant: two
// records powering one machine would each believe they own it.
func (s *Service) powerLinkFree(ctx context.Context, tx *sql.Tx, in apiv1.Instance) error {
	taken, err := s.store.PowerLinkTaken(ctx, tx, in.Power.Driver, in.Power.Address, in.ID)
	if err != nil {
		return err
	}
	if taken {
		return &Error{Code: CodeLinkInUse, Message: fmt.Sprintf("a server with the BMC at %s is registered already: one machine has one record", in.Power.Address),
			Details: map[string]any{"link": "power"}}
	}
	return nil
}

func bmcAAD(instanceID string) []byte { return []byte("bmc/" + instanceID) }

// BMCOf opens an instance's BMC credentials for its power driver. The
// caller wipes the password. An instance without a BMC gives
// driver.ErrMachineNotFound.
func (s *Service) BMCOf(ctx context.Context, instanceID string) (BMCLogin, error) {
	in, err := s.store.GetInstance(ctx, s.store.DB, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return BMCLogin{}, fmt.Errorf("instance %s: %w", instanceID, driver.ErrMachineNotFound)
	}
	if err != nil {
		return BMCLogin{}, driver.Transient(err)
	}
	b, err := s.store.GetBMC(ctx, s.store.DB, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return BMCLogin{}, fmt.Errorf("instance %s has no BMC: %w", instanceID, driver.ErrMachineNotFound)
	}
	if err != nil {
		return BMCLogin{}, driver.Transient(err)
	}
	pw, err := s.sealer.Open(b.PasswordSealed, bmcAAD(instanceID))
	if err != nil {
		return BMCLogin{}, fmt.Errorf("instance %s: the BMC password cannot be opened with this server's key", instanceID)
	}
	return BMCLogin{Address: in.Power.Address, User: b.User, Password: pw, CipherSuite: b.CipherSuite}, nil
}

// SetBMC changes a bare-metal server's BMC settings (admin only): a
// rotated password, another user, cipher suite or address. The new
// settings are checked against the BMC before they are stored, so a
// rotation that would lock fleetpass out is refused and the old settings
// stay.
func (s *Service) SetBMC(ctx context.Context, p Principal, id string, req apiv1.BMCUpdate) (apiv1.Instance, error) {
	if !p.Admin {
		return apiv1.Instance{}, errorf(CodeLinkForbidden, "only the operator (an admin) may change a server's power link or BMC settings")
	}
	in, err := s.GetInstance(ctx, p, id)
	if err != nil {
		return apiv1.Instance{}, err
	}
	if in.Power.Driver != IPMIDriver {
		return apiv1.Instance{}, errorf(CodeInvalidArgument, "instance %s has no BMC (its power driver is %q)", id, in.Power.Driver)
	}
	if s.bmcs == nil {
		return apiv1.Instance{}, errorf(CodeUnknownDriver, "this server has no BMC driver")
	}
	cur, err := s.BMCOf(ctx, id)
	if err != nil {
		return apiv1.Instance{}, internalErr(err)
	}
	defer sealer.Wipe(cur.Password)
	addr := cur.Address
	if req.Address != "" {
		if addr, err = ipmi.ParseAddress(strings.TrimSpace(req.Address)); err != nil {
			return apiv1.Instance{}, fieldErrorf(CodeInvalidArgument, "address", "%v", err)
		}
	}
	user, password, suite := cur.User, string(cur.Password), cur.CipherSuite
	if req.User != "" && req.User != cur.User {
		if req.Password == "" {
			return apiv1.Instance{}, fieldErrorf(CodeInvalidArgument, "password", "a new user needs its password")
		}
		user = req.User
	}
	if req.Password != "" {
		password = req.Password
	}
	if req.CipherSuite != nil {
		suite = *req.CipherSuite
	}
	login, err := bmcLogin(addr, user, password, suite)
	if err != nil {
		return apiv1.Instance{}, err
	}
	defer sealer.Wipe(login.Password)
	check, err := s.checkBMC(ctx, login)
	if err != nil {
		return apiv1.Instance{}, err
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if addr != in.Power.Address {
			moved := in
			moved.Power.Address = addr
			if err := s.powerLinkFree(ctx, tx, moved); err != nil {
				return err
			}
			if err := s.store.SetInstancePowerAddress(ctx, tx, id, addr); err != nil {
				return err
			}
		}
		sealed, err := s.sealer.Seal(login.Password, bmcAAD(id))
		if err != nil {
			return err
		}
		now := s.store.Now()
		if err := s.store.PutBMC(ctx, tx, store.BMC{InstanceID: id, User: login.User, PasswordSealed: sealed,
			CipherSuite: login.CipherSuite, AcceptsSuite0: check.AcceptsSuite0, CheckedAt: &now}); err != nil {
			return err
		}
		if err := events.EmitInstance(ctx, tx, s.store, id); err != nil {
			return err
		}
		return s.audit(ctx, tx, p, in.Tenant, "instance.set_bmc", id, "")
	})
	if err != nil {
		return apiv1.Instance{}, wrapStore(err)
	}
	s.bus.Poke()
	return s.GetInstance(ctx, p, id)
}

// SetBMCObserved records what the BMC watcher found of an idle bare-metal
// instance: its power state (empty: unchanged) and the BMC's fault (empty:
// it answered).
func (s *Service) SetBMCObserved(ctx context.Context, id, state, fault string) error {
	changed := false
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		c1, err := s.store.SetBMCCheck(ctx, tx, id, nil, fault)
		if err != nil {
			return err
		}
		c2 := false
		if state != "" {
			if c2, err = s.store.SetInstanceState(ctx, tx, id, state, true); err != nil {
				return err
			}
		}
		if changed = c1 || c2; changed {
			return events.EmitInstance(ctx, tx, s.store, id)
		}
		return nil
	})
	if changed {
		s.bus.Poke()
	}
	return err
}

// withBMCs fills the BMC status of the bare-metal instances in list, for
// the operator only: a BMC's address, user and faults are the operator's
// infrastructure, as host URIs and socket paths are.
func (s *Service) withBMCs(ctx context.Context, p Principal, list []apiv1.Instance) error {
	if !p.Admin {
		return nil
	}
	var ids []string
	for _, in := range list {
		if in.Power.Driver == IPMIDriver {
			ids = append(ids, in.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	bmcs, err := s.store.GetBMCs(ctx, s.store.DB, ids)
	if err != nil {
		return err
	}
	for i := range list {
		b, ok := bmcs[list[i].ID]
		if !ok {
			continue
		}
		list[i].BMC = &apiv1.BMCStatus{Address: list[i].Power.Address, User: b.User, CipherSuite: b.CipherSuite,
			AcceptsCipherSuite0: b.AcceptsSuite0, Error: b.LastError, CheckedAt: b.CheckedAt}
	}
	return nil
}

// bareMetalInstance finds the tenant's bare-metal server (a BMC power link)
// named name, for an agent enrolling with a token bound to that name. The
// token's name is the grant, as for a libvirt VM; a server whose agent
// enrolled already is not taken over.
func (s *Service) bareMetalInstance(ctx context.Context, tx *sql.Tx, tenant, name string) (apiv1.Instance, error) {
	if name == "" {
		return apiv1.Instance{}, store.ErrNotFound
	}
	in, err := s.store.FindInstanceByName(ctx, tx, tenant, IPMIDriver, name)
	if err != nil {
		return in, err
	}
	if in.Guest.Driver == AgentGuestDriver && in.Guest.Address != "" {
		return apiv1.Instance{}, errorf(CodeInstanceExists, "the bare-metal server %s has an enrolled agent already", in.Name)
	}
	return in, nil
}
