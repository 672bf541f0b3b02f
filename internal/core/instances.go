package core

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/events"
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
	if name == "" || len(name) > 128 || strings.ContainsAny(name, "\x00\n\r\t") {
		return apiv1.Instance{}, errorf(CodeInvalidArgument, "name: 1-128 printable characters")
	}
	if req.OSType != OSLinux && req.OSType != OSWindows {
		return apiv1.Instance{}, errorf(CodeInvalidArgument, "osType: must be linux or windows")
	}
	user := req.AdminUser
	if user == "" {
		user = DefaultAdminUser(req.OSType)
	}
	if !userNameRe.MatchString(user) {
		return apiv1.Instance{}, errorf(CodeInvalidArgument, "adminUser: not a valid user name")
	}
	if _, ok := s.drivers.Power[req.Power.Driver]; !ok {
		return apiv1.Instance{}, errorf(CodeUnknownDriver, "power.driver: %q is not a power driver of this server", req.Power.Driver)
	}
	if _, ok := s.drivers.Guest[req.Guest.Driver]; !ok {
		return apiv1.Instance{}, errorf(CodeUnknownDriver, "guest.driver: %q is not a guest channel of this server", req.Guest.Driver)
	}
	if req.Power.Address == "" || req.Guest.Address == "" {
		return apiv1.Instance{}, errorf(CodeInvalidArgument, "power.address and guest.address are required")
	}
	in := apiv1.Instance{ID: NewID("ins", 10), Tenant: tenant, Name: name, OSType: req.OSType, AdminUser: user,
		State: apiv1.StatePending, Power: req.Power, Guest: req.Guest}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", tenant)
			}
			return err
		}
		if err := s.store.CreateInstance(ctx, tx, &in); err != nil {
			return err
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
	return in, nil
}

// DeleteInstance removes an idle instance p may see.
func (s *Service) DeleteInstance(ctx context.Context, p Principal, id string) error {
	if _, err := s.GetInstance(ctx, p, id); err != nil {
		return err
	}
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.DeleteInstance(ctx, tx, id); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return &Error{Code: CodeInstanceBusy, Message: "the instance has an operation in progress",
					Details: map[string]any{"busyIds": []string{id}}}
			}
			return err
		}
		return s.audit(ctx, tx, p, p.Tenant, "instance.delete", id, "")
	})
	return wrapStore(err)
}

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
		return errorf(CodeInvalidArgument, "cursor: not one this server gave")
	}
	return nil
}

// ListInstances lists a page of the instances p may see, ordered by name
// then id (a stable order: a page boundary survives inserts and deletes).
func (s *Service) ListInstances(ctx context.Context, p Principal, q InstanceQuery) (apiv1.InstanceList, error) {
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
	out := apiv1.InstanceList{Instances: list}
	if limit := f.Limit - 1; len(list) > limit {
		out.Instances = list[:limit]
		last := list[limit-1]
		out.NextCursor = encodeCursor(instanceCursor{Name: last.Name, ID: last.ID})
	}
	return out, nil
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
