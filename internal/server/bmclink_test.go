package server_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/engine"
)

// A bare-metal record written behind the API's back, whose ipmi power link
// names a BMC registered for no instance (so no credentials of its own):
// the engine refuses to act on it, before any BMC is called, as it does
// for another tenant's libvirt host (TestSecurity_EngineActsOnlyOnTheInstancesOwnLinks).
func TestSecurity_EngineActsOnlyOnABMCRegisteredForTheInstance(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	if err := e.srv.Service().EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	st := e.srv.Store()
	in := apiv1.Instance{ID: core.NewID("ins", 10), Tenant: "acme", Name: "stray-server", OSType: "linux", AdminUser: "root",
		State: apiv1.StateStopped, Power: apiv1.DriverLink{Driver: core.IPMIDriver, Address: "127.0.0.1:1"},
		Guest: apiv1.DriverLink{Driver: core.AgentGuestDriver}}
	if err := st.InTx(ctx, func(tx *sql.Tx) error { return st.CreateInstance(ctx, tx, &in) }); err != nil {
		t.Fatal(err)
	}
	var op apiv1.Operation
	e.mustDo(e.admin, "POST", "/v1/power-actions", apiv1.PowerAction{Action: apiv1.ActionStart, InstanceIDs: []string{in.ID}}, 202, &op)
	if it := itemOf(e.wait(e.admin, op.ID), in.ID); it.ErrorCode != engine.CodeLinkMismatch {
		t.Fatalf("item = %+v, want %s", it, engine.CodeLinkMismatch)
	}
}
