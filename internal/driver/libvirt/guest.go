package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/qga"
)

// agentGrace is how much longer than the agent's own timeout we wait for
// libvirtd's answer: libvirtd first synchronises with the agent (up to 5 s
// in libvirt 9) before it sends the command.
const agentGrace = 10 * time.Second

// agent is a qga.Doer over libvirt's guest agent passthrough
// (virDomainQemuAgentCommand), so that the qga package's encoding and
// decoding serve here too. libvirtd synchronises with the agent itself.
type agent struct {
	o       op
	timeout time.Duration
}

// Do implements qga.Doer. Errors of libvirt are classified (guest not
// alive, no channel, transient); an error answer of the agent comes back as
// a *qga.Error.
func (a agent) Do(ctx context.Context, command []byte, result any) error {
	cmd := string(bytes.TrimSpace(command))
	secs := int32(min(math.Ceil(a.timeout.Seconds()), math.MaxInt32))
	out, err := await(ctx, a.timeout+agentGrace, func() (lv.OptString, error) {
		return a.o.l.QEMUDomainAgentCommand(a.o.dom, cmd, max(secs, 1), 0)
	})
	if err != nil {
		return classifyAgent("via libvirt", err)
	}
	if len(out) == 0 {
		return errors.New("guest agent: empty answer")
	}
	return qga.DecodeAnswer([]byte(out[0]), result)
}

// pingAgent runs guest-ping, waiting up to timeout for the agent.
func pingAgent(ctx context.Context, o op, timeout time.Duration) error {
	return qga.Exec(ctx, agent{o: o, timeout: timeout}, "guest-ping", nil, nil)
}

// Ping implements driver.Guest. A domain that is not running, or whose
// agent does not answer, gives an error wrapping driver.ErrGuestNotAlive; a
// domain without an agent channel one wrapping driver.ErrNoGuestChannel.
func (d *Driver) Ping(ctx context.Context, ref driver.Ref) error {
	o, err := d.domain(ctx, ref, "ping guest")
	if err != nil {
		return err
	}
	if err := pingAgent(ctx, o, d.pingTimeout); err != nil {
		return fmt.Errorf("%s: %w", o.what, err)
	}
	return nil
}

// SetPassword implements driver.Guest with virDomainSetUserPassword, which
// hands the password to the guest agent's guest-set-user-password. A Linux
// guest (ref.OSType) is handed a crypt(3) hash of it instead
// (VIR_DOMAIN_PASSWORD_ENCRYPTED, see qga.GuestSecret), so that the
// password crosses neither libvirtd, QEMU nor the channel.
func (d *Driver) SetPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	if err := qga.CheckUser(user); err != nil {
		return fmt.Errorf("libvirt: set password: %w", err)
	}
	if len(password) == 0 {
		return errors.New("libvirt: set password: empty password")
	}
	o, err := d.domain(ctx, ref, fmt.Sprintf("set password of user %q", user))
	if err != nil {
		return err
	}
	secret, crypted, err := qga.GuestSecret(ref.OSType, password)
	if err != nil {
		return fmt.Errorf("%s: %w", o.what, err)
	}
	defer clear(secret)
	var flags lv.DomainSetUserPasswordFlags
	if crypted {
		flags = lv.DomainPasswordEncrypted
	}
	_, err = await(ctx, d.passwordTimeout, func() (struct{}, error) {
		// go-libvirt takes the secret as a string, which cannot be
		// wiped, and its XDR encoder copies it again: the conversion is
		// unavoidable, so it happens here, as late as possible, and the
		// string is referenced nowhere else.
		return struct{}{}, o.l.DomainSetUserPassword(o.dom, lv.OptString{user}, lv.OptString{string(secret)}, flags)
	})
	if err == nil {
		return nil
	}
	err = classifyAgent(o.what, err)
	if !isAgentRefusal(err) {
		return scrub(err, password, secret)
	}
	// The agent ran chpasswd (or NetUserSetInfo) and it failed. qemu-ga up
	// to 9.0 says only "child process has failed to set user password",
	// whatever the reason, so unless the message says, ask the guest
	// whether the user exists.
	if qga.UserMissing(err.Error()) || d.probeUserMissing(ctx, o, user) {
		err = fmt.Errorf("%w: %w", driver.ErrUserNotFound, err)
	}
	return scrub(err, password, secret)
}

// isAgentRefusal reports whether err (classified) is the agent answering
// that the command failed, rather than the agent, the domain or the
// connection being unavailable.
func isAgentRefusal(err error) bool {
	if driver.IsTransient(err) ||
		errors.Is(err, driver.ErrGuestNotAlive) ||
		errors.Is(err, driver.ErrNoGuestChannel) ||
		errors.Is(err, driver.ErrMachineNotFound) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	_, ok := libvirtCode(err)
	return ok
}

// probeTimeout bounds the look-up of a user after a failed
// guest-set-user-password, so that a slow name service in the guest cannot
// turn a clear failure into a timeout.
const probeTimeout = 10 * time.Second

// probeUserMissing asks the guest whether user exists, through libvirt's
// agent passthrough (see qga.ProbeUserMissing).
func (d *Driver) probeUserMissing(ctx context.Context, o op, user string) bool {
	return qga.ProbeUserMissing(ctx, agent{o: o, timeout: probeTimeout}, user)
}

// scrub withholds err when it shows the password or the hash sent for it
// (see driver.Scrub).
func scrub(err error, secrets ...[]byte) error {
	for _, s := range secrets {
		err = driver.Scrub(err, s, "libvirt: setting the password failed (the message is withheld: it contained the password)")
	}
	return err
}

// Preflight implements driver.Preflighter: a domain whose XML has no guest
// agent channel gives an error wrapping driver.ErrNoGuestChannel, since no
// password can ever reach it.
func (d *Driver) Preflight(ctx context.Context, ref driver.Ref) error {
	o, err := d.domain(ctx, ref, "preflight")
	if err != nil {
		return err
	}
	x, err := await(ctx, d.cfg.CallTimeout, func() (string, error) {
		return o.l.DomainGetXMLDesc(o.dom, 0)
	})
	if err != nil {
		return classify(o.what+": read domain XML", err)
	}
	info, err := parseDomainXML([]byte(x))
	if err != nil {
		return fmt.Errorf("%s: %w", o.what, err)
	}
	if !info.AgentChannel {
		return fmt.Errorf("%s: the domain has no %s channel: %w", o.what, agentChannelName, driver.ErrNoGuestChannel)
	}
	return nil
}
