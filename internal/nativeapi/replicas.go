package nativeapi

import (
	"net/http"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/httpx"
)

// listReplicas is GET /v1/replicas: the servers sharing the database.
func (a *API) listReplicas(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	list, err := a.svc.ListReplicas(r.Context(), p)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, apiv1.ReplicaList{Replicas: list})
	return nil
}

// forgetReplica is DELETE /v1/replicas/{id}: a dead replica leaves the
// listing.
func (a *API) forgetReplica(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	if err := a.svc.ForgetReplica(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
