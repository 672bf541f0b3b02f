package core

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// OS types.
const (
	OSLinux   = "linux"
	OSWindows = "windows"
)

// DefaultAdminUser is the user a reset changes when none is named.
func DefaultAdminUser(osType string) string {
	if osType == OSWindows {
		return "Administrator"
	}
	return "root"
}

// RegisterInstance adds an instance to a tenant (the caller's own unless
// admin). Drivers and the inventory sync call it too.
func (s *Service) RegisterInstance(ctx context.Context, p Principal, req apiv1.InstanceCreate) (apiv1.Instance, error) {
	tenant, err := p.TenantFor(req.Tenant)
	if err != nil {
		return apiv1.Instance{}, err
	}
	name := strings.TrimSpace(req.Name)
	if name == "" || len(name) > 128 || ctlchar.Contains(name) {
		return apiv1.Instance{}, fieldErrorf(CodeInvalidArgument, "name", "1-128 printable characters (no control characters)")
	}
	if req.OSType != OSLinux && req.OSType != OSWindows {
		return apiv1.Instance{}, fieldErrorf(CodeInvalidArgument, "osType", "must be linux or windows")
	}
	user := req.AdminUser
	if user == "" {
		user = DefaultAdminUser(req.OSType)
	}
	if !userNameRe.MatchString(user) {
		return apiv1.Instance{}, fieldErrorf(CodeInvalidArgument, "adminUser", "not a valid user name")
	}
	var bm *bareMetal
	if req.Power.Driver == IPMIDriver || req.BMC != nil {
		// A BMC link has rules of its own (and no guest address until the
		// server's agent enrols); the operator-only rule is the same.
		var err error
		if bm, err = s.prepareBareMetal(ctx, p, &req); err != nil {
			return apiv1.Instance{}, err
		}
		defer sealer.Wipe(bm.login.Password)
	} else if err := s.checkLinks(ctx, s.store.DB, p, tenant, req.OSType, req.Power, req.Guest); err != nil {
		return apiv1.Instance{}, err
	}
	in := apiv1.Instance{ID: NewID("ins", 10), Tenant: tenant, Name: name, OSType: req.OSType, AdminUser: user,
		State: apiv1.StatePending, Power: req.Power, Guest: req.Guest}
	if bm != nil {
		// The BMC was asked already: the state is known from the start.
		in.State = apiv1.StateStopped
		if bm.check.On {
			in.State = apiv1.StateRunning
		}
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", tenant)
			}
			return err
		}
		if err := s.checkQuota(ctx, tx, tenant, 1); err != nil {
			return err
		}
		if bm != nil {
			if err := s.powerLinkFree(ctx, tx, in); err != nil {
				return err
			}
		}
		if err := s.store.CreateInstance(ctx, tx, &in); err != nil {
			return linkError(err)
		}
		if bm != nil {
			if err := s.createBareMetal(ctx, tx, &in, bm); err != nil {
				return err
			}
		}
		if err := events.EmitInstance(ctx, tx, s.store, in.ID); err != nil {
			return err
		}
		return s.audit(ctx, tx, p, tenant, "instance.register", in.ID, "")
	})
	if err != nil {
		return apiv1.Instance{}, wrapStore(err)
	}
	s.bus.Poke()
	if bm != nil {
		return s.GetInstance(ctx, p, in.ID)
	}
	return in, nil
}

// GetInstance reads an instance p may see. Another tenant's instance is
// answered exactly like a missing one.
func (s *Service) GetInstance(ctx context.Context, p Principal, id string) (apiv1.Instance, error) {
	in, err := s.store.GetInstance(ctx, s.store.DB, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.Sees(in.Tenant)) {
		return apiv1.Instance{}, errorf(CodeInstanceNotFound, "instance %q not found", id)
	}
	if err != nil {
		return apiv1.Instance{}, storeFailed(err)
	}
	s.fillMethods(&in)
	list := []apiv1.Instance{in}
	if err := s.withBMCs(ctx, p, list); err != nil {
		return apiv1.Instance{}, storeFailed(err)
	}
	return list[0], nil
}

// fillMethods sets the reset methods this server can use on in: guest
// unless its host says it has no guest channel, disk when its guest driver
// can edit disks on this server and it is not a Windows machine.
func (s *Service) fillMethods(in *apiv1.Instance) {
	in.ResetMethods = nil
	if !in.NoGuestChannel {
		in.ResetMethods = append(in.ResetMethods, apiv1.MethodGuest)
	}
	if de, ok := s.drivers.Guest[in.Guest.Driver].(driver.DiskEditor); ok && in.OSType != "windows" {
		if ok, _ := de.DiskResets(); ok {
			in.ResetMethods = append(in.ResetMethods, apiv1.MethodDisk)
		}
	}
}

// DeleteInstance removes an idle instance p may see.
func (s *Service) DeleteInstance(ctx context.Context, p Principal, id string) error {
	in, err := s.GetInstance(ctx, p, id)
	if err != nil {
		return err
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.DeleteInstance(ctx, tx, id); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return &Error{Code: CodeInstanceBusy, Message: "the instance has an operation in progress",
					Details: map[string]any{"busyIds": []string{id}}}
			}
			return err
		}
		// Audited in the instance's tenant, whoever deleted it.
		return s.audit(ctx, tx, p, in.Tenant, "instance.delete", id, "")
	})
	return wrapStore(err)
}

// instanceStates are the states a list may filter on.
var instanceStates = []string{apiv1.StatePending, apiv1.StateRunning, apiv1.StateStopping, apiv1.StateStopped,
	apiv1.StateStarting, apiv1.StateRebooting, apiv1.StateResettingPassword, apiv1.StateError,
	apiv1.StateUnknown, apiv1.StateMissing}

// InstanceQuery filters a list of instances.
type InstanceQuery struct {
	Tenant, State, OSType, NamePrefix string
	Cursor                            string
	Limit                             int
}

type instanceCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

func encodeCursor(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return fieldErrorf(CodeInvalidArgument, "cursor", "not one this server gave")
	}
	return nil
}

// ListInstances lists a page of the instances p may see, ordered by name
// then id (a stable order: a page boundary survives inserts and deletes).
func (s *Service) ListInstances(ctx context.Context, p Principal, q InstanceQuery) (apiv1.InstanceList, error) {
	if q.State != "" && !slices.Contains(instanceStates, strings.ToUpper(q.State)) {
		return apiv1.InstanceList{}, fieldErrorf(CodeInvalidArgument, "state", "not an instance state; one of %s", strings.Join(instanceStates, ", "))
	}
	if q.OSType != "" && q.OSType != OSLinux && q.OSType != OSWindows {
		return apiv1.InstanceList{}, fieldErrorf(CodeInvalidArgument, "os", "must be linux or windows")
	}
	f := store.InstanceFilter{Tenant: p.scope(), State: strings.ToUpper(q.State), OSType: q.OSType, NamePrefix: q.NamePrefix,
		Limit: clampLimit(q.Limit) + 1}
	if q.Tenant != "" {
		if !p.Sees(q.Tenant) {
			return apiv1.InstanceList{Instances: []apiv1.Instance{}}, nil
		}
		f.Tenant = q.Tenant
	}
	if q.Cursor != "" {
		var c instanceCursor
		if err := decodeCursor(q.Cursor, &c); err != nil {
			return apiv1.InstanceList{}, err
		}
		f.AfterName, f.AfterID = c.Name, c.ID
	}
	list, err := s.store.ListInstances(ctx, f)
	if err != nil {
		return apiv1.InstanceList{}, storeFailed(err)
	}
	for i := range list {
		s.fillMethods(&list[i])
	}
	out := apiv1.InstanceList{Instances: list}
	if limit := f.Limit - 1; len(list) > limit {
		out.Instances = list[:limit]
		last := list[limit-1]
		out.NextCursor = encodeCursor(instanceCursor{Name: last.Name, ID: last.ID})
	}
	if err := s.withBMCs(ctx, p, out.Instances); err != nil {
		return apiv1.InstanceList{}, storeFailed(err)
	}
	return out, nil
}

// AgentDisconnected records that an agent's poll seq ended with the agent
// gone (killed, powered off, cut off): the agent is marked disconnected and
// its instance's guest not alive, in one transaction and only if seq is
// still its latest poll. A poll that reached any replica since wins: the
// agent is not marked gone after it came back.
func (s *Service) AgentDisconnected(ctx context.Context, agentID, instanceID string, seq int64) error {
	changed := false
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		gone, err := s.store.AgentGone(ctx, tx, agentID, seq)
		if err != nil || !gone {
			return err
		}
		if changed, err = s.store.SetGuestAlive(ctx, tx, instanceID, false, nil); err != nil || !changed {
			return err
		}
		return events.EmitInstance(ctx, tx, s.store, instanceID)
	})
	if changed {
		s.bus.Poke()
	}
	if err != nil {
		return storeFailed(err)
	}
	return nil
}

// SetInstanceObserved records what a driver or the sync loop observed of an
// idle instance (power state and guest liveness), emitting an event on
// change. The state of an instance an operation holds is left to the engine.
func (s *Service) SetInstanceObserved(ctx context.Context, id, state string, alive *bool) error {
	changed := false
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		if state != "" {
			c, err := s.store.SetInstanceState(ctx, tx, id, state, true)
			if err != nil {
				return err
			}
			changed = changed || c
		}
		if alive != nil {
			now := s.store.Now()
			var seen = &now
			if !*alive {
				seen = nil
			}
			c, err := s.store.SetGuestAlive(ctx, tx, id, *alive, seen)
			if err != nil {
				return err
			}
			changed = changed || c
		}
		if changed {
			return events.EmitInstance(ctx, tx, s.store, id)
		}
		return nil
	})
	if changed {
		s.bus.Poke()
	}
	return err
}
