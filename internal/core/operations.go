package core

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/password"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// ResetRequest asks for new passwords. Password is wiped by ResetPassword.
type ResetRequest struct {
	InstanceIDs []string
	// User defaults to each instance's admin user.
	User string
	// Mode is auto, online or offline.
	Mode string
	// Method is auto, guest or disk (which implies offline).
	Method    string
	ForceStop bool
	Password  []byte
	Generate  bool
	// Policy overrides the password rule (a dialect's own document rule);
	// nil means the strictest rule for the instances' OS types.
	Policy *password.Policy
	// Require, if set, refuses the whole request when an instance is not
	// ready for the mode (dialects whose documents refuse such requests):
	// RequireStopped, RequireRunningGuest.
	Require string
	// IdempotencyKey makes a retried request return the first one's
	// operation; Fingerprint identifies the request's content.
	IdempotencyKey string
	Fingerprint    []byte
	// NumberTask gives the operation the next bare-metal task id of the
	// caller's tenant: that API numbers only the operations made through
	// it.
	NumberTask bool
}

// Preconditions a dialect may require of every instance at request time.
const (
	RequireStopped      = "stopped"
	RequireRunningGuest = "running_guest"
)

// PowerRequest asks for a power action.
type PowerRequest struct {
	Action      string
	InstanceIDs []string
	StopMode    string
	// Require, if set, refuses the whole request when an instance is not
	// in the state the action needs (the Tencent dialect's documents
	// refuse such requests): RequireStopped, RequireRunningGuest.
	Require        string
	IdempotencyKey string
	Fingerprint    []byte
}

// checkIDs applies the rules every batch shares.
func checkIDs(ids []string) error {
	if len(ids) == 0 {
		return fieldErrorf(CodeEmptyInstanceList, "instanceIds", "name at least one instance")
	}
	if len(ids) > MaxBatch {
		return fieldErrorf(CodeTooManyInstances, "instanceIds", "at most %d instances a request, got %d", MaxBatch, len(ids))
	}
	seen := make(map[string]bool, len(ids))
	var dups, malformed []string
	for _, id := range ids {
		if seen[id] {
			dups = append(dups, id)
		}
		seen[id] = true
		if !ValidInstanceID(id) {
			malformed = append(malformed, id)
		}
	}
	if len(dups) > 0 {
		return &Error{Code: CodeDuplicateInstanceID, Field: "instanceIds", Message: "instanceIds: each instance may appear once",
			Details: map[string]any{"duplicateIds": dups}}
	}
	if len(malformed) > 0 {
		return &Error{Code: CodeInstanceNotFound, Message: fmt.Sprintf("%d instance(s) not found", len(malformed)),
			Details: map[string]any{"unknownIds": malformed}}
	}
	return nil
}

// loadInstances reads the named instances p may see; any other id refuses
// the whole request, listing the unknown ids.
func (s *Service) loadInstances(ctx context.Context, p Principal, ids []string) ([]apiv1.Instance, error) {
	found, err := s.store.GetInstances(ctx, s.store.DB, ids)
	if err != nil {
		return nil, storeFailed(err)
	}
	var unknown []string
	out := make([]apiv1.Instance, 0, len(ids))
	for _, id := range ids {
		in, ok := found[id]
		if !ok || (!p.Sees(in.Tenant)) {
			unknown = append(unknown, id)
			continue
		}
		out = append(out, in)
	}
	if len(unknown) > 0 {
		return nil, &Error{Code: CodeInstanceNotFound, Message: fmt.Sprintf("%d instance(s) not found", len(unknown)),
			Details: map[string]any{"unknownIds": unknown}}
	}
	return out, nil
}

// poweredOn reports whether an instance's recorded state may mean the
// machine is on: shutting it down then needs consent.
func poweredOn(state string) bool {
	return state != apiv1.StateStopped && state != apiv1.StateStopping
}

// canGoOnline reports whether in can have its password changed with no
// downtime: it runs and its guest channel is alive.
func canGoOnline(in apiv1.Instance) bool { return in.State == apiv1.StateRunning && in.GuestAlive }

// resolveMode is the mode a reset of in in the requested mode runs in:
// auto is online when in can go online, offline otherwise.
func resolveMode(in apiv1.Instance, requested string) string {
	if requested != apiv1.ModeAuto {
		return requested
	}
	if canGoOnline(in) {
		return apiv1.ModeOnline
	}
	return apiv1.ModeOffline
}

// ResetPlan is what a reset of some instances would need, for a front door
// that asks before it sends (the console's dialog).
type ResetPlan struct {
	// Online is whether every instance can be reset without a shutdown.
	Online bool `json:"online"`
	// Running are the instances an offline reset must shut down: it needs
	// consent to a forced shutdown for them.
	Running []string `json:"running"`
}

// PlanReset answers the ResetPlan of the named instances p may see, with
// the rules ResetPassword applies; unknown ids are refused alike.
func (s *Service) PlanReset(ctx context.Context, p Principal, ids []string) (ResetPlan, error) {
	if err := checkIDs(ids); err != nil {
		return ResetPlan{}, err
	}
	insts, err := s.loadInstances(ctx, p, ids)
	if err != nil {
		return ResetPlan{}, err
	}
	plan := ResetPlan{Online: true, Running: []string{}}
	for _, in := range insts {
		plan.Online = plan.Online && canGoOnline(in)
		if poweredOn(in.State) {
			plan.Running = append(plan.Running, in.ID)
		}
	}
	return plan, nil
}

// ResetPassword accepts a password reset and returns its operation. With
// Generate, the answer carries the generated password, once.
func (s *Service) ResetPassword(ctx context.Context, p Principal, req ResetRequest) (apiv1.Operation, error) {
	defer sealer.Wipe(req.Password)
	if err := checkIDs(req.InstanceIDs); err != nil {
		return apiv1.Operation{}, err
	}
	mode := req.Mode
	if mode == "" {
		mode = apiv1.ModeAuto
	}
	if mode != apiv1.ModeAuto && mode != apiv1.ModeOnline && mode != apiv1.ModeOffline {
		return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "mode", "must be auto, online or offline")
	}
	method := req.Method
	if method == "" {
		method = apiv1.MethodAuto
	}
	switch method {
	case apiv1.MethodAuto, apiv1.MethodGuest:
	case apiv1.MethodDisk:
		if mode == apiv1.ModeOnline {
			return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "method", "disk edits a stopped machine's disk, so it needs mode offline (or auto)")
		}
		mode = apiv1.ModeOffline
	default:
		return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "method", "must be auto, guest or disk")
	}
	if req.User != "" && !userNameRe.MatchString(req.User) {
		return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "user", "not a valid user name")
	}
	if req.Generate == (len(req.Password) > 0) {
		return apiv1.Operation{}, errorf(CodeInvalidArgument, "give either a password or generate: true")
	}
	if op, ok, err := s.replay(ctx, p, req.IdempotencyKey, req.Fingerprint); ok || err != nil {
		return op, err
	}
	insts, err := s.loadInstances(ctx, p, req.InstanceIDs)
	if err != nil {
		return apiv1.Operation{}, err
	}
	tenant, err := oneTenant(insts)
	if err != nil {
		return apiv1.Operation{}, err
	}

	policy := req.Policy
	if policy == nil {
		var osTypes []string
		for _, in := range insts {
			osTypes = append(osTypes, in.OSType)
		}
		pol := PasswordPolicyFor(osTypes...)
		policy = &pol
	}
	users := make([]string, len(insts))
	for i, in := range insts {
		users[i] = req.User
		if users[i] == "" {
			users[i] = in.AdminUser
		}
	}
	var generated []byte
	if req.Generate {
		if generated, err = generateFor(*policy, users); err != nil {
			return apiv1.Operation{}, &Error{Code: CodeInternal, Message: "could not generate a password", Err: err}
		}
		req.Password = generated
	}
	for i := range insts {
		if err := password.Check(*policy, req.Password, users[i]); err != nil {
			var pe *password.Error
			if errors.As(err, &pe) {
				return apiv1.Operation{}, &Error{Code: CodePasswordPolicy, Message: pe.Error(),
					Details: map[string]any{"policy": policy.Name, "violations": pe.Violations, "rules": policy.Describe()}}
			}
			return apiv1.Operation{}, &Error{Code: CodePasswordPolicy, Message: "the password breaks the rule"}
		}
	}

	// Resolve each instance's mode and check consent and preconditions.
	modes := make([]string, len(insts))
	var needConsent, notReady, noMethod []string
	for i, in := range insts {
		if method == apiv1.MethodDisk {
			s.fillMethods(&in)
			if !slices.Contains(in.ResetMethods, apiv1.MethodDisk) {
				noMethod = append(noMethod, in.ID)
			}
		}
		m := resolveMode(in, mode)
		modes[i] = m
		if m == apiv1.ModeOffline && poweredOn(in.State) && !req.ForceStop {
			needConsent = append(needConsent, in.ID)
		}
		switch req.Require {
		case RequireStopped:
			if in.State != apiv1.StateStopped {
				notReady = append(notReady, in.ID)
			}
		case RequireRunningGuest:
			if !canGoOnline(in) {
				notReady = append(notReady, in.ID)
			}
		}
	}
	if len(noMethod) > 0 {
		why := "only Linux VMs of a local libvirt host can be reset by editing their disk"
		if avail, reason := s.diskResets(); !avail {
			why = "this server cannot edit disks: " + reason
		}
		return apiv1.Operation{}, &Error{Code: CodeMethodUnsupported,
			Message: "these instances cannot be reset with method disk: " + why,
			Details: map[string]any{"instanceIds": noMethod}}
	}
	if len(notReady) > 0 {
		code, msg := CodeInstanceNotStopped, "these instances must be stopped"
		if req.Require == RequireRunningGuest {
			code, msg = CodeInstanceNotRunning, "these instances must be running with a live guest agent"
			if allRunning(insts, notReady) {
				code = CodeGuestNotAlive
				msg = "the guest agent of these instances is not alive"
			}
		}
		return apiv1.Operation{}, &Error{Code: code, Message: msg, Details: map[string]any{"instanceIds": notReady}}
	}
	if len(needConsent) > 0 {
		return apiv1.Operation{}, &Error{Code: CodeConsentRequired, Field: "forceStop",
			Message: "these instances are running and must be shut down for an offline reset; consent to a forced shutdown (forceStop) to go on",
			Details: map[string]any{"instanceIds": needConsent}}
	}

	op := s.newOperation(p, tenant, apiv1.KindResetPassword)
	items := make([]store.ItemWork, len(insts))
	for i, in := range insts {
		sealed, err := s.sealer.Seal(req.Password, []byte(op.ID+"/"+in.ID))
		if err != nil {
			return apiv1.Operation{}, &Error{Code: CodeInternal, Message: "could not seal the password", Err: err}
		}
		itemMethod := method
		if modes[i] == apiv1.ModeOnline {
			itemMethod = apiv1.MethodGuest
		}
		items[i] = store.ItemWork{Item: apiv1.Item{InstanceID: in.ID, InstanceName: in.Name, State: apiv1.ItemPending,
			Step: apiv1.StepQueued, Mode: modes[i], Method: itemMethod, User: users[i],
			Shutdown: modes[i] == apiv1.ModeOffline && poweredOn(in.State)}, Seq: i, ForceStop: req.ForceStop,
			SealedSecret: sealed}
	}
	created, err := s.createOperation(ctx, p, op, items, req.IdempotencyKey, req.Fingerprint, req.NumberTask)
	if err != nil {
		return apiv1.Operation{}, err
	}
	if generated != nil {
		created.GeneratedPassword = string(generated)
		sealer.Wipe(generated)
	}
	return created, nil
}

// diskResets reports whether any guest driver of this server can edit
// disks, and why not.
func (s *Service) diskResets() (bool, string) {
	why := "no guest driver of this server edits disks"
	for _, g := range s.drivers.Guest {
		if de, ok := g.(driver.DiskEditor); ok {
			ok, reason := de.DiskResets()
			if ok {
				return true, ""
			}
			why = reason
		}
	}
	return false, why
}

// generateFor generates a password that fits policy for every user: a
// random password may, rarely, contain one of the user names.
func generateFor(policy password.Policy, users []string) ([]byte, error) {
	for range 20 {
		pw, err := password.Generate(policy)
		if err != nil {
			return nil, err
		}
		ok := true
		for _, u := range users {
			if password.Check(policy, pw, u) != nil {
				ok = false
				break
			}
		}
		if ok {
			return pw, nil
		}
		sealer.Wipe(pw)
	}
	return nil, errors.New("no generated password fits the policy")
}

func allRunning(insts []apiv1.Instance, ids []string) bool {
	for _, in := range insts {
		if slices.Contains(ids, in.ID) && in.State != apiv1.StateRunning {
			return false
		}
	}
	return true
}

// PowerAction accepts a start, stop or reboot.
func (s *Service) PowerAction(ctx context.Context, p Principal, req PowerRequest) (apiv1.Operation, error) {
	var kind string
	switch req.Action {
	case apiv1.ActionStart:
		kind = apiv1.KindStart
	case apiv1.ActionStop:
		kind = apiv1.KindStop
	case apiv1.ActionReboot:
		kind = apiv1.KindReboot
	default:
		return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "action", "must be start, stop or reboot")
	}
	stopMode := req.StopMode
	if stopMode == "" {
		stopMode = apiv1.StopSoft
	}
	if stopMode != apiv1.StopSoft && stopMode != apiv1.StopHard && stopMode != apiv1.StopSoftThenHard {
		return apiv1.Operation{}, fieldErrorf(CodeInvalidArgument, "stopMode", "must be soft, hard or soft-then-hard")
	}
	if err := checkIDs(req.InstanceIDs); err != nil {
		return apiv1.Operation{}, err
	}
	if op, ok, err := s.replay(ctx, p, req.IdempotencyKey, req.Fingerprint); ok || err != nil {
		return op, err
	}
	insts, err := s.loadInstances(ctx, p, req.InstanceIDs)
	if err != nil {
		return apiv1.Operation{}, err
	}
	tenant, err := oneTenant(insts)
	if err != nil {
		return apiv1.Operation{}, err
	}
	var notReady []string
	for _, in := range insts {
		switch {
		case req.Require == RequireStopped && in.State != apiv1.StateStopped:
			notReady = append(notReady, in.ID)
		case req.Require == RequireRunningGuest && in.State != apiv1.StateRunning:
			notReady = append(notReady, in.ID)
		}
	}
	if len(notReady) > 0 {
		code := CodeInstanceNotStopped
		if req.Require == RequireRunningGuest {
			code = CodeInstanceNotRunning
		}
		return apiv1.Operation{}, &Error{Code: code, Message: "these instances are not in a state that allows the action",
			Details: map[string]any{"instanceIds": notReady}}
	}
	op := s.newOperation(p, tenant, kind)
	items := make([]store.ItemWork, len(insts))
	for i, in := range insts {
		items[i] = store.ItemWork{Item: apiv1.Item{InstanceID: in.ID, InstanceName: in.Name, State: apiv1.ItemPending,
			Step: apiv1.StepQueued}, Seq: i, StopMode: stopMode}
	}
	return s.createOperation(ctx, p, op, items, req.IdempotencyKey, req.Fingerprint, false)
}

// newOperation makes an operation of tenant, the tenant of all its
// instances (an admin acting on a tenant's instances makes that tenant's
// operation, which the tenant sees with the admin as its requester).
func (s *Service) newOperation(p Principal, tenant, kind string) apiv1.Operation {
	return apiv1.Operation{ID: NewID("op", 16), Kind: kind, Tenant: tenant, Status: apiv1.OperationRunning,
		RequestedBy: p.requester(), CreatedAt: s.store.Now().UTC().Truncate(time.Millisecond)}
}

func idemPrincipal(p Principal) string { return p.Kind + ":" + p.ID }

// replay returns the operation a retried request made the first time.
func (s *Service) replay(ctx context.Context, p Principal, key string, fingerprint []byte) (apiv1.Operation, bool, error) {
	if key == "" {
		return apiv1.Operation{}, false, nil
	}
	if len(key) > 200 {
		return apiv1.Operation{}, false, errorf(CodeInvalidArgument, "Idempotency-Key: at most 200 characters")
	}
	r, err := s.store.GetIdempotency(ctx, s.store.DB, idemPrincipal(p), key)
	if errors.Is(err, store.ErrNotFound) {
		return apiv1.Operation{}, false, nil
	}
	if err != nil {
		return apiv1.Operation{}, false, storeFailed(err)
	}
	op, ok, err := s.replayed(ctx, s.store.DB, r, fingerprint)
	redactItems(p, &op)
	return op, ok, err
}

// It reads through q: inside a transaction, the transaction itself (SQLite
// has one connection, which the transaction holds).
func (s *Service) replayed(ctx context.Context, q store.Querier, r store.Idempotency, fingerprint []byte) (apiv1.Operation, bool, error) {
	if string(r.RequestHash) != string(fingerprint) {
		return apiv1.Operation{}, false, errorf(CodeIdempotencyKeyReused,
			"this Idempotency-Key was used for a different request")
	}
	op, err := s.store.GetOperation(ctx, q, r.OperationID)
	if err != nil {
		return apiv1.Operation{}, false, storeFailed(err)
	}
	return op, true, nil
}

// errIdempotencyRace is a request's idempotency key taken by a concurrent
// request between the check and the insert.
var errIdempotencyRace = errors.New("idempotency key taken by a concurrent request")

// createOperation writes the operation, its items, the instance locks, the
// item jobs, the idempotency record, the audit line and the events in one
// transaction: a request is accepted whole or not at all.
func (s *Service) createOperation(ctx context.Context, p Principal, op apiv1.Operation, items []store.ItemWork,
	idemKey string, fingerprint []byte, numberTask bool) (apiv1.Operation, error) {
	ids := make([]string, len(items))
	for i := range items {
		items[i].OperationID, items[i].Tenant, items[i].Kind = op.ID, op.Tenant, op.Kind
		ids[i] = items[i].InstanceID
	}
	var replayed *apiv1.Operation
	accept := func(tx *sql.Tx) error {
		replayed = nil
		if idemKey != "" {
			r, err := s.store.GetIdempotency(ctx, tx, idemPrincipal(p), idemKey)
			if err == nil {
				prev, _, err := s.replayed(ctx, tx, r, fingerprint)
				replayed = &prev
				return err
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err := s.store.PutIdempotency(ctx, tx, idemPrincipal(p), idemKey,
				store.Idempotency{RequestHash: fingerprint, OperationID: op.ID}); err != nil {
				if errors.Is(err, store.ErrConflict) {
					return errIdempotencyRace
				}
				return err
			}
		}
		locked, busy, err := s.store.LockInstances(ctx, tx, op.ID, op.Kind, ids)
		if err != nil {
			return err
		}
		if len(busy) > 0 {
			return &Error{Code: CodeInstanceBusy, Message: fmt.Sprintf("%d instance(s) already have an operation in progress", len(busy)),
				Details: map[string]any{"busyIds": busy}}
		}
		created, err := s.store.CreateOperation(ctx, tx, op, p.RequestID, items, s.auditEntry(p, op.Tenant,
			"operation."+op.Kind, strings.Join(ids, ","), op.ID))
		if err != nil {
			return err
		}
		if err := s.engine.EnqueueTx(ctx, tx, op.ID, ids); err != nil {
			return err
		}
		// The bare-metal API polls tasks by integer; giving the number
		// here means an operation it accepted can never lack one.
		if numberTask {
			if _, err := s.store.NumberTask(ctx, tx, p.Tenant, op.ID); err != nil {
				return err
			}
		}
		op = created
		return events.EmitAccepted(ctx, tx, s.store, op, locked)
	}
	err := s.store.InTx(ctx, accept)
	for race := 0; errors.Is(err, errIdempotencyRace) && race < 3; race++ {
		// The same key committed by a concurrent request (another replica)
		// after our read: run again, and the read finds it and replays it.
		err = s.store.InTx(ctx, accept)
	}
	if replayed != nil && err == nil {
		redactItems(p, replayed)
		return *replayed, nil
	}
	if err != nil {
		return apiv1.Operation{}, wrapStore(err)
	}
	s.bus.Poke()
	s.log.Info("operation accepted", "operation_id", op.ID, "kind", op.Kind, "items", len(items),
		"request_id", p.RequestID, "principal", p.ID)
	return op, nil
}

// GetOperation reads an operation p may see.
func (s *Service) GetOperation(ctx context.Context, p Principal, id string) (apiv1.Operation, error) {
	op, err := s.store.GetOperation(ctx, s.store.DB, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.Sees(op.Tenant)) {
		return apiv1.Operation{}, errorf(CodeOperationNotFound, "operation %q not found", id)
	}
	if err != nil {
		return apiv1.Operation{}, storeFailed(err)
	}
	redactItems(p, &op)
	one := []apiv1.Operation{op}
	s.nameRequesters(ctx, one)
	return one[0], nil
}

// nameRequesters fills in who asked for each operation by name: a key's
// name, a console user's name (its id). Names are looked up when read, as
// they are shown, so the operation rows need not copy them.
func (s *Service) nameRequesters(ctx context.Context, ops []apiv1.Operation) {
	names := map[string]string{}
	for i := range ops {
		r := &ops[i].RequestedBy
		switch r.Kind {
		case "user":
			r.Name = r.ID
		case "key":
			name, ok := names[r.ID]
			if !ok {
				if k, err := s.store.GetKey(ctx, r.ID); err == nil {
					name = k.Name
				}
				names[r.ID] = name
			}
			r.Name = name
		}
	}
}

// OperationQuery filters a list of operations.
type OperationQuery struct {
	InstanceID, Status string
	Cursor             string
	Limit              int
}

type operationCursor struct {
	Created int64  `json:"c"`
	ID      string `json:"i"`
}

// ListOperations lists operations p may see, newest first.
func (s *Service) ListOperations(ctx context.Context, p Principal, q OperationQuery) (apiv1.OperationList, error) {
	switch q.Status {
	case "", apiv1.OperationRunning, apiv1.OperationSucceeded, apiv1.OperationFailed, apiv1.OperationPartial:
	default:
		return apiv1.OperationList{}, fieldErrorf(CodeInvalidArgument, "status", "one of running, succeeded, failed, partial")
	}
	f := store.OperationFilter{Tenant: p.scope(), InstanceID: q.InstanceID, Status: q.Status, Limit: clampLimit(q.Limit) + 1}
	if f.Limit > 201 {
		f.Limit = 201 // operations carry their items: keep pages small
	}
	if q.Cursor != "" {
		var c operationCursor
		if err := decodeCursor(q.Cursor, &c); err != nil {
			return apiv1.OperationList{}, err
		}
		f.BeforeCreated, f.BeforeID = c.Created, c.ID
	}
	ops, err := s.store.ListOperations(ctx, f)
	if err != nil {
		return apiv1.OperationList{}, storeFailed(err)
	}
	s.nameRequesters(ctx, ops)
	out := apiv1.OperationList{Operations: ops}
	if out.Operations == nil {
		out.Operations = []apiv1.Operation{}
	}
	for i := range out.Operations {
		redactItems(p, &out.Operations[i])
	}
	if limit := f.Limit - 1; len(ops) > limit {
		out.Operations = ops[:limit]
		last := ops[limit-1]
		out.NextCursor = encodeCursor(operationCursor{Created: last.CreatedAt.UnixMilli(), ID: last.ID})
	}
	return out, nil
}

// WaitOperation returns the operation once it has ended, or as it is when
// timeout passes. It reads the operation again only when the event log
// reports a change of the operation itself (its end), so many waiters cost
// little.
func (s *Service) WaitOperation(ctx context.Context, p Principal, id string, timeout time.Duration) (apiv1.Operation, error) {
	ctx2, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// An operation that has ended is answered as GET would answer it,
	// without a position in the event log.
	op, err := s.GetOperation(ctx, p, id)
	if err != nil || op.Status != apiv1.OperationRunning {
		return op, err
	}
	cursor, err := s.EventPosition(ctx)
	if err != nil {
		return apiv1.Operation{}, err
	}
	// A revocation between the request's authentication and the cursor
	// would be missed: look once more, now that later ones will be seen.
	if ok, err := s.StillAuthorized(ctx, p); err != nil {
		return apiv1.Operation{}, storeFailed(err)
	} else if !ok {
		return apiv1.Operation{}, revokedError()
	}
	// The end may have come before the cursor: read again after it.
	if op, err = s.GetOperation(ctx, p, id); err != nil || op.Status != apiv1.OperationRunning {
		return op, err
	}
	for {
		rows, err := s.bus.Next(ctx2, cursor, 1000)
		if err != nil {
			if ctx.Err() != nil {
				return op, ctx.Err()
			}
			return s.GetOperation(ctx, p, id)
		}
		for _, row := range rows {
			cursor = row.ID
			if s.Revoked(ctx, p, row) {
				return apiv1.Operation{}, revokedError()
			}
			if row.Type == events.TypeOperation && row.Ref == id {
				if op, err = s.GetOperation(ctx, p, id); err != nil || op.Status != apiv1.OperationRunning {
					return op, err
				}
			}
		}
	}
}

// Fingerprint is the idempotency fingerprint of a request body: a MAC, so a
// body holding a password leaves no guessable trace in the database.
func (s *Service) Fingerprint(parts ...[]byte) []byte { return s.sealer.MAC(parts...) }

// EventVisible reports whether p may see an event of tenant.
func EventVisible(p Principal, tenant string) bool { return p.Sees(tenant) }

// MarshalEvent is the JSON of an event for the wire.
func MarshalEvent(ev apiv1.Event) ([]byte, error) { return json.Marshal(ev) }
