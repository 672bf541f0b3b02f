package server

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/fleetpass/fleetpass/internal/agentserver"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/engine"
)

// agentConfig reads the agent channel's tuning from the environment
// (FLEETPASS_AGENT_SILENCE, FLEETPASS_AGENT_POLL_HOLD: Go durations) until
// it has flags of its own.
func agentConfig() (agentserver.Config, error) {
	var cfg agentserver.Config
	for _, v := range []struct {
		env string
		d   *time.Duration
	}{
		{"FLEETPASS_AGENT_SILENCE", &cfg.Silence},
		{"FLEETPASS_AGENT_POLL_HOLD", &cfg.PollHold},
	} {
		if s := os.Getenv(v.env); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return cfg, fmt.Errorf("%s: want a positive duration such as 45s, got %q", v.env, s)
			}
			*v.d = d
		}
	}
	if cfg.Silence > 0 && cfg.PollHold >= cfg.Silence {
		return cfg, fmt.Errorf("FLEETPASS_AGENT_POLL_HOLD (%s) must be shorter than FLEETPASS_AGENT_SILENCE (%s)", cfg.PollHold, cfg.Silence)
	}
	return cfg, nil
}

// addAgentDrivers adds the fleetpass agent's guest channel to d, and the
// "manual" power driver of machines only their agent reaches.
func (s *Server) addAgentDrivers(d *engine.Drivers) error {
	cfg, err := agentConfig()
	if err != nil {
		return err
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
	agentserver.NewAPI(s.svc, s.store, ch, s.log).Register(mux)
}
