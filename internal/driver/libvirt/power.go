package libvirt

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	lv "github.com/digitalocean/go-libvirt"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// formatUUID returns u in canonical lowercase 8-4-4-4-12 form.
func formatUUID(u lv.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// parseUUID parses a UUID in 8-4-4-4-12 form, in either case.
func parseUUID(s string) (lv.UUID, error) {
	var u lv.UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, errors.New("not a UUID")
	}
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return u, errors.New("not a UUID")
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, errors.New("not a UUID")
	}
	return u, nil
}

// domainState is a domain's state as libvirt reports it, with its reason
// (whose meaning depends on the state).
type domainState struct {
	state  lv.DomainState
	reason int32
}

// mapState maps libvirt's domain states to the driver's power states.
//
//   - running and blocked (waiting for I/O) are running.
//   - paused is running too: the domain exists with its memory and CPUs,
//     Start cannot boot it, and taking it down needs Shutdown or Stop as
//     for a running one. The exceptions are the pauses libvirt itself makes
//     while starting a domain (reason starting up), which read starting,
//     and while shutting one down (reason shutting down), which read
//     stopping.
//   - shutdown (being shut down) is stopping.
//   - shutoff and crashed are stopped: the guest runs no code, and Start
//     boots it afresh (destroying a crashed domain kept for inspection
//     first).
//   - pmsuspended (ACPI S3/S4) is stopped as well: the guest runs no code
//     and its agent cannot answer, which is what the engine needs to know
//     about a stopped machine; Start wakes it up.
//   - nostate, and anything newer than this code, is unknown.
func mapState(state lv.DomainState, reason int32) driver.PowerState {
	switch state {
	case lv.DomainRunning, lv.DomainBlocked:
		return driver.PowerRunning
	case lv.DomainPaused:
		switch lv.DomainPausedReason(reason) {
		case lv.DomainPausedStartingUp:
			return driver.PowerStarting
		case lv.DomainPausedShuttingDown:
			return driver.PowerStopping
		}
		return driver.PowerRunning
	case lv.DomainShutdown:
		return driver.PowerStopping
	case lv.DomainShutoff, lv.DomainCrashed, lv.DomainPmsuspended:
		return driver.PowerStopped
	}
	return driver.PowerUnknown
}

// op is one operation on one domain, with what its errors need.
type op struct {
	l    *lv.Libvirt
	dom  lv.Domain
	what string // "libvirt: host h1: domain UUID: start", for errors
}

// domain resolves ref to a connected host's domain. Errors: an address that
// is not a UUID, an unknown host or domain wrap driver.ErrMachineNotFound;
// a host that is not connected gives a driver.TransientError.
func (d *Driver) domain(ctx context.Context, ref driver.Ref, what string) (op, error) {
	name := ref.Address
	if ref.InstanceID != "" {
		name = ref.InstanceID + " (" + ref.Address + ")"
	}
	uuid, err := parseUUID(ref.Address)
	if err != nil {
		return op{}, fmt.Errorf("libvirt: %s: %s: the address is not a domain UUID: %w", name, what, driver.ErrMachineNotFound)
	}
	h, l, err := d.host(ctx, ref.Host)
	if err != nil {
		return op{}, fmt.Errorf("%s: %w", what, err)
	}
	o := op{l: l, what: fmt.Sprintf("libvirt: host %s: domain %s: %s", h.id, name, what)}
	o.dom, err = await(ctx, d.cfg.CallTimeout, func() (lv.Domain, error) {
		return l.DomainLookupByUUID(uuid)
	})
	if err != nil {
		return op{}, classify(o.what, err)
	}
	return o, nil
}

func (d *Driver) rawState(ctx context.Context, l *lv.Libvirt, dom lv.Domain) (domainState, error) {
	return await(ctx, d.cfg.CallTimeout, func() (domainState, error) {
		st, reason, err := l.DomainGetState(dom, 0)
		return domainState{lv.DomainState(st), reason}, err
	})
}

// do runs one libvirt call that returns nothing but an error.
func (d *Driver) do(ctx context.Context, fn func() error) error {
	_, err := await(ctx, d.cfg.CallTimeout, func() (struct{}, error) {
		return struct{}{}, fn()
	})
	return err
}

// isCode reports whether err is a libvirt error with one of codes.
func isCode(err error, codes ...lv.ErrorNumber) bool {
	code, ok := libvirtCode(err)
	if !ok {
		return false
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// State implements driver.Power.
func (d *Driver) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	o, err := d.domain(ctx, ref, "read state")
	if err != nil {
		return driver.PowerUnknown, err
	}
	st, err := d.rawState(ctx, o.l, o.dom)
	if err != nil {
		return driver.PowerUnknown, classify(o.what, err)
	}
	return mapState(st.state, st.reason), nil
}

// Start implements driver.Power. A domain that is shutting down cannot be
// started until it is off: Start then fails with a transient error. A
// paused domain counts as running, so Start leaves it paused.
func (d *Driver) Start(ctx context.Context, ref driver.Ref) error {
	defer d.forgetAgentShutdown(ref)
	o, err := d.domain(ctx, ref, "start")
	if err != nil {
		return err
	}
	st, err := d.rawState(ctx, o.l, o.dom)
	if err != nil {
		return classify(o.what, err)
	}
	switch st.state {
	case lv.DomainRunning, lv.DomainBlocked, lv.DomainPaused:
		return nil
	case lv.DomainShutdown:
		return driver.Transientf("%s: the domain is still shutting down", o.what)
	case lv.DomainPmsuspended:
		err = d.do(ctx, func() error { return o.l.DomainPmWakeup(o.dom, 0) })
		return classify(o.what+": wake up", err)
	case lv.DomainCrashed:
		// A crashed domain kept for inspection still has its QEMU
		// process; it must go before the domain can boot.
		err = d.do(ctx, func() error { return o.l.DomainDestroyFlags(o.dom, lv.DomainDestroyDefault) })
		if err != nil && !isCode(err, lv.ErrOperationInvalid) {
			return classify(o.what+": destroy the crashed domain", err)
		}
	case lv.DomainShutoff:
	default:
		return driver.Transientf("%s: the domain's state is unknown (%d)", o.what, st.state)
	}
	err = d.do(ctx, func() error { return o.l.DomainCreate(o.dom) })
	if isCode(err, lv.ErrOperationInvalid) {
		// "domain is already running": another Start won the race.
		return nil
	}
	return classify(o.what, err)
}

// quickPing bounds the guest-ping Shutdown uses to choose between the guest
// agent and ACPI: a guest whose agent takes longer than that is better
// served by the power button.
const quickPing = 3 * time.Second

// Shutdown implements driver.Power. It asks the guest agent to shut the
// guest down when the agent answers a quick ping, and presses the ACPI
// power button otherwise (the agent works where ACPI is ignored, e.g. a
// guest without acpid; ACPI works where there is no agent). Hypervisors that
// know neither (libvirt's test driver) get a plain shutdown.
func (d *Driver) Shutdown(ctx context.Context, ref driver.Ref) error {
	o, err := d.domain(ctx, ref, "shut down")
	if err != nil {
		return err
	}
	st, err := d.rawState(ctx, o.l, o.dom)
	if err != nil {
		return classify(o.what, err)
	}
	switch mapState(st.state, st.reason) {
	case driver.PowerStopped, driver.PowerStopping:
		return nil
	case driver.PowerUnknown:
		return driver.Transientf("%s: the domain's state is unknown (%d)", o.what, st.state)
	}
	shutdown := func(mode lv.DomainShutdownFlagValues) error {
		return d.do(ctx, func() error { return o.l.DomainShutdownFlags(o.dom, mode) })
	}
	key := ref.Host + "/" + ref.Address
	switch d.agentShutdownState(key) {
	case agentShutdownRunning:
		// Asked already; libvirt has not answered yet.
		return nil
	case agentShutdownIdle:
		if pingAgent(ctx, o, quickPing) != nil {
			break
		}
		err := d.agentShutdown(ctx, key, o)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || driver.IsTransient(classify("", err)) {
			return classify(o.what+" through the guest agent", err)
		}
		d.log.Debug("libvirt: shutdown through the guest agent failed; trying ACPI", "what", o.what, "err", err)
	}
	// The agent is dead, or it took a shutdown request earlier and the
	// guest ignored it: the power button is the other graceful way.
	err = shutdown(lv.DomainShutdownAcpiPowerBtn)
	if isCode(err, lv.ErrInvalidArg, lv.ErrArgumentUnsupported, lv.ErrNoSupport) {
		// "unsupported flags": let the hypervisor pick its own way.
		err = shutdown(lv.DomainShutdownDefault)
	}
	if isCode(err, lv.ErrOperationInvalid) {
		// "domain is not running": it stopped meanwhile.
		return nil
	}
	return classify(o.what, err)
}

// How a shutdown through the guest agent of a domain stands. libvirt
// answers such a request only once the guest has stopped, or after 60 s
// when it did not (qemu-ga does not answer guest-shutdown), and holds the
// domain's agent meanwhile. So the request runs in the background, the
// caller is answered as soon as it is under way, and a guest that ignored
// it gets the ACPI power button next time.
const (
	agentShutdownIdle = iota
	agentShutdownRunning
	agentShutdownIgnored
)

// agentShutdownAnswer is how long Shutdown waits for libvirt's answer to a
// shutdown through the agent before it takes the request as under way.
const agentShutdownAnswer = 2 * time.Second

// forgetAgentShutdown clears what a domain's last shutdown through the
// agent left: a forced stop or a new boot starts afresh.
func (d *Driver) forgetAgentShutdown(ref driver.Ref) {
	d.shutdownMu.Lock()
	defer d.shutdownMu.Unlock()
	if d.shutdowns[ref.Host+"/"+ref.Address] != agentShutdownRunning {
		delete(d.shutdowns, ref.Host+"/"+ref.Address)
	}
}

func (d *Driver) agentShutdownState(key string) int {
	d.shutdownMu.Lock()
	defer d.shutdownMu.Unlock()
	return d.shutdowns[key]
}

// agentShutdown asks the guest agent to shut the guest down. It returns
// nil once libvirt accepted the request or is still waiting for the guest,
// and libvirt's error if it refused at once.
func (d *Driver) agentShutdown(ctx context.Context, key string, o op) error {
	d.shutdownMu.Lock()
	d.shutdowns[key] = agentShutdownRunning
	d.shutdownMu.Unlock()
	done := make(chan error, 1)
	go func() {
		// Not bounded by ctx: the request must be allowed to finish, and
		// libvirt bounds it itself.
		err := o.l.DomainShutdownFlags(o.dom, lv.DomainShutdownGuestAgent)
		d.shutdownMu.Lock()
		if err == nil || connectionLost(err) || isCode(err, lv.ErrOperationInvalid, lv.ErrNoDomain) {
			delete(d.shutdowns, key)
		} else {
			// Typically "guest agent is not responding" after 60 s of a
			// guest that did not stop.
			d.shutdowns[key] = agentShutdownIgnored
		}
		d.shutdownMu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			d.shutdownMu.Lock()
			delete(d.shutdowns, key)
			d.shutdownMu.Unlock()
		}
		return err
	case <-time.After(agentShutdownAnswer):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop implements driver.Power: it cuts the power (virDomainDestroy), also
// of a domain that reads stopped but still has a QEMU process (crashed and
// kept, or suspended to RAM).
func (d *Driver) Stop(ctx context.Context, ref driver.Ref) error {
	defer d.forgetAgentShutdown(ref)
	o, err := d.domain(ctx, ref, "stop")
	if err != nil {
		return err
	}
	st, err := d.rawState(ctx, o.l, o.dom)
	if err != nil {
		return classify(o.what, err)
	}
	if st.state == lv.DomainShutoff {
		return nil
	}
	err = d.do(ctx, func() error { return o.l.DomainDestroyFlags(o.dom, lv.DomainDestroyDefault) })
	if isCode(err, lv.ErrOperationInvalid) {
		return nil // "domain is not running": it stopped meanwhile
	}
	return classify(o.what, err)
}
