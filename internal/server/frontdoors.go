package server

import "net/http"

// registerFrontDoors adds the front doors other than the native API: the
// documented API dialects, the agent endpoint and the web console. Each is
// a thin adapter over the core service.
func (s *Server) registerFrontDoors(mux *http.ServeMux) {
	s.registerDialects(mux)
	s.registerAgentAPI(mux)
	s.registerConsole(mux)
}
