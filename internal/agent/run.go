package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/sealer"
)

// Result is what applying a password gave, as the agent reports it.
type Result struct {
	// Code is one of agentproto's results.
	Code     string
	ExitCode int
	// Message never contains the password.
	Message string
}

// Setter sets a user's password on this machine. The caller wipes password.
type Setter func(ctx context.Context, user string, password []byte) Result

// Options tune Run.
type Options struct {
	Log *slog.Logger
	// Setter defaults to the operating system's (chpasswd, NetUserSetInfo).
	Setter Setter
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts; it doubles from the first to the second, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// PollTimeout bounds one poll; it must exceed the server's hold time.
	PollTimeout time.Duration
	// OnReady is called once the agent reported ready (tests, service
	// managers).
	OnReady func()
}

// Run keeps the agent connected until ctx ends. It first applies whatever
// waited for it, then reports ready and long-polls for commands. Failures
// to reach the server are retried with backoff, forever: a command is a row
// on the server until acknowledged, so nothing is lost meanwhile.
func Run(ctx context.Context, st *State, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Setter == nil {
		o.Setter = SetPassword
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 90 * time.Second
	}
	c, err := newHTTPClient(st.Server, st.Fingerprint)
	if err != nil {
		return err
	}
	r := &runner{st: st, o: o, c: c, auth: st.AgentID + ":" + st.Secret, session: newSession()}
	r.pub, r.priv = st.keys()
	defer sealer.Wipe(r.priv[:])
	return r.loop(ctx)
}

func newSession() string {
	b := make([]byte, 12)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

type runner struct {
	st      *State
	o       Options
	c       *http.Client
	auth    string
	session string
	pub     *[agentproto.KeySize]byte
	priv    *[agentproto.KeySize]byte
	ready   bool
}

func (r *runner) loop(ctx context.Context) error {
	backoff := r.o.MinBackoff
	connected := false
	for {
		cmds, err := r.poll(ctx)
		if err == nil {
			if !connected {
				r.o.Log.Info("connected to the server", "server", r.st.Server, "agent_id", r.st.AgentID)
				connected = true
			}
			backoff = r.o.MinBackoff
			err = r.runAll(ctx, cmds)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
				// Retrying cannot help a revoked or unknown agent.
				return fmt.Errorf("the server does not know this agent (%w); enrol it again", err)
			}
			if connected {
				r.o.Log.Warn("lost the server; reconnecting", "err", err)
				connected = false
			} else {
				r.o.Log.Debug("server unreachable", "err", err, "retry_in", backoff)
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, r.o.MaxBackoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		if !r.ready {
			// Everything that waited at start-up is applied and acked.
			r.ready = true
			r.o.Log.Info("ready", "agent_id", r.st.AgentID, "instance_id", r.st.InstanceID)
			if r.o.OnReady != nil {
				r.o.OnReady()
			}
		}
	}
}

func (r *runner) poll(ctx context.Context) ([]agentproto.Command, error) {
	pctx, cancel := context.WithTimeout(ctx, r.o.PollTimeout)
	defer cancel()
	var resp agentproto.PollResponse
	err := post(pctx, r.c, r.st.Server, agentproto.PathPoll, r.auth,
		agentproto.PollRequest{Session: r.session, Ready: r.ready, Version: Version}, &resp)
	if err != nil {
		return nil, err
	}
	return resp.Commands, nil
}

// runAll applies the commands in order and acknowledges each. An ack that
// cannot be sent fails the batch: the server sends the command again, and
// applying the same password again is harmless.
func (r *runner) runAll(ctx context.Context, cmds []agentproto.Command) error {
	for _, cmd := range cmds {
		res := r.apply(ctx, cmd)
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := post(actx, r.c, r.st.Server, agentproto.PathAck, r.auth,
			agentproto.Ack{ID: cmd.ID, Result: res.Code, ExitCode: res.ExitCode, Message: ctlchar.Replace(res.Message)}, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("acknowledge command %s: %w", cmd.ID, err)
		}
		r.o.Log.Info("command applied", "command_id", cmd.ID, "user", cmd.User, "result", res.Code)
	}
	return nil
}

func (r *runner) apply(ctx context.Context, cmd agentproto.Command) Result {
	if cmd.Kind != agentproto.KindSetPassword {
		return Result{Code: agentproto.ResultBadCommand, Message: "unknown command kind " + cmd.Kind}
	}
	pw, err := agentproto.Open(cmd.Sealed, r.pub, r.priv)
	if err != nil {
		return Result{Code: agentproto.ResultBadCommand, Message: err.Error()}
	}
	defer sealer.Wipe(pw)
	return r.o.Setter(ctx, cmd.User, pw)
}
