package server

import "net/http"

// registerConsole adds the web console.
func (s *Server) registerConsole(mux *http.ServeMux) {}
