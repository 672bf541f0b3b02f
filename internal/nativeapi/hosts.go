package nativeapi

import (
	"net/http"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/httpx"
)

func (a *API) listHosts(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	list, err := a.svc.ListHosts(r.Context(), p)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, apiv1.HostList{Hosts: list})
	return nil
}

func (a *API) addHost(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.HostCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	h, err := a.svc.AddHost(r.Context(), p, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/hosts/"+h.ID)
	httpx.WriteJSON(w, http.StatusCreated, h)
	return nil
}

func (a *API) getHost(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	h, err := a.svc.GetHost(r.Context(), p, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, h)
	return nil
}

func (a *API) removeHost(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	if err := a.svc.RemoveHost(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createAgentToken is POST /v1/agent-tokens: a one-time enrolment token
// for the fleetpass agent.
func (a *API) createAgentToken(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	var req apiv1.AgentTokenCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := a.svc.CreateAgentToken(r.Context(), p, req)
	if err != nil {
		return err
	}
	// The answer carries the token: no cache may keep it.
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, out)
	return nil
}

func (a *API) listAgentTokens(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	list, err := a.svc.ListAgentTokens(r.Context(), p)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, apiv1.AgentTokenList{Tokens: list})
	return nil
}

func (a *API) revokeAgentToken(w http.ResponseWriter, r *http.Request, p core.Principal) error {
	if err := a.svc.RevokeAgentToken(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
