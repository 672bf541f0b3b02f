package server

import (
	"fmt"
	"net/http"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/engine"
)

// addAgentDrivers adds the fleetpass agent's guest channel to d, and the
// "manual" power driver of machines only their agent reaches.
func (s *Server) addAgentDrivers(d *engine.Drivers) error {
	cfg := s.cfg.Agent
	if cfg.Silence > 0 && cfg.PollHold >= cfg.Silence {
		return fmt.Errorf("--agent-poll-hold (%s) must be shorter than --agent-silence (%s)", cfg.PollHold, cfg.Silence)
	}
	ch := agentserver.NewChannel(s.store, cfg)
	d.Guest[core.AgentGuestDriver] = ch
	d.Power[core.ManualPowerDriver] = agentserver.NewManual(ch)
	return nil
}

// registerAgentAPI adds the endpoints the fleetpass agent talks to, and
// the native API's /v1/agent-tokens.
func (s *Server) registerAgentAPI(mux *http.ServeMux) {
	ch, ok := s.svc.GuestDriver(core.AgentGuestDriver).(*agentserver.Channel)
	if !ok {
		return
	}
	agentserver.NewAPI(s.svc, ch, s.log).Register(mux)
}
