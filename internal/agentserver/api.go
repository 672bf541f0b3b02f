package agentserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentproto"
	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/httpx"
	"github.com/fleetpass/fleetpass/internal/nativeapi"
	"github.com/fleetpass/fleetpass/internal/store"
)

// maxBody bounds request bodies: the largest is an enrolment.
const maxBody = 16 << 10

// API serves the agent endpoints (the native API serves /v1/agent-tokens).
type API struct {
	svc      *core.Service
	agents   *core.AgentQueue
	commands commandReader
	ch       *Channel
	log      *slog.Logger
}

// commandReader is what a held poll takes and reads: the core's agent
// queue (its tests count the calls, since taking is a write and reading
// is not).
type commandReader interface {
	Take(ctx context.Context, agentID string) ([]store.AgentCommand, error)
	Has(ctx context.Context, agentID string) (bool, error)
}

// NewAPI makes the endpoints over the service and the channel; agents'
// rows and commands go through the channel's core.AgentQueue.
func NewAPI(svc *core.Service, ch *Channel, log *slog.Logger) *API {
	return &API{svc: svc, agents: ch.queue, commands: ch.queue, ch: ch, log: log}
}

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+agentproto.PathEnroll, a.enroll)
	mux.HandleFunc("POST "+agentproto.PathPoll, a.poll)
	mux.HandleFunc("POST "+agentproto.PathAck, a.ack)
}

func (a *API) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	code, msg := core.CodeInternal, "internal error; see the server log for the request id"
	var ce *core.Error
	if errors.As(err, &ce) {
		code, msg = ce.Code, ce.Message
	}
	status := nativeapi.StatusOf(code)
	if code == core.CodeCommandNotSent {
		// The agent protocol's own conflict; the native API has no such call.
		status = http.StatusConflict
	}
	if status >= 500 {
		a.log.ErrorContext(r.Context(), "agent endpoint failed", "path", r.URL.Path, "err", err)
	}
	nativeapi.WriteError(w, r, status, code, msg, nil)
}

func writeJSON(w http.ResponseWriter, status int, v any) { httpx.WriteJSON(w, status, v) }

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return &core.Error{Code: core.CodeInvalidArgument, Message: "the request body is not valid JSON for this call"}
	}
	return nil
}

// bearer reads `Authorization: Bearer ID:SECRET` (or HTTP Basic).
func bearer(r *http.Request) (id, secret string, ok bool) {
	if id, secret, ok = r.BasicAuth(); ok {
		return id, secret, id != ""
	}
	tok, found := httpx.BearerToken(r)
	if !found {
		return "", "", false
	}
	id, secret, ok = strings.Cut(tok, ":")
	return id, secret, ok && id != ""
}

func (a *API) enroll(w http.ResponseWriter, r *http.Request) {
	var req agentproto.EnrollRequest
	if err := decode(w, r, &req); err != nil {
		a.writeErr(w, r, err)
		return
	}
	id, err := a.svc.EnrollAgent(r.Context(), core.AgentEnrolment{Token: req.Token, Hostname: req.Hostname,
		OSType: req.OS, Version: req.Version, PublicKey: req.PublicKey, MachineID: req.MachineID,
		Address: httpx.ClientAddr(r)})
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "agent enrolled", "agent_id", id.AgentID, "instance_id", id.InstanceID,
		"tenant", id.Tenant, "hostname", req.Hostname)
	// The answer carries the agent's secret: no cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, agentproto.EnrollResponse{AgentID: id.AgentID, InstanceID: id.InstanceID,
		Tenant: id.Tenant, Secret: id.Secret})
}

func (a *API) authAgent(r *http.Request) (store.Agent, error) {
	id, secret, ok := bearer(r)
	if !ok {
		return store.Agent{}, &core.Error{Code: core.CodeUnauthenticated, Message: "authenticate as an agent: 'Authorization: Bearer AGENT_ID:SECRET'"}
	}
	return a.svc.AuthenticateAgent(r.Context(), id, []byte(secret))
}

// observe records the agent's machine as running with its guest alive or
// not, for the engine, the dialects and the instance list.
func (a *API) observe(ctx context.Context, ag store.Agent, alive bool) {
	state := ""
	if alive {
		state = apiv1.StateRunning
	}
	if err := a.svc.SetInstanceObserved(ctx, ag.InstanceID, state, &alive); err != nil && ctx.Err() == nil {
		a.log.Warn("record agent liveness", "agent_id", ag.ID, "err", err)
	}
}

func (a *API) poll(w http.ResponseWriter, r *http.Request) {
	ag, err := a.authAgent(r)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	var req agentproto.PollRequest
	if err := decode(w, r, &req); err != nil {
		a.writeErr(w, r, err)
		return
	}
	ctx := r.Context()
	// Subscribe before reading, so a command stored meanwhile wakes us.
	wake, cancel := a.ch.polls.subscribe(ag.ID)
	defer cancel()
	seq, changed, err := a.agents.Polled(ctx, ag.ID, req.Session, req.Ready, req.Version)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if changed {
		a.observe(ctx, ag, req.Ready)
	}
	hold := time.NewTimer(a.ch.cfg.PollHold)
	defer hold.Stop()
	tick := time.NewTicker(a.ch.cfg.Recheck)
	defer tick.Stop()
	// Taking commands is a write (it marks them sent); an idle recheck only
	// reads, and takes only when another replica stored something.
	take := true
	for {
		if take {
			cmds, err := a.commands.Take(ctx, ag.ID)
			if err != nil {
				a.writeErr(w, r, err)
				return
			}
			// An agent that is starting gets an answer at once, even empty:
			// it reports ready only after this one.
			if len(cmds) > 0 || !req.Ready {
				out := agentproto.PollResponse{Commands: make([]agentproto.Command, len(cmds))}
				for i, c := range cmds {
					out.Commands[i] = agentproto.Command{ID: c.ID, Kind: c.Kind, User: c.User, Sealed: c.Sealed}
				}
				writeJSON(w, http.StatusOK, out)
				return
			}
		}
		select {
		case <-ctx.Done():
			if serverClosing(r) {
				// Not the agent's doing: it reconnects to the next server
				// run (or another replica) well within the silence.
				return
			}
			// The agent went away (killed, powered off, network cut).
			gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := a.svc.AgentDisconnected(gctx, ag.ID, ag.InstanceID, seq); err != nil {
				a.log.Warn("record an agent's disconnection", "agent_id", ag.ID, "err", err)
			}
			gcancel()
			return
		case <-hold.C:
			writeJSON(w, http.StatusOK, agentproto.PollResponse{Commands: []agentproto.Command{}})
			return
		case <-wake:
			take = true
		case <-tick.C:
			// Another replica may have stored a command. A failed read
			// is retried at the next tick; the hold ends the poll anyway.
			has, err := a.commands.Has(ctx, ag.ID)
			if err != nil && ctx.Err() == nil {
				a.log.WarnContext(ctx, "recheck agent commands", "agent_id", ag.ID, "err", err)
			}
			take = err == nil && has
		}
	}
}

func (a *API) ack(w http.ResponseWriter, r *http.Request) {
	ag, err := a.authAgent(r)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	var req agentproto.Ack
	if err := decode(w, r, &req); err != nil {
		a.writeErr(w, r, err)
		return
	}
	acked, err := a.agents.Ack(r.Context(), ag.ID, req)
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	if !acked {
		// Superseded or already acknowledged: nothing waits for it.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	a.ch.acks.notify(req.ID)
	a.log.InfoContext(r.Context(), "agent command acknowledged", "agent_id", ag.ID, "command_id", req.ID, "result", req.Result)
	w.WriteHeader(http.StatusNoContent)
}

// serverClosing reports whether the request ended because the server is
// shutting down rather than because the client left: both cancel the
// request's context, but only shutdown ends the server's base context.
func serverClosing(r *http.Request) bool {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok || hs.BaseContext == nil {
		return false
	}
	return hs.BaseContext(nil).Err() != nil
}
