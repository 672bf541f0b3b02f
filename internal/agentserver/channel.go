// Package agentserver is the server side of the fleetpass agent
// (docs/design.md#the-agent): the guest channel "agent" that the engine
// drives (Ping, SetPassword, Stage), the power driver "manual" of machines
// only the agent reaches, and the HTTP endpoints the agents call (enrol,
// long-poll, acknowledge) plus the native API's /v1/agent-tokens.
//
// The channel and the endpoints share nothing but the database: a command
// is a row sealed to the agent's key until the agent acknowledges it, and
// an agent's liveness is its last poll, so an agent may poll any replica
// and either side may restart without losing a command. Wake-ups make it
// fast: in process, and across replicas by database notifications
// (notify.go); a slow periodic re-read (Config.Recheck) is the safety net.
package agentserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Config tunes the agent channel. Zero fields take DefaultConfig's values.
type Config struct {
	// Silence is how long an agent may stay unheard before it counts as not
	// alive. It must exceed PollHold.
	Silence time.Duration
	// PollHold is how long a poll with nothing to deliver is held open.
	PollHold time.Duration
	// AckTimeout bounds the wait for an agent's acknowledgement.
	AckTimeout time.Duration
	// Recheck is how often waiters read the database anyway, in case a
	// wake-up was lost (another replica's notification while this one's
	// listener was reconnecting). Each held poll reads once per Recheck,
	// so it sets the idle cost of many agents.
	Recheck time.Duration
}

// DefaultConfig is the production configuration.
func DefaultConfig() Config {
	return Config{Silence: 45 * time.Second, PollHold: 25 * time.Second, AckTimeout: 2 * time.Minute, Recheck: 30 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Silence <= 0 {
		c.Silence = d.Silence
	}
	if c.PollHold <= 0 {
		c.PollHold = min(d.PollHold, c.Silence*2/3)
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = d.AckTimeout
	}
	if c.Recheck <= 0 {
		c.Recheck = d.Recheck
	}
	return c
}

// Channel is the "agent" guest channel. A machine's address is its agent id.
type Channel struct {
	queue *core.AgentQueue
	cfg   Config
	// polls wakes the poll of an agent (by agent id) with new commands;
	// acks wakes the SetPassword waiting for a command (by command id).
	polls, acks notifier
}

// NewChannel makes the channel over s, through the core's agent queue.
func NewChannel(s *store.Store, cfg Config) *Channel {
	c := &Channel{queue: core.NewAgentQueue(s), cfg: cfg.withDefaults()}
	c.follow(s)
	return c
}

// Config is the channel's configuration with defaults applied.
func (c *Channel) Config() Config { return c.cfg }

// Alive reports whether a is alive now: connected, ready since its start,
// and heard from within the silence.
func (c *Channel) Alive(a store.Agent) bool {
	return a.Connected && a.Ready && a.LastSeenAt != nil && c.queue.Store().Now().Sub(*a.LastSeenAt) < c.cfg.Silence
}

func (c *Channel) agent(ctx context.Context, ref driver.Ref) (store.Agent, error) {
	if ref.Address == "" {
		return store.Agent{}, errNoAgentYet
	}
	a, err := c.queue.Agent(ctx, ref.Address)
	if errors.Is(err, store.ErrNotFound) {
		return a, fmt.Errorf("agent %q: %w", ref.Address, driver.ErrMachineNotFound)
	}
	if err != nil {
		return a, driver.Transient(fmt.Errorf("agent %q: %w", ref.Address, err))
	}
	return a, nil
}

// errNoAgentYet is the channel of a bare-metal server registered with its
// BMC whose agent has not enrolled: no password can reach it until one does.
var errNoAgentYet = fmt.Errorf("no fleetpass agent has enrolled on this machine yet (enrol one with a token bound to the instance's name): %w",
	driver.ErrNoGuestChannel)

// Preflight fails a reset before any power action when no agent has
// enrolled on the machine.
func (c *Channel) Preflight(ctx context.Context, ref driver.Ref) error {
	if ref.Address == "" {
		return errNoAgentYet
	}
	return nil
}

func (c *Channel) notAlive(a store.Agent) error {
	switch {
	case a.LastSeenAt == nil:
		return fmt.Errorf("agent %s has never connected: %w", a.ID, driver.ErrGuestNotAlive)
	case !a.Connected:
		return fmt.Errorf("agent %s is disconnected: %w", a.ID, driver.ErrGuestNotAlive)
	case !a.Ready:
		return fmt.Errorf("agent %s is starting (not ready yet): %w", a.ID, driver.ErrGuestNotAlive)
	}
	return fmt.Errorf("agent %s has not been heard from for %s: %w", a.ID,
		c.queue.Store().Now().Sub(*a.LastSeenAt).Round(time.Second), driver.ErrGuestNotAlive)
}

// Ping implements driver.Guest.
func (c *Channel) Ping(ctx context.Context, ref driver.Ref) error {
	a, err := c.agent(ctx, ref)
	if err != nil {
		return err
	}
	if !c.Alive(a) {
		return c.notAlive(a)
	}
	return nil
}

// validUser keeps what chpasswd reads unambiguous: one line, one colon.
func validUser(user string) error {
	if user == "" || len(user) > 256 || strings.ContainsAny(user, ":\n\r\x00") {
		return errors.New("the user name is empty or holds ':', a line break or NUL, which the agent cannot pass to chpasswd")
	}
	return nil
}

// Stage implements driver.Stager: the command waits in the database and
// the agent applies it when it starts, before it reports ready.
func (c *Channel) Stage(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	return c.stage(ctx, ref, user, password, func(string) string { return core.NewID("cmd", 16) })
}

// StageAs implements driver.StagedChecker: Stage, with the command's id
// derived from the agent and key, so that StagedApplied finds this very
// command and no other (an older staging has another key).
func (c *Channel) StageAs(ctx context.Context, ref driver.Ref, user string, password []byte, key string) error {
	return c.stage(ctx, ref, user, password, func(agentID string) string { return stagedID(agentID, key) })
}

// StagedApplied implements driver.StagedChecker from the agent's
// acknowledgement of the command StageAs stored under key.
func (c *Channel) StagedApplied(ctx context.Context, ref driver.Ref, user, key string) bool {
	if ref.Address == "" {
		return false
	}
	cmd, err := c.queue.Command(ctx, stagedID(ref.Address, key))
	return err == nil && cmd.AgentID == ref.Address && cmd.Staged && cmd.User == user && cmd.State == agentproto.ResultOK
}

// stagedID is the id of the command staged for agentID under key. A hash,
// so that the key (the caller's, of any form) cannot shape an id.
func stagedID(agentID, key string) string {
	sum := sha256.Sum256([]byte(agentID + "\x00" + key))
	return "cmd-" + hex.EncodeToString(sum[:10])
}

func (c *Channel) stage(ctx context.Context, ref driver.Ref, user string, password []byte, id func(agentID string) string) error {
	if err := validUser(user); err != nil {
		return err
	}
	a, err := c.agent(ctx, ref)
	if err != nil {
		return err
	}
	sealed, err := agentproto.Seal(a.PublicKey, password)
	if err != nil {
		return fmt.Errorf("agent %s: seal the password: %w", a.ID, err)
	}
	if err := c.queue.Queue(ctx, store.AgentCommand{ID: id(a.ID), AgentID: a.ID,
		Kind: agentproto.KindSetPassword, User: user, Staged: true, Sealed: sealed}); err != nil {
		return driver.Transient(fmt.Errorf("agent %s: store the command: %w", a.ID, err))
	}
	c.polls.notify(a.ID)
	// A machine is staged for while it is off: whatever the database last
	// heard from its agent is stale, and the guest must not count as alive
	// before the agent has started again and applied the staged password.
	if err := c.queue.NotReady(ctx, a.ID); err != nil {
		return driver.Transient(fmt.Errorf("agent %s: %w", a.ID, err))
	}
	return nil
}

// SetPassword implements driver.Guest: it sends the command to the live
// agent and returns once the agent acknowledged it.
func (c *Channel) SetPassword(ctx context.Context, ref driver.Ref, user string, password []byte) error {
	if err := validUser(user); err != nil {
		return err
	}
	a, err := c.agent(ctx, ref)
	if err != nil {
		return err
	}
	if !c.Alive(a) {
		return c.notAlive(a)
	}
	// Subscribe before the command exists, so an ack cannot slip between.
	id := core.NewID("cmd", 16)
	acked, cancel := c.acks.subscribe(id)
	defer cancel()
	sealed, err := agentproto.Seal(a.PublicKey, password)
	if err != nil {
		return fmt.Errorf("agent %s: seal the password: %w", a.ID, err)
	}
	if err := c.queue.Queue(ctx, store.AgentCommand{ID: id, AgentID: a.ID,
		Kind: agentproto.KindSetPassword, User: user, Sealed: sealed}); err != nil {
		return driver.Transient(fmt.Errorf("agent %s: store the command: %w", a.ID, err))
	}
	c.polls.notify(a.ID)
	giveUp := func() {
		// A command nobody waits for must not be applied later, after a
		// newer password: drop it unless the agent already answered.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer dcancel()
		_ = c.queue.Drop(dctx, id)
	}
	deadline := time.NewTimer(c.cfg.AckTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(c.cfg.Recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			giveUp()
			return ctx.Err()
		case <-deadline.C:
			giveUp()
			return driver.Transientf("agent %s did not acknowledge the command within %s", a.ID, c.cfg.AckTimeout)
		case <-acked:
		case <-tick.C:
		}
		cmd, err := c.queue.Command(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return driver.Transientf("agent %s: the command was superseded by a newer one", a.ID)
		}
		if err != nil {
			continue // the database is busy; the deadline still holds
		}
		if cmd.State == store.CommandPending || cmd.State == store.CommandSent {
			// An agent applying a command is silent (it polls again only
			// after its ack), so silence alone is no sign of death here:
			// a dropped connection or a new session is; a hang is left to
			// the ack deadline.
			if cur, err := c.queue.Agent(ctx, a.ID); err == nil && (!cur.Connected || cur.Session != a.Session) {
				giveUp()
				return c.notAlive(cur)
			}
			continue
		}
		return resultError(a.ID, cmd)
	}
}

// resultError maps an agent's result to the driver's errors.
func resultError(agentID string, cmd store.AgentCommand) error {
	switch cmd.State {
	case agentproto.ResultOK:
		return nil
	case agentproto.ResultUserNotFound:
		return fmt.Errorf("agent %s: user %q: %w", agentID, cmd.User, driver.ErrUserNotFound)
	case agentproto.ResultFailed:
		return fmt.Errorf("agent %s: setting the password failed (exit code %d): %s", agentID, cmd.ExitCode, cmd.Message)
	case agentproto.ResultBadCommand:
		return fmt.Errorf("agent %s could not open the command: %s", agentID, cmd.Message)
	}
	return fmt.Errorf("agent %s: unknown result %q", agentID, cmd.State)
}

// notifier wakes waiters by key. A wake-up carries no data: the waiter
// reads the database, the one source of truth.
type notifier struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

func (n *notifier) subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.m == nil {
		n.m = make(map[string]map[chan struct{}]struct{})
	}
	if n.m[key] == nil {
		n.m[key] = make(map[chan struct{}]struct{})
	}
	n.m[key][ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.m[key], ch)
		if len(n.m[key]) == 0 {
			delete(n.m, key)
		}
	}
}

func (n *notifier) notify(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.m[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Manual is the power driver of machines fleetpass cannot power on or off
// (a bare-metal server reached only through its agent): it reads running
// while the agent is alive, and refuses power actions with a clear error,
// so only online resets work on such machines.
type Manual struct{ ch *Channel }

// NewManual makes the "manual" power driver over the agent channel.
func NewManual(ch *Channel) *Manual { return &Manual{ch: ch} }

// State implements driver.Power: running while the agent is alive,
// unknown otherwise (the machine may be off, or its agent dead).
func (m *Manual) State(ctx context.Context, ref driver.Ref) (driver.PowerState, error) {
	a, err := m.ch.agent(ctx, ref)
	if err != nil {
		return driver.PowerUnknown, err
	}
	if m.ch.Alive(a) {
		return driver.PowerRunning, nil
	}
	return driver.PowerUnknown, nil
}

func (m *Manual) refuse(ref driver.Ref, action string) error {
	return fmt.Errorf("instance %s has no power control (power driver %q): %s it by hand, or reset its password online",
		ref.InstanceID, core.ManualPowerDriver, action)
}

// Shutdown implements driver.Power by refusing.
func (m *Manual) Shutdown(ctx context.Context, ref driver.Ref) error {
	return m.refuse(ref, "shut down")
}

// Stop implements driver.Power by refusing.
func (m *Manual) Stop(ctx context.Context, ref driver.Ref) error { return m.refuse(ref, "stop") }

// Start implements driver.Power by refusing.
func (m *Manual) Start(ctx context.Context, ref driver.Ref) error { return m.refuse(ref, "start") }
