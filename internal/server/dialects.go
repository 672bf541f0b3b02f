package server

import (
	"net/http"

	"github.com/fleetpass/fleetpass/internal/dialect/actionapi"
	"github.com/fleetpass/fleetpass/internal/dialect/baremetal"
	"github.com/fleetpass/fleetpass/internal/dialect/tencent"
)

// registerDialects adds the documented API dialects (action API, bare-metal
// API, Tencent Cloud API 3.0). They check signatures against the wall
// clock: a replica whose clock is off refuses requests rather than
// accepting stale ones.
func (s *Server) registerDialects(mux *http.ServeMux) {
	actionapi.New(s.svc, s.log, s.metrics, nil).Register(mux)
	baremetal.New(s.svc, s.log, s.metrics, nil).Register(mux)
	tencent.New(s.svc, s.log, s.metrics, nil).Register(mux)
}
