package server

import "net/http"

// registerDialects adds the documented API dialects (action API, bare-metal API).
func (s *Server) registerDialects(mux *http.ServeMux) {}
