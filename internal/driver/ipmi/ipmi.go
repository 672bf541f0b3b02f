// Package ipmi is the power driver of bare-metal servers with an IPMI 2.0
// BMC: RMCP+ ("lanplus") sessions through github.com/bougou/go-ipmi, with
// cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) unless the
// server's registration names another, and never suite 0, which lets a
// known user in with any password.
//
// A ref's Address is the BMC's host:port; its credentials come from a
// Credentials lookup by instance id, so they are read (sealed in the
// database) when needed and never travel in a ref, a log line or an error.
//
// Retries. IPMI runs over UDP, and a BMC answers a retransmitted request by
// running it again. Reads and the commands whose repetition changes nothing
// (power on, power off, soft off) are retransmitted after a lost packet;
// power cycle and hard reset are sent exactly once, and a lost answer is
// reported as an unknown outcome, never retried, because a second cycle
// would cut the power of a server that is booting.
package ipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// DriverName is the name instances give this driver in their power link.
const DriverName = "ipmi"

// DefaultCipherSuite is the suite used when a BMC's registration names
// none: the strongest one every IPMI 2.0 BMC has. Suite 17 (SHA-256) is
// better where the BMC offers it.
const DefaultCipherSuite = 3

// DefaultPort is IPMI's RMCP port.
const DefaultPort = 623

// BMC is how to reach and log in to one server's BMC.
type BMC struct {
	// Address is host:port.
	Address  string
	User     string
	Password []byte
	// CipherSuite is the RMCP+ cipher suite id. 0 is refused, like every
	// suite ValidateCipherSuite refuses: there is no implicit default here,
	// so a zero value never means a weak suite.
	CipherSuite int
}

// Credentials finds the BMC of an instance. It returns an error wrapping
// driver.ErrMachineNotFound for an instance it does not know. The driver
// does not keep the password it returns beyond the session it opens.
type Credentials interface {
	BMC(ctx context.Context, ref driver.Ref) (BMC, error)
}

// CredentialsFunc adapts a function to Credentials.
type CredentialsFunc func(ctx context.Context, ref driver.Ref) (BMC, error)

// BMC calls f.
func (f CredentialsFunc) BMC(ctx context.Context, ref driver.Ref) (BMC, error) { return f(ctx, ref) }

// Config tunes the driver. Zero fields take the defaults.
type Config struct {
	// Timeout bounds the wait for one answer before a retransmission.
	// Default 1s, ipmitool's.
	Timeout time.Duration
	// Retries is how many times a request whose repetition is harmless is
	// sent again after an unanswered one. Default 2.
	Retries int
	// IdleClose closes a BMC's session after this long without use, so a
	// fleet does not hold the few sessions a BMC has. Default 20s, below
	// the 60s inactivity timeout of most BMCs.
	IdleClose time.Duration
	// SoftOffRepeat is how long after a soft off a second one for the same
	// server is sent at all. The engine asks again while a server stays on
	// (a request may have been lost); pressing the power button every poll
	// would be a storm of ACPI events for an OS that is shutting down.
	// Default 10s.
	SoftOffRepeat time.Duration
	Log           *slog.Logger
}

// Driver is the IPMI power driver. It keeps one session per instance,
// used by one call at a time, and reopens it when it fails.
type Driver struct {
	creds Credentials
	cfg   Config

	mu       sync.Mutex
	sessions map[string]*session
	softOffs map[string]time.Time // instance id → last soft off sent
}

// New makes a driver that reads BMC credentials from creds.
func New(creds Credentials, cfg Config) *Driver {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.IdleClose <= 0 {
		cfg.IdleClose = 20 * time.Second
	}
	if cfg.SoftOffRepeat <= 0 {
		cfg.SoftOffRepeat = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Driver{creds: creds, cfg: cfg, sessions: make(map[string]*session), softOffs: make(map[string]time.Time)}
}

// ValidateCipherSuite says whether id may be used, and why not.
func ValidateCipherSuite(id int) error {
	switch {
	case id == 0:
		return errors.New("cipher suite 0 authenticates nobody (any password is accepted); use 3, or 17 where the BMC has it")
	case id < 0 || id > 19:
		return fmt.Errorf("cipher suite %d does not exist (IPMI 2.0 defines 0-19)", id)
	case id == 1 || id == 2 || id == 6 || id == 7 || id == 11 || id == 15 || id == 16:
		// No confidentiality: the session's commands travel in clear, and
		// suites 1 and 6 have no integrity check either.
		return fmt.Errorf("cipher suite %d does not encrypt the session; use 3, or 17 where the BMC has it", id)
	}
	return nil
}

// ParseAddress checks a BMC address (host, or host:port) and returns it as
// host:port with DefaultPort when none is given.
func ParseAddress(s string) (string, error) {
	host, port := s, strconv.Itoa(DefaultPort)
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" || len(host) > 253 {
		return "", errors.New("a BMC address is HOST or HOST:PORT")
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", fmt.Errorf("BMC host %q: not a host name or IP address", host)
	}
	for _, r := range host {
		if !(r == '.' || r == '-' || r == ':' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "", fmt.Errorf("BMC host %q: not a host name or IP address", host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("BMC port %q: want 1-65535", port)
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// command is one chassis request and whether it may be sent twice.
type command struct {
	name       string
	control    chassis.ChassisControl
	idempotent bool
}

var (
	cmdOn    = command{"power on", chassis.ChassisControlPowerUp, true}
	cmdOff   = command{"power off", chassis.ChassisControlPowerDown, true}
	cmdSoft  = command{"soft off", chassis.ChassisControlSoftShutdown, true}
	cmdCycle = command{"power cycle", chassis.ChassisControlPowerCycle, false}
	cmdReset = command{"hard reset", chassis.ChassisControlHardReset, false}
)

// State reads the chassis power status: on is running, off is stopped (a
// BMC knows nothing in between).
func (d *Driver) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	on, err := d.power(ctx, ref)
	if err != nil {
		return driver.PowerUnknown, err
	}
	if on {
		return driver.PowerRunning, nil
	}
	return driver.PowerStopped, nil
}

// Start powers the server on; a server that is on is left alone.
func (d *Driver) Start(ctx context.Context, ref driver.Ref) error {
	return d.unless(ctx, ref, true, cmdOn)
}

// Shutdown presses the power button (ACPI soft off); the operating system
// may ignore it. A server that is off is left alone, and so is one that
// was sent a soft off less than Config.SoftOffRepeat ago.
func (d *Driver) Shutdown(ctx context.Context, ref driver.Ref) error {
	d.mu.Lock()
	last, ok := d.softOffs[ref.InstanceID]
	d.mu.Unlock()
	if ok && time.Since(last) < d.cfg.SoftOffRepeat {
		_, err := d.power(ctx, ref)
		return err
	}
	err := d.unless(ctx, ref, false, cmdSoft)
	if err == nil {
		d.mu.Lock()
		d.softOffs[ref.InstanceID] = time.Now()
		for id, t := range d.softOffs {
			if time.Since(t) > d.cfg.SoftOffRepeat {
				delete(d.softOffs, id)
			}
		}
		d.mu.Unlock()
	}
	return err
}

// Stop cuts the power (chassis power down). A server that is off is left
// alone.
func (d *Driver) Stop(ctx context.Context, ref driver.Ref) error {
	return d.unless(ctx, ref, false, cmdOff)
}

// Cycle cuts the power and restores it after the BMC's interval (ipmi_sim:
// one second). It is sent once: when its answer is lost, the error says the
// outcome is unknown and nothing is retried.
func (d *Driver) Cycle(ctx context.Context, ref driver.Ref) error {
	return d.do(ctx, ref, cmdCycle)
}

// Reset is a hard reset, sent once like Cycle.
func (d *Driver) Reset(ctx context.Context, ref driver.Ref) error {
	return d.do(ctx, ref, cmdReset)
}

// unless sends c unless the chassis is already on (wantOn) or off.
func (d *Driver) unless(ctx context.Context, ref driver.Ref, wantOn bool, c command) error {
	on, err := d.power(ctx, ref)
	if err != nil {
		return err
	}
	if on == wantOn {
		return nil
	}
	return d.do(ctx, ref, c)
}

func (d *Driver) power(ctx context.Context, ref driver.Ref) (bool, error) {
	var on bool
	err := d.withSession(ctx, ref, true, "read the power status", func(c *client.Client) error {
		st, err := c.GetChassisStatus(ctx)
		if err == nil {
			on = st.PowerIsOn
		}
		return err
	})
	if err == nil && !on {
		// The soft off did its work (or the server went down otherwise):
		// the next one, after a boot, is a new press.
		d.mu.Lock()
		delete(d.softOffs, ref.InstanceID)
		d.mu.Unlock()
	}
	return on, err
}

func (d *Driver) do(ctx context.Context, ref driver.Ref, c command) error {
	return d.withSession(ctx, ref, c.idempotent, c.name, func(cl *client.Client) error {
		_, err := cl.ChassisControl(ctx, c.control)
		return err
	})
}

// session is one open RMCP+ session to a BMC.
type session struct {
	mu     sync.Mutex // one request at a time: IPMI sessions are sequential
	key    string     // the BMC settings it was opened with
	c      *client.Client
	timer  *time.Timer
	closed bool
}

func sessionKey(b BMC) string {
	// The password is part of what makes a session valid, but must not sit
	// in a map key in clear: a rotation is noticed through its hash.
	return fmt.Sprintf("%s\x00%s\x00%d\x00%x", b.Address, b.User, b.CipherSuite, hashPassword(b.Password))
}

// withSession runs f on the instance's session, opening one when needed.
// A failed exchange closes the session; when repeating f is harmless it
// is tried once more on a fresh session (the BMC may have dropped the old
// one: a restart, an inactivity timeout).
func (d *Driver) withSession(ctx context.Context, ref driver.Ref, idempotent bool, what string, f func(*client.Client) error) error {
	bmc, err := d.creds.BMC(ctx, ref)
	if err != nil {
		return err
	}
	defer clear(bmc.Password)
	if err := ValidateCipherSuite(bmc.CipherSuite); err != nil {
		return fmt.Errorf("BMC %s: %w: %w", bmc.Address, ErrCipherSuite, err)
	}
	for attempt := 0; ; attempt++ {
		s, fresh, err := d.session(ctx, ref.InstanceID, bmc)
		if err != nil {
			return err
		}
		err = d.exchange(s, idempotent, f)
		s.mu.Unlock()
		if err == nil {
			d.touch(ref.InstanceID, s)
			return nil
		}
		d.drop(ref.InstanceID, s)
		d.cfg.Log.Debug("ipmi: exchange failed; session dropped", "instance_id", ref.InstanceID, "bmc", bmc.Address, "what", what,
			"err", oneLine(err.Error()))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r, ok := types.IsResponseError(err); ok {
			// The BMC answered: the command was received and refused.
			ferr := fmt.Errorf("BMC %s: %s: %w: %s", bmc.Address, what, ErrCommandFailed, oneLine(r.Error()))
			if r.CompletionCode() == types.CodeNodeBusy || r.CompletionCode() == types.CodeProcessTimeout {
				return driver.Transient(ferr)
			}
			return ferr
		}
		if !idempotent {
			return fmt.Errorf("BMC %s: %s: %w: no answer (%s); not sent again, since a second one would act twice",
				bmc.Address, what, ErrOutcomeUnknown, oneLine(err.Error()))
		}
		if attempt == 0 && !fresh {
			continue
		}
		return driver.Transient(fmt.Errorf("BMC %s: %s: %w: %s", bmc.Address, what, ErrUnreachable, oneLine(err.Error())))
	}
}

// exchange runs f with go-ipmi's retransmissions on for idempotent
// requests and off for the others.
func (d *Driver) exchange(s *session, idempotent bool, f func(*client.Client) error) error {
	if idempotent {
		s.c.WithRetry(d.cfg.Retries)
	} else {
		s.c.WithRetry(0)
	}
	return f(s.c)
}

// session returns the instance's session, locked, opening it if needed.
// fresh tells whether it was opened by this call.
func (d *Driver) session(ctx context.Context, id string, bmc BMC) (*session, bool, error) {
	key := sessionKey(bmc)
	d.mu.Lock()
	s := d.sessions[id]
	if s != nil && s.key != key {
		// Credentials or address changed: the old session goes.
		delete(d.sessions, id)
		go s.close()
		s = nil
	}
	if s == nil {
		s = &session{key: key}
		d.sessions[id] = s
	}
	d.mu.Unlock()
	s.mu.Lock()
	if s.c != nil && !s.closed {
		return s, false, nil
	}
	c, err := d.open(ctx, bmc)
	if err != nil {
		s.mu.Unlock()
		d.drop(id, s)
		d.cfg.Log.Debug("ipmi: no session", "instance_id", id, "bmc", bmc.Address, "err", err)
		return nil, false, err
	}
	s.c, s.closed = c, false
	d.cfg.Log.Debug("ipmi: session opened", "instance_id", id, "bmc", bmc.Address, "user", bmc.User, "cipher_suite", bmc.CipherSuite)
	return s, true, nil
}

// open opens an RMCP+ session at operator privilege: enough for chassis
// status and control, and what a BMC account for fleetpass should have.
func (d *Driver) open(ctx context.Context, bmc BMC) (*client.Client, error) {
	host, port, err := net.SplitHostPort(bmc.Address)
	if err != nil {
		return nil, fmt.Errorf("BMC %q: %w", bmc.Address, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("BMC %q: bad port", bmc.Address)
	}
	c, err := client.NewClient(host, p, bmc.User, string(bmc.Password))
	if err != nil {
		// go-ipmi's message names the user: keep it, it is no secret.
		return nil, fmt.Errorf("BMC %s: %w", bmc.Address, err)
	}
	c.WithCipherSuiteID(types.CipherSuiteID(bmc.CipherSuite))
	c.WithTimeout(d.cfg.Timeout).WithRetry(d.cfg.Retries)
	c.WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	if err := c.Connect(ctx); err != nil {
		_ = c.Close(context.WithoutCancel(ctx))
		return nil, classifyConnect(bmc, err)
	}
	return c, nil
}

// touch rearms the session's idle timer.
func (d *Driver) touch(id string, s *session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sessions[id] != s {
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(d.cfg.IdleClose, func() { d.expire(id, s) })
	} else {
		s.timer.Reset(d.cfg.IdleClose)
	}
}

func (d *Driver) expire(id string, s *session) {
	if !s.mu.TryLock() {
		return // in use: the call rearms the timer
	}
	s.mu.Unlock()
	d.drop(id, s)
}

// drop forgets a session and closes it in the background.
func (d *Driver) drop(id string, s *session) {
	d.mu.Lock()
	if d.sessions[id] == s {
		delete(d.sessions, id)
	}
	d.mu.Unlock()
	go s.close()
}

func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.c == nil || s.closed {
		return
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.c.WithRetry(0)
	_ = s.c.Close(ctx)
}

// Close closes every session (at server shutdown).
func (d *Driver) Close() {
	d.mu.Lock()
	list := make([]*session, 0, len(d.sessions))
	for id, s := range d.sessions {
		list = append(list, s)
		delete(d.sessions, id)
	}
	d.mu.Unlock()
	for _, s := range list {
		s.close()
	}
}

// Forget closes an instance's session (its BMC settings changed, or the
// instance was removed).
func (d *Driver) Forget(instanceID string) {
	d.mu.Lock()
	s := d.sessions[instanceID]
	delete(d.sessions, instanceID)
	d.mu.Unlock()
	if s != nil {
		go s.close()
	}
}

// Probe is what a check of a BMC found.
type Probe struct {
	// On is the chassis power status.
	On bool
	// AcceptsSuite0 is set when the BMC agreed to open a session with
	// cipher suite 0, in which RAKP checks no password: anyone who knows a
	// user name can control the server. fleetpass never uses suite 0; the
	// operator should disable it on the BMC.
	AcceptsSuite0 bool
}

// Probe checks a BMC before it is trusted with a server: a session with its
// credentials and cipher suite, the power status, and whether it accepts
// cipher suite 0 too (asked with a password that is not the real one, so
// nothing of it is offered to a session without integrity protection).
func (d *Driver) Probe(ctx context.Context, bmc BMC) (Probe, error) {
	if err := ValidateCipherSuite(bmc.CipherSuite); err != nil {
		return Probe{}, fmt.Errorf("BMC %s: %w: %w", bmc.Address, ErrCipherSuite, err)
	}
	c, err := d.open(ctx, bmc)
	if err != nil {
		return Probe{}, err
	}
	var p Probe
	c.WithRetry(d.cfg.Retries)
	st, err := c.GetChassisStatus(ctx)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	c.WithRetry(0)
	_ = c.Close(cctx)
	cancel()
	if err != nil {
		return Probe{}, driver.Transient(fmt.Errorf("BMC %s: read the power status: %w: %s", bmc.Address, ErrUnreachable, oneLine(err.Error())))
	}
	p.On = st.PowerIsOn
	p.AcceptsSuite0 = d.acceptsSuite0(ctx, bmc)
	return p, nil
}

// acceptsSuite0 asks the BMC for a suite 0 session. A BMC that refuses
// the suite refuses the Open Session request; one that accepts it goes on
// to RAKP, whatever the password.
func (d *Driver) acceptsSuite0(ctx context.Context, bmc BMC) bool {
	host, port, _ := net.SplitHostPort(bmc.Address)
	p, _ := strconv.Atoi(port)
	c, err := client.NewClient(host, p, bmc.User, "fleetpass-suite0-probe")
	if err != nil {
		return false
	}
	c.WithCipherSuiteID(types.CipherSuiteID0)
	c.WithTimeout(d.cfg.Timeout).WithRetry(1)
	c.WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	err = c.Connect(ctx)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	c.WithRetry(0)
	_ = c.Close(cctx)
	if err == nil {
		return true
	}
	msg := err.Error()
	return !strings.Contains(msg, "Open Session failed") && !strings.Contains(msg, "Authentication Capabilities failed")
}
