package server

import (
	"net/http"

	"github.com/fleetpass/fleetpass/internal/engine"
)

// addAgentDrivers adds the fleetpass agent's guest channel to d.
func (s *Server) addAgentDrivers(d *engine.Drivers) error { return nil }

// registerAgentAPI adds the endpoints the fleetpass agent talks to.
func (s *Server) registerAgentAPI(mux *http.ServeMux) {}
