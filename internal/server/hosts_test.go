package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/server"
	"github.com/fleetpass/fleetpass/internal/store"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// unreachable is a libvirt URI that parses but never connects: the host
// API and the inventory's rules need no libvirtd.
const unreachable = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"

func TestAddingAHostIsValidatedAndAdminOnly(t *testing.T) {
	e := newEnv(t, envOpts{})
	acme := e.newKey("acme")
	tests := []struct {
		name     string
		k        key
		body     any
		status   int
		code     string
		notInMsg string
	}{
		{"a tenant key may not add hosts", acme, apiv1.HostCreate{URI: unreachable}, http.StatusForbidden, core.CodeForbidden, ""},
		{"the URI is required", e.admin, apiv1.HostCreate{}, http.StatusBadRequest, core.CodeInvalidArgument, ""},
		{"an unsupported scheme is refused", e.admin, apiv1.HostCreate{URI: "http://kvm1/system"}, http.StatusBadRequest, core.CodeInvalidArgument, ""},
		{"a password in the URI is refused without being repeated", e.admin, apiv1.HostCreate{URI: "qemu+ssh://root:Hunter2-secret@kvm1/system"},
			http.StatusBadRequest, core.CodeInvalidArgument, "Hunter2-secret"},
		{"an unknown URI parameter is refused", e.admin, apiv1.HostCreate{URI: "qemu+ssh://root@kvm1/system?keyfil=/x"}, http.StatusBadRequest, core.CodeInvalidArgument, ""},
		{"the concurrency is bounded", e.admin, apiv1.HostCreate{URI: unreachable, MaxConcurrency: 1000}, http.StatusBadRequest, core.CodeInvalidArgument, ""},
		{"the default OS type is linux or windows", e.admin, apiv1.HostCreate{URI: unreachable, DefaultOSType: "plan9"}, http.StatusBadRequest, core.CodeInvalidArgument, ""},
		{"the tenant must exist", e.admin, apiv1.HostCreate{URI: unreachable, Tenant: "nope"}, http.StatusNotFound, core.CodeTenantNotFound, ""},
		{"unknown fields are refused", e.admin, map[string]any{"uri": unreachable, "password": "x"}, http.StatusBadRequest, "UNKNOWN_FIELD", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.k, "POST", "/v1/hosts", tc.body)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("got %d %s (%s), want %d %s", r.status, r.errCode(), r.body, tc.status, tc.code)
			}
			if tc.notInMsg != "" && strings.Contains(string(r.body), tc.notInMsg) {
				t.Errorf("the answer repeats the secret: %s", r.body)
			}
		})
	}
	var list apiv1.HostList
	e.mustDo(e.admin, "GET", "/v1/hosts", nil, http.StatusOK, &list)
	if len(list.Hosts) != 0 {
		t.Fatalf("refused requests added hosts: %+v", list.Hosts)
	}
}

func TestAHostIsListedWithItsConnectionStateAndRemovedByAnAdmin(t *testing.T) {
	e := newEnv(t, envOpts{})
	_ = e.srv.Service().EnsureTenant(context.Background(), "acme")
	acme, other := e.newKey("acme"), e.newKey("other")
	var h apiv1.Host
	r := e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable, Tenant: "acme", Name: "kvm-test"}, http.StatusCreated, &h)
	if r.header.Get("Location") != "/v1/hosts/"+h.ID || h.Tenant != "acme" || h.MaxConcurrency != core.DefaultHostConcurrency ||
		h.DefaultOSType != "linux" || h.Driver != "libvirt" || h.Name != "kvm-test" {
		t.Fatalf("added host: %+v (Location %q)", h, r.header.Get("Location"))
	}
	if r := e.do(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable}); r.status != http.StatusConflict || r.errCode() != core.CodeHostExists {
		t.Fatalf("same URI again: %d %s", r.status, r.errCode())
	}
	// The connection fails in the background and says why.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got apiv1.Host
		e.mustDo(acme, "GET", "/v1/hosts/"+h.ID, nil, http.StatusOK, &got)
		if !got.Connected && got.Error != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host state: %+v, want not connected with an error", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.do(other, "GET", "/v1/hosts/"+h.ID, nil); r.status != http.StatusNotFound || r.errCode() != core.CodeHostNotFound {
		t.Fatalf("another tenant's host: %d %s, want 404 HOST_NOT_FOUND", r.status, r.errCode())
	}
	var list apiv1.HostList
	e.mustDo(other, "GET", "/v1/hosts", nil, http.StatusOK, &list)
	if len(list.Hosts) != 0 {
		t.Fatalf("another tenant lists %+v", list.Hosts)
	}
	if r := e.do(acme, "DELETE", "/v1/hosts/"+h.ID, nil); r.status != http.StatusForbidden {
		t.Fatalf("tenant key removing a host: %d", r.status)
	}
	e.mustDo(e.admin, "DELETE", "/v1/hosts/"+h.ID, nil, http.StatusNoContent, nil)
	if r := e.do(e.admin, "GET", "/v1/hosts/"+h.ID, nil); r.status != http.StatusNotFound {
		t.Fatalf("removed host: %d", r.status)
	}
}

// ownerLease is the lease the server's host owners hold on a host once
// they follow it: the fence the inventory's writes on the host need.
func ownerLease(t *testing.T, e *env, hostID string) store.Lease {
	t.Helper()
	var l store.Lease
	if !testutil.Eventually(10*time.Second, func() (ok bool) {
		l, ok = e.srv.HostOwners().Lease(hostID)
		return ok
	}) {
		t.Fatalf("the server never took host %s's lease", hostID)
	}
	return l
}

// TestAHostsInstancesChangeOnlyUnderItsOwnersLease: the inventory's writes
// on a host need the running term of that host's lease; a lease of another
// term (a replica that lost the host) or of another host changes nothing.
func TestAHostsInstancesChangeOnlyUnderItsOwnersLease(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	svc := e.srv.Service()
	var h, other apiv1.Host
	e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable}, http.StatusCreated, &h)
	e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable + "2"}, http.StatusCreated, &other)
	lease := ownerLease(t, e, h.ID)
	stale := lease
	stale.Epoch--
	domains := []core.HostDomain{{UUID: "6f1c1b0e-0000-4000-8000-0000000000f1", Name: "vm-f1", State: apiv1.StateRunning}}
	for name, fence := range map[string]store.Lease{
		"a past term":  stale,
		"another host": ownerLease(t, e, other.ID),
		"no lease":     {},
	} {
		if err := svc.ReconcileHost(ctx, h.ID, domains, fence); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("reconcile under %s: %v, want ErrLeaseLost", name, err)
		}
		if err := svc.MarkHostUnreachable(ctx, h.ID, fence); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("mark unreachable under %s: %v, want ErrLeaseLost", name, err)
		}
	}
	var list apiv1.InstanceList
	e.mustDo(e.admin, "GET", "/v1/instances?limit=100", nil, http.StatusOK, &list)
	for _, in := range list.Instances {
		if in.Power.Host == h.ID {
			t.Fatalf("a fenced-off reconcile made %+v", in)
		}
	}
	if err := svc.ReconcileHost(ctx, h.ID, domains, lease); err != nil {
		t.Fatalf("reconcile under the owner's lease: %v", err)
	}
}

func TestTheInventoryTurnsAHostsDomainsIntoInstancesAndNeverDropsHistory(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	svc := e.srv.Service()
	_ = svc.EnsureTenant(ctx, "acme")
	acme := e.newKey("acme")
	var h apiv1.Host
	e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable, Tenant: "acme", DefaultOSType: "windows"}, http.StatusCreated, &h)
	lease := ownerLease(t, e, h.ID)
	const (
		uuidA = "6f1c1b0e-0000-4000-8000-00000000000a"
		uuidB = "6f1c1b0e-0000-4000-8000-00000000000b"
	)
	byUUID := func() map[string]apiv1.Instance {
		t.Helper()
		var list apiv1.InstanceList
		e.mustDo(acme, "GET", "/v1/instances?limit=100", nil, http.StatusOK, &list)
		out := map[string]apiv1.Instance{}
		for _, in := range list.Instances {
			if in.Power.Driver == "libvirt" && in.Power.Host == h.ID {
				out[in.Power.Address] = in
			}
		}
		return out
	}

	if err := svc.ReconcileHost(ctx, h.ID, []core.HostDomain{
		{UUID: uuidA, Name: "web-1", OSType: "linux", State: apiv1.StateRunning, GuestChannel: true},
		{UUID: uuidB, Name: "win-1", State: apiv1.StateStopped},
	}, lease); err != nil {
		t.Fatal(err)
	}
	got := byUUID()
	if got[uuidA].NoGuestChannel || !got[uuidB].NoGuestChannel {
		t.Errorf("noGuestChannel: A %v, B %v; want false, true", got[uuidA].NoGuestChannel, got[uuidB].NoGuestChannel)
	}
	a, b := got[uuidA], got[uuidB]
	if a.Name != "web-1" || a.OSType != "linux" || a.AdminUser != "root" || a.State != apiv1.StateRunning ||
		a.Guest != (apiv1.DriverLink{Driver: "libvirt", Host: h.ID, Address: uuidA}) {
		t.Errorf("domain A's instance: %+v", a)
	}
	if b.OSType != "windows" || b.AdminUser != "Administrator" || b.State != apiv1.StateStopped {
		t.Errorf("domain B's instance (no OS in its metadata: the host's default): %+v", b)
	}

	// A renamed, B undefined.
	if err := svc.ReconcileHost(ctx, h.ID, []core.HostDomain{{UUID: uuidA, Name: "web-1-renamed", OSType: "linux", State: apiv1.StateStopped}}, lease); err != nil {
		t.Fatal(err)
	}
	got = byUUID()
	if got[uuidA].ID != a.ID || got[uuidA].Name != "web-1-renamed" || got[uuidA].State != apiv1.StateStopped {
		t.Errorf("after a rename: %+v", got[uuidA])
	}
	if got[uuidB].ID != b.ID || got[uuidB].State != apiv1.StateMissing {
		t.Errorf("an undefined domain's instance: %+v, want kept and MISSING", got[uuidB])
	}

	// The connection drops: unknown, but MISSING stays MISSING.
	if err := svc.MarkHostUnreachable(ctx, h.ID, lease); err != nil {
		t.Fatal(err)
	}
	got = byUUID()
	if got[uuidA].State != apiv1.StateUnknown || got[uuidB].State != apiv1.StateMissing {
		t.Errorf("while unreachable: A %s, B %s; want UNKNOWN and MISSING", got[uuidA].State, got[uuidB].State)
	}

	// B comes back.
	if err := svc.ReconcileHost(ctx, h.ID, []core.HostDomain{
		{UUID: uuidA, Name: "web-1-renamed", OSType: "linux", State: apiv1.StateRunning},
		{UUID: uuidB, Name: "win-1", State: apiv1.StateRunning},
	}, lease); err != nil {
		t.Fatal(err)
	}
	got = byUUID()
	if got[uuidB].ID != b.ID || got[uuidB].State != apiv1.StateRunning || got[uuidA].State != apiv1.StateRunning {
		t.Errorf("after the host came back: %+v", got)
	}

	var list apiv1.HostList
	e.mustDo(e.admin, "GET", "/v1/hosts", nil, http.StatusOK, &list)
	if len(list.Hosts) != 1 || list.Hosts[0].Instances != 2 {
		t.Fatalf("hosts: %+v", list.Hosts)
	}
	e.mustDo(e.admin, "DELETE", "/v1/hosts/"+h.ID, nil, http.StatusNoContent, nil)
	if got := byUUID(); len(got) != 0 {
		t.Errorf("a removed host's instances stay: %+v", got)
	}
}

func TestAnAgentInsideAKnownVMJoinsItsInstanceOnlyWithATokenNamingIt(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	svc := e.srv.Service()
	_ = svc.EnsureTenant(ctx, "acme")
	var h apiv1.Host
	e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable, Tenant: "acme"}, http.StatusCreated, &h)
	lease := ownerLease(t, e, h.ID)
	const uuid = "6f1c1b0e-0000-4000-8000-0000000000aa"
	if err := svc.ReconcileHost(ctx, h.ID, []core.HostDomain{{UUID: uuid, Name: "vm-1", State: apiv1.StateRunning, GuestChannel: true}}, lease); err != nil {
		t.Fatal(err)
	}
	admin := core.Principal{Kind: "key", ID: "test", Tenant: "acme", Admin: true}
	enrol := func(tokenName string) (core.AgentIdentity, error) {
		tok, err := svc.CreateAgentToken(ctx, admin, apiv1.AgentTokenCreate{Tenant: "acme", InstanceName: tokenName})
		if err != nil {
			t.Fatal(err)
		}
		return svc.EnrollAgent(ctx, core.AgentEnrolment{Token: tok.Token, Hostname: "vm-1", OSType: "linux", Version: "test",
			PublicKey: make([]byte, 32), MachineID: strings.ToUpper(uuid), Address: "127.0.0.1"})
	}
	// Anyone can claim a UUID: a token that does not name the VM is refused.
	for _, name := range []string{"", "vm-2"} {
		if _, err := enrol(name); core.CodeOf(err) != core.CodeForbidden || !strings.Contains(err.Error(), `--name "vm-1"`) {
			t.Fatalf("token bound to %q: %v, want FORBIDDEN naming the VM", name, err)
		}
	}
	id, err := enrol("vm-1")
	if err != nil {
		t.Fatal(err)
	}
	in, err := svc.GetInstance(ctx, admin, id.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	if in.Power.Driver != "libvirt" || in.Power.Address != uuid || in.Guest.Driver != core.AgentGuestDriver || in.Guest.Address != id.AgentID {
		t.Fatalf("the VM's instance after enrolment: power %+v guest %+v", in.Power, in.Guest)
	}
	if _, err := enrol("vm-1"); core.CodeOf(err) != core.CodeInstanceExists {
		t.Fatalf("a second agent for the same VM: %v, want INSTANCE_EXISTS", err)
	}
	// The inventory leaves the agent's guest link alone.
	if err := svc.ReconcileHost(ctx, h.ID, []core.HostDomain{{UUID: uuid, Name: "vm-1", State: apiv1.StateRunning, GuestChannel: true}}, lease); err != nil {
		t.Fatal(err)
	}
	if in, _ := svc.GetInstance(ctx, admin, id.InstanceID); in.Guest.Driver != core.AgentGuestDriver {
		t.Fatalf("a resync took the agent's guest link: %+v", in.Guest)
	}
}

func TestServeLibvirtFlagAddsTheHostOnceAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := server.Open(ctx, server.Config{Listen: "127.0.0.1:0", DataDir: dir, LibvirtHosts: []string{unreachable},
			LibvirtTenant: "lab", SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := srv.Start(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		hosts, err := srv.Service().ListHosts(ctx, core.Principal{Admin: true})
		cancel()
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(hosts) != 1 || hosts[0].URI != unreachable || hosts[0].Tenant != "lab" {
			t.Fatalf("hosts: %+v, want the one --libvirt named, in tenant lab", hosts)
		}
	}
}

// TestSecurity_ATenantIsNotToldWhichReplicaFollowsItsHost: a host's owner
// is a replica id, the operator's (as /v1/replicas, admin only, is); a
// tenant key reading its own host, alone or in the list, never sees it.
func TestSecurity_ATenantIsNotToldWhichReplicaFollowsItsHost(t *testing.T) {
	e := newEnv(t, envOpts{})
	_ = e.srv.Service().EnsureTenant(context.Background(), "acme")
	acme := e.newKey("acme")
	var h apiv1.Host
	e.mustDo(e.admin, "POST", "/v1/hosts", apiv1.HostCreate{URI: unreachable, Tenant: "acme"}, http.StatusCreated, &h)
	replica := e.srv.HostOwners().ID()
	var got apiv1.Host
	if !testutil.Eventually(10*time.Second, func() bool {
		e.mustDo(e.admin, "GET", "/v1/hosts/"+h.ID, nil, http.StatusOK, &got)
		return got.Owner == replica
	}) {
		t.Fatalf("the admin never saw the host's owner %s: %+v", replica, got)
	}
	for _, path := range []string{"/v1/hosts/" + h.ID, "/v1/hosts"} {
		r := e.mustDo(acme, "GET", path, nil, http.StatusOK, nil)
		if strings.Contains(string(r.body), replica) || strings.Contains(string(r.body), `"owner"`) {
			t.Errorf("GET %s with a tenant key names the replica: %s", path, r.body)
		}
	}
}
