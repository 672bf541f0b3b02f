package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/driver"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Item error codes. They are part of the native API (an item's errorCode)
// and the dialects map them to their own.
const (
	CodeGuestNotAlive      = "GUEST_NOT_ALIVE"
	CodeNoGuestChannel     = "NO_GUEST_CHANNEL"
	CodeUserNotFound       = "USER_NOT_FOUND"
	CodeShutdownTimeout    = "SHUTDOWN_TIMEOUT"
	CodeStopTimeout        = "STOP_TIMEOUT"
	CodeStartTimeout       = "START_TIMEOUT"
	CodeGuestTimeout       = "GUEST_TIMEOUT"
	CodeInstanceNotRunning = "INSTANCE_NOT_RUNNING"
	CodeMachineNotFound    = "MACHINE_NOT_FOUND"
	CodeNoDriver           = "NO_DRIVER"
	CodeDriverError        = "DRIVER_ERROR"
	CodeSecretUnavailable  = "SECRET_UNAVAILABLE"
	CodeInstanceGone       = "INSTANCE_GONE"
	// A bare-metal server's BMC: it does not answer, refuses fleetpass's
	// credentials or cipher suite, refuses or fails a power command, or a
	// command that must not be repeated went unanswered.
	CodeBMCUnreachable      = "BMC_UNREACHABLE"
	CodeBMCAuthFailed       = "BMC_AUTH_FAILED"
	CodeBMCCipherSuite      = "BMC_CIPHER_SUITE_REFUSED"
	CodePowerCommandFailed  = "POWER_COMMAND_FAILED"
	CodePowerOutcomeUnknown = "POWER_OUTCOME_UNKNOWN"
	// Disk resets (method disk): a disk fleetpass cannot open (a format,
	// encryption or layout it cannot read, a remote host's disk, a Windows
	// guest), a disk another process holds, and a server without the
	// fleetpass-diskreset helper or libguestfs.
	CodeDiskUnsupported      = "DISK_UNSUPPORTED"
	CodeDiskInUse            = "DISK_IN_USE"
	CodeDiskResetUnavailable = "DISK_RESET_UNAVAILABLE"
	// CodeLinkMismatch ends an item whose instance's links are not its
	// own when the engine is about to act on them (another instance holds
	// one, or it names another tenant's host or agent).
	CodeLinkMismatch = "DRIVER_LINK_MISMATCH"
)

// machine is what one execution knows of the item's instance.
type machine struct {
	power driver.Power
	guest driver.Guest
	ref   driver.Ref
	gref  driver.Ref
	inst  apiv1.Instance
}

// itemFailure ends an item with a code and a message for people.
type itemFailure struct {
	code, msg string
	// detail is what the driver said: it may name other systems (socket
	// paths, host URIs, agent ids), so only the operator reads it.
	detail string
}

func (f *itemFailure) Error() string { return f.code + ": " + f.msg }

func fail(code, format string, args ...any) error {
	return &itemFailure{code: code, msg: fmt.Sprintf(format, args...)}
}

// errWait asks the loop to wait d and call the step again.
type errWait struct{ d time.Duration }

func (w errWait) Error() string { return "wait" }

func (e *Engine) work(ctx context.Context, job *river.Job[ItemArgs]) error {
	return e.guard(ctx, func(ctx context.Context) error { return e.execute(ctx, job) })
}

// execute is one execution of an item: it takes the item's fencing token,
// then advances the item until it ends, waits too long (a snooze) or its
// execution is superseded.
func (e *Engine) execute(ctx context.Context, job *river.Job[ItemArgs]) error {
	args := job.Args
	log := e.log.With("operation_id", args.OperationID, "instance_id", args.InstanceID)
	w, found, held, err := e.store.BeginWork(ctx, args.OperationID, args.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("job for an unknown item; dropping it")
		return nil
	}
	if err != nil {
		return err
	}
	if w.Terminal() {
		// Ended by an execution that died before it could end the
		// operation too (or did: then this does nothing).
		return e.endOperation(ctx, &w, log)
	}
	if found == nil {
		w.State, w.ErrorCode, w.Message = apiv1.ItemFailed, CodeInstanceGone, "the instance was removed"
		return e.finish(ctx, &w, nil, log)
	}
	inst := *found
	m := machine{inst: inst,
		ref:  driver.Ref{InstanceID: inst.ID, Host: inst.Power.Host, Address: inst.Power.Address, OSType: inst.OSType},
		gref: driver.Ref{InstanceID: inst.ID, Host: inst.Guest.Host, Address: inst.Guest.Address, OSType: inst.OSType}}
	if p := e.drivers.Power[inst.Power.Driver]; p != nil {
		m.power = fencedPower{Power: p, check: func(ctx context.Context) error { return e.checkExec(ctx, &w) }}
	}
	m.guest = e.drivers.Guest[inst.Guest.Driver]

	// Defence in depth: the API refuses links that are not the
	// instance's own, and the engine checks again before it acts.
	if problem, err := e.linkProblem(ctx, w, inst, held); err != nil {
		return err
	} else if problem != "" {
		log.Warn("refusing to act on links that are not the instance's own", "problem", problem)
		w.State, w.ErrorCode = apiv1.ItemFailed, CodeLinkMismatch
		w.Message, w.Detail = "the instance's machine links are not its own; nothing was done", problem
		return e.finish(ctx, &w, nil, log)
	}

	// The per-host slot is keyed by the link's host, which linkProblem
	// checked is a registered host of the tenant for host drivers.
	release, err := e.hostSlot(ctx, inst.Power.Driver, inst.Power.Host, args.OperationID+"/"+args.InstanceID)
	if err != nil {
		return err
	}
	defer release()

	if w.State == apiv1.ItemPending {
		// Recorded with the first step change (or the end), which follows
		// at once: one write fewer per item.
		now := e.store.Now()
		w.State, w.StartedAt = apiv1.ItemRunning, &now
	}
	// Attempts counts the tries of the item: this one, then one more for
	// each retry after a transient driver error.
	w.Attempts = max(w.Attempts, 1)
	budget := time.Now().Add(e.cfg.ExecBudget)
	for {
		if m.power == nil {
			err = fail(CodeNoDriver, "no power driver %q is configured on this server", inst.Power.Driver)
		} else {
			err = e.step(ctx, &w, &m)
		}
		var wait errWait
		var failure *itemFailure
		switch {
		case err == nil:
			if w.Step == apiv1.StepDone {
				w.State = apiv1.ItemSucceeded
				return e.finish(ctx, &w, &m, log)
			}
		case errors.As(err, &wait):
			if time.Now().Add(wait.d).After(budget) {
				// Waiting longer would hold a worker: hand the wait back to
				// River. The durable step and deadline carry over.
				return river.JobSnooze(wait.d)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait.d):
			}
		case errors.As(err, &failure):
			w.State, w.ErrorCode, w.Message, w.Detail = apiv1.ItemFailed, failure.code, failure.msg, failure.detail
			return e.finish(ctx, &w, &m, log)
		case driver.IsTransient(err):
			if w.Attempts >= e.cfg.MaxAttempts {
				w.State, w.ErrorCode = apiv1.ItemFailed, CodeDriverError
				w.Message = fmt.Sprintf("gave up after %d attempts: the driver kept failing", w.Attempts)
				if errors.Is(err, driver.ErrControllerUnreachable) {
					w.ErrorCode = CodeBMCUnreachable
					w.Message = fmt.Sprintf("gave up after %d attempts: the server's BMC does not answer", w.Attempts)
				}
				w.Detail = err.Error()
				return e.finish(ctx, &w, &m, log)
			}
			log.Warn("transient driver error; retrying", "step", w.Step, "attempt", w.Attempts, "err", err)
			w.Attempts++
			if err := e.save(ctx, &w, nil, "", false); err != nil {
				return err
			}
			backoff := e.cfg.RetryBase << min(w.Attempts-2, 6)
			if time.Now().Add(backoff).After(budget) {
				return river.JobSnooze(backoff)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
		default:
			// Database trouble, a cancelled context or a fenced replica:
			// let River retry the job; the item's durable step is intact.
			return err
		}
	}
}

// linkProblem checks that the instance is the item's tenant's and that its
// links are its own (see store.LinkOwnerProblem).
func (e *Engine) linkProblem(ctx context.Context, w store.ItemWork, inst apiv1.Instance, held store.LinkHolding) (string, error) {
	if inst.Tenant != w.Tenant {
		return "the instance belongs to another tenant than its operation", nil
	}
	return e.store.LinkProblem(ctx, e.store.DB, inst, held, e.drivers.Links())
}

// to moves the item to step, recording it (and the instance state) before
// the caller acts, so a crash after the action re-enters the same step.
func (e *Engine) to(ctx context.Context, w *store.ItemWork, m *machine, step, instState string, deadline time.Duration) error {
	prev, since := w.Step, w.StepSince
	w.Step = step
	w.Deadline = nil
	if deadline > 0 {
		d := e.store.Now().Add(deadline)
		w.Deadline = &d
	}
	now := e.store.Now()
	e.metrics.StepDuration.WithLabelValues(w.Kind, prev).Observe(now.Sub(since).Seconds())
	w.StepSince = now
	return e.save(ctx, w, m, instState, true)
}

// save persists the item, optionally with an instance state, and emits the
// events in the same transaction.
func (e *Engine) save(ctx context.Context, w *store.ItemWork, m *machine, instState string, emit bool) error {
	err := e.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := e.store.SaveItem(ctx, tx, w); err != nil {
			return err
		}
		var in *apiv1.Instance // the instance, when its state changed
		if instState != "" && m != nil && m.inst.State != instState {
			changed, err := e.store.SetInstanceState(ctx, tx, w.InstanceID, instState, false)
			if err != nil {
				return err
			}
			if changed {
				m.inst.State, m.inst.UpdatedAt = instState, e.store.Now().UTC()
				in = &m.inst
			}
		}
		switch {
		case emit:
			return events.EmitItem(ctx, tx, e.store, w, in, nil)
		case in != nil:
			return events.EmitInstanceValue(ctx, tx, e.store, *in)
		}
		return nil
	})
	if err == nil && emit {
		e.bus.Poke()
	}
	return err
}

// finish ends the item. The instance's state is read from its power driver
// so the record matches the machine, whatever step the item failed in. m is
// nil when the instance no longer exists.
func (e *Engine) finish(ctx context.Context, w *store.ItemWork, m *machine, log *slog.Logger) error {
	instState := ""
	if m != nil && m.power != nil {
		if ps, err := m.power.State(ctx, m.ref); err == nil {
			instState = InstanceState(ps)
		}
		if w.ErrorCode == CodeStartTimeout {
			instState = apiv1.StateError
		}
		if w.ErrorCode == CodeShutdownTimeout && instState == apiv1.StateStopping {
			// The guest ignored the shutdown request and runs on (a
			// driver may still report the request as pending): RUNNING is
			// what the machine is, and what makes the next offline reset
			// ask for consent to force it again.
			instState = apiv1.StateRunning
		}
	}
	if w.State == apiv1.ItemSucceeded {
		w.Step, w.ErrorCode, w.Message = apiv1.StepDone, "", ""
	}
	// The operation of one item ends with it, in its transaction; a
	// larger one is ended by its last item after that item's commit.
	var ended *apiv1.Operation
	err := e.store.InTx(ctx, func(tx *sql.Tx) error {
		ended = nil
		return e.store.FinishItem(ctx, tx, w, instState, func() error {
			if w.OperationTotal == 1 {
				op, ok, err := e.store.EndOperationIn(ctx, tx, w.OperationID)
				if err != nil {
					return err
				}
				if ok {
					ended = &op
				}
			}
			var in *apiv1.Instance
			if m != nil {
				// One instance event for all that changed: the lock, the
				// state and the latest operation's state. m.inst was read
				// after the operation took the lock, so it only needs these
				// updates.
				if instState != "" {
					m.inst.State = instState
				}
				m.inst.Busy, m.inst.UpdatedAt = false, e.store.Now().UTC()
				if lo := m.inst.LatestOperation; lo != nil && lo.ID == w.OperationID {
					lo.State = apiv1.OpStateSuccess
					if w.State == apiv1.ItemFailed {
						lo.State = apiv1.OpStateFailed
					}
				}
				in = &m.inst
			}
			return events.EmitItem(ctx, tx, e.store, w, in, ended)
		})
	})
	if err != nil {
		return err
	}
	if ended != nil {
		e.operationEnded(w, ended.Status, log)
	} else if err := e.endOperation(ctx, w, log); err != nil {
		return err
	}
	e.bus.Poke()
	result := "succeeded"
	if w.State == apiv1.ItemFailed {
		result = "failed"
		log.Info("item failed", "step", w.Step, "code", w.ErrorCode, "message", w.Message)
	}
	e.metrics.Items.WithLabelValues(w.Kind, result, w.ErrorCode).Inc()
	if w.StartedAt != nil {
		e.metrics.ItemDuration.WithLabelValues(w.Kind, result).Observe(time.Since(*w.StartedAt).Seconds())
	}
	return nil
}

// endOperation ends w's operation if w was its last item to end (after the
// item's end has committed: see store.EndOperation).
func (e *Engine) endOperation(ctx context.Context, w *store.ItemWork, log *slog.Logger) error {
	var status string
	ended, err := e.store.EndOperation(ctx, w.OperationID, func(tx *sql.Tx, op apiv1.Operation) error {
		status = op.Status
		return events.EmitOperation(ctx, tx, e.store, op)
	})
	if err != nil || !ended {
		return err
	}
	e.operationEnded(w, status, log)
	return nil
}

// operationEnded counts and logs the end of w's operation with status.
func (e *Engine) operationEnded(w *store.ItemWork, status string, log *slog.Logger) {
	e.bus.Poke()
	e.metrics.Operations.WithLabelValues(w.Kind, status).Inc()
	log.Info("operation ended", "status", status)
}

// InstanceState is the instance state that a power state reads as.
func InstanceState(ps driver.PowerState) string {
	switch ps {
	case driver.PowerRunning:
		return apiv1.StateRunning
	case driver.PowerStopped:
		return apiv1.StateStopped
	case driver.PowerStopping:
		return apiv1.StateStopping
	case driver.PowerStarting:
		return apiv1.StateStarting
	}
	return apiv1.StateError
}

// mapDriverError turns a driver error into an item failure, or passes a
// transient one through for retry.
func mapDriverError(err error, what string) error {
	var stale errStale
	switch {
	case err == nil:
		return nil
	case errors.As(err, &stale):
		return err // not the machine's doing: the execution stops
	case driver.IsTransient(err):
		return err
	case errors.Is(err, driver.ErrNoGuestChannel):
		return fail(CodeNoGuestChannel, "the machine has no guest agent channel, so no password can reach it (%s)", what)
	case errors.Is(err, driver.ErrGuestNotAlive):
		return fail(CodeGuestNotAlive, "the guest agent is not alive (%s)", what)
	case errors.Is(err, driver.ErrUserNotFound):
		return fail(CodeUserNotFound, "the user does not exist on the instance")
	case errors.Is(err, driver.ErrMachineNotFound):
		return fail(CodeMachineNotFound, "the machine is unknown to its driver (%s)", what)
	case errors.Is(err, driver.ErrNotRunning):
		return fail(CodeInstanceNotRunning, "the instance is not running (%s)", what)
	// The BMC's address and user are the operator's: the message says
	// what happened, the detail (shown to the operator) where.
	case errors.Is(err, driver.ErrControllerAuth):
		return &itemFailure{code: CodeBMCAuthFailed, detail: err.Error(),
			msg: "the server's BMC refused fleetpass's credentials (" + what + "); the operator must update them (fleetpass instances set-bmc)"}
	case errors.Is(err, driver.ErrControllerCipher):
		return &itemFailure{code: CodeBMCCipherSuite, detail: err.Error(),
			msg: "the server's BMC refused the cipher suite (" + what + ")"}
	case errors.Is(err, driver.ErrPowerCommandFailed):
		return &itemFailure{code: CodePowerCommandFailed, detail: err.Error(),
			msg: "the server's BMC refused or failed the power command (" + what + ")"}
	case errors.Is(err, driver.ErrPowerOutcomeUnknown):
		return &itemFailure{code: CodePowerOutcomeUnknown, detail: err.Error(),
			msg: "the server's BMC did not answer a power command that is never sent twice, so whether it ran is unknown (" + what + ")"}
	case errors.Is(err, driver.ErrControllerUnreachable):
		return &itemFailure{code: CodeBMCUnreachable, detail: err.Error(),
			msg: "the server's BMC does not answer (" + what + ")"}
	// Disk paths and host ids are the operator's, like a BMC's address.
	case errors.Is(err, driver.ErrDiskInUse):
		return diskInUse(err, what)
	case errors.Is(err, driver.ErrDiskUnsupported):
		return &itemFailure{code: CodeDiskUnsupported, detail: err.Error(),
			msg: "the instance's disk cannot be edited: a remote host's, network, encrypted or foreign-format disk, no Linux found on it, or a Windows guest (" + what + ")"}
	case errors.Is(err, driver.ErrDiskResetUnavailable):
		return &itemFailure{code: CodeDiskResetUnavailable, detail: err.Error(),
			msg: "this server cannot edit disks (" + what + "); its start-up log says why"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return &itemFailure{code: CodeDriverError, msg: "the driver failed to " + what, detail: err.Error()}
}

// step performs at most one action of the item's current step and moves it
// on. It returns nil when the item advanced (or is done), errWait to poll
// again, an itemFailure to end the item, or another error to retry the job.
func (e *Engine) step(ctx context.Context, w *store.ItemWork, m *machine) error {
	switch w.Kind {
	case apiv1.KindResetPassword:
		if w.Step == apiv1.StepQueued {
			if err := e.preflight(ctx, w, m); err != nil {
				return err
			}
		}
		if w.Mode == apiv1.ModeOnline {
			return e.stepOnlineReset(ctx, w, m)
		}
		return e.stepOfflineReset(ctx, w, m)
	case apiv1.KindStart:
		return e.stepStart(ctx, w, m, apiv1.StepDone)
	case apiv1.KindStop:
		return e.stepStop(ctx, w, m, apiv1.StepDone)
	case apiv1.KindReboot:
		return e.stepReboot(ctx, w, m)
	}
	return fail(CodeDriverError, "unknown operation kind %q", w.Kind)
}

// preflight fails a reset before any power action when the password can
// never reach the machine, and settles an auto method: the guest channel
// when the machine has one, else its disk. The method chosen is recorded
// with the item's next step.
func (e *Engine) preflight(ctx context.Context, w *store.ItemWork, m *machine) error {
	if m.guest == nil {
		return fail(CodeNoDriver, "no guest channel %q is configured on this server", m.inst.Guest.Driver)
	}
	de, canDisk := m.guest.(driver.DiskEditor)
	if w.Method == apiv1.MethodDisk {
		if !canDisk {
			return fail(CodeDiskUnsupported, "the guest channel %q cannot edit disks", m.inst.Guest.Driver)
		}
		return mapDriverError(de.CheckDisk(ctx, m.gref), "check the disk")
	}
	var err error
	if p, ok := m.guest.(driver.Preflighter); ok {
		err = p.Preflight(ctx, m.gref)
	}
	if w.Method == apiv1.MethodAuto && w.Mode == apiv1.ModeOffline {
		if errors.Is(err, driver.ErrNoGuestChannel) && canDisk {
			derr := de.CheckDisk(ctx, m.gref)
			switch {
			case derr == nil:
				w.Method = apiv1.MethodDisk
				return nil
			case driver.IsTransient(derr):
				return derr
			case errors.Is(derr, driver.ErrDiskResetUnavailable):
				return &itemFailure{code: CodeNoGuestChannel, detail: derr.Error(),
					msg: "the machine has no guest agent channel, and this server cannot edit disks"}
			}
			// No channel: the disk was the only way, so its refusal is
			// the reason.
			return mapDriverError(derr, "no guest agent channel; check the disk")
		}
		if err == nil {
			w.Method = apiv1.MethodGuest
		}
	}
	return mapDriverError(err, "check the guest channel")
}

func (e *Engine) readPower(ctx context.Context, m *machine) (driver.PowerState, error) {
	ps, err := m.power.State(ctx, m.ref)
	return ps, mapDriverError(err, "read power state")
}

func (e *Engine) stepOnlineReset(ctx context.Context, w *store.ItemWork, m *machine) error {
	switch w.Step {
	case apiv1.StepQueued:
		ps, err := e.readPower(ctx, m)
		if err != nil {
			return err
		}
		if ps != driver.PowerRunning {
			return fail(CodeInstanceNotRunning, "an online reset needs a running instance; it is %s", ps)
		}
		// Setting the password again after a crash is harmless, so the
		// applying step needs recording only for people watching: a guest
		// that answers at once goes straight to done, a write fewer.
		return e.apply(ctx, w, m, func() error {
			return e.to(ctx, w, m, apiv1.StepApplying, apiv1.StateResettingPassword, 0)
		})
	case apiv1.StepApplying:
		return e.apply(ctx, w, m, nil)
	}
	return fail(CodeDriverError, "online reset in unexpected step %q", w.Step)
}

func (e *Engine) stepOfflineReset(ctx context.Context, w *store.ItemWork, m *machine) error {
	switch w.Step {
	case apiv1.StepQueued, apiv1.StepShuttingDown, apiv1.StepForceStopping:
		if w.Method == apiv1.MethodDisk {
			return e.stepStop(ctx, w, m, apiv1.StepEditingDisk)
		}
		return e.stepStop(ctx, w, m, apiv1.StepStaging)
	case apiv1.StepEditingDisk:
		return e.editDisk(ctx, w, m)
	case apiv1.StepStaging:
		if st, ok := m.guest.(driver.Stager); ok {
			if err := e.checkExec(ctx, w); err != nil {
				return err
			}
			pw, err := e.password(w)
			if err != nil {
				return err
			}
			if sc, ok := st.(driver.StagedChecker); ok {
				err = sc.StageAs(ctx, m.gref, w.User, pw, stageKey(w))
			} else {
				err = st.Stage(ctx, m.gref, w.User, pw)
			}
			sealer.Wipe(pw)
			if err := mapDriverError(err, "stage the password"); err != nil {
				return err
			}
		}
		return e.to(ctx, w, m, apiv1.StepStarting, apiv1.StateStarting, e.cfg.BootTimeout)
	case apiv1.StepStarting:
		if w.Method != apiv1.MethodDisk && w.ErrorCode == "" {
			return e.stepStart(ctx, w, m, apiv1.StepWaitingGuest)
		}
		// A disk reset is confirmed before the start (the hash was read
		// back), and a failed one is only putting the machine back on.
		if err := e.stepStart(ctx, w, m, apiv1.StepDone); err != nil || w.Step != apiv1.StepDone {
			return err
		}
		if w.ErrorCode != "" {
			return &itemFailure{code: w.ErrorCode, msg: w.Message, detail: w.Detail}
		}
		return nil
	case apiv1.StepWaitingGuest:
		if m.guest == nil {
			return fail(CodeNoDriver, "no guest channel %q is configured on this server", m.inst.Guest.Driver)
		}
		err := m.guest.Ping(ctx, m.gref)
		if err == nil {
			if sc, ok := m.guest.(driver.StagedChecker); ok && sc.StagedApplied(ctx, m.gref, w.User, stageKey(w)) {
				// The guest applied this item's staged password before it
				// counted as alive, and said so: that is the confirmation,
				// and setting it again would only repeat it.
				w.Step = apiv1.StepDone
				return nil
			}
			return e.to(ctx, w, m, apiv1.StepApplying, apiv1.StateResettingPassword, 0)
		}
		if !errors.Is(err, driver.ErrGuestNotAlive) && !driver.IsTransient(err) {
			return mapDriverError(err, "reach the guest")
		}
		if e.pastDeadline(w) {
			return fail(CodeGuestTimeout, "the guest agent did not answer within %s of the boot", e.cfg.GuestTimeout)
		}
		return errWait{e.cfg.PollInterval}
	case apiv1.StepApplying:
		return e.apply(ctx, w, m, nil)
	}
	return fail(CodeDriverError, "offline reset in unexpected step %q", w.Step)
}

// stageKey is what an item stages its password under with a
// driver.StagedChecker: the item's identity, which no other item (no other
// password) has, and which stays the same when it stages again after a crash.
func stageKey(w *store.ItemWork) string { return w.OperationID + "/" + w.InstanceID }

func diskInUse(err error, what string) *itemFailure {
	return &itemFailure{code: CodeDiskInUse, detail: err.Error(),
		msg: "the instance's disk is in use by another process, so it was not touched (" + what + ")"}
}

// editDisk sets the password in the stopped machine's disk. A failure ends
// the item, but a machine that was on is started again first: the failure
// is recorded on the item while it starts, and reported once it runs.
func (e *Engine) editDisk(ctx context.Context, w *store.ItemWork, m *machine) error {
	de, ok := m.guest.(driver.DiskEditor)
	if !ok {
		return fail(CodeDiskUnsupported, "the guest channel %q cannot edit disks", m.inst.Guest.Driver)
	}
	if err := e.checkExec(ctx, w); err != nil {
		return err
	}
	pw, err := e.password(w)
	if err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, diskEditMax)
	err = de.EditDisk(ectx, m.gref, w.User, pw)
	timedOut := err != nil && ctx.Err() == nil && errors.Is(ectx.Err(), context.DeadlineExceeded)
	cancel()
	sealer.Wipe(pw)
	if err == nil {
		return e.to(ctx, w, m, apiv1.StepStarting, apiv1.StateStarting, e.cfg.BootTimeout)
	}
	if ctx.Err() != nil {
		return err // the server is stopping: the next one edits again
	}
	if timedOut {
		// The edit itself ran out of time: the disk holds the old file or
		// the new one, and editing again is harmless.
		err = driver.Transientf("the disk edit did not end within %s: %w", diskEditMax, err)
	}
	// The machine is off, so a holder of its disk is someone else: often
	// for a moment (the appliance of an edit killed with its server,
	// stopping). Retried with backoff like a transient error.
	retry := driver.IsTransient(err) || errors.Is(err, driver.ErrDiskInUse)
	if retry && w.Attempts < e.cfg.MaxAttempts {
		return driver.Transient(err)
	}
	var f *itemFailure
	switch {
	case errors.Is(err, driver.ErrDiskInUse):
		f = diskInUse(err, "edit the disk")
	case retry:
		f = &itemFailure{code: CodeDriverError, detail: err.Error(),
			msg: fmt.Sprintf("gave up after %d attempts: the disk edit kept failing", w.Attempts)}
	default:
		mapped := mapDriverError(err, "edit the disk")
		if !errors.As(mapped, &f) {
			return mapped
		}
	}
	if !w.WasRunning {
		return f
	}
	// Leave the machine as it was: started again, then the failure.
	w.ErrorCode, w.Message, w.Detail = f.code, f.msg, f.detail
	return e.to(ctx, w, m, apiv1.StepStarting, apiv1.StateStarting, e.cfg.BootTimeout)
}

// apply sets the password through the guest channel; the item is done when
// the guest confirmed it.
func (e *Engine) apply(ctx context.Context, w *store.ItemWork, m *machine, announce func() error) error {
	if m.guest == nil {
		return fail(CodeNoDriver, "no guest channel %q is configured on this server", m.inst.Guest.Driver)
	}
	pw, err := e.password(w)
	if err != nil {
		return err
	}
	defer sealer.Wipe(pw)
	if err := e.checkExec(ctx, w); err != nil {
		return err
	}
	start := time.Now()
	defer func() {
		e.metrics.StepDuration.WithLabelValues(w.Kind, apiv1.StepApplying).Observe(time.Since(start).Seconds())
	}()
	if announce == nil {
		err = m.guest.SetPassword(ctx, m.gref, w.User, pw)
	} else {
		done := make(chan error, 1)
		go func() { done <- m.guest.SetPassword(ctx, m.gref, w.User, pw) }()
		select {
		case err = <-done:
		case <-time.After(quietApply):
			aerr := announce()
			// The guest call holds pw: wait for it before wiping, whatever
			// happened to the announcement.
			err = <-done
			if aerr != nil && err == nil {
				return aerr
			}
		}
	}
	if err := mapDriverError(err, "set the password"); err != nil {
		return err
	}
	w.Step = apiv1.StepDone
	return nil
}

// quietApply is how long a guest may take to confirm a password before the
// item shows the applying step. Recording the step costs a transaction and
// an event for every reader; a step shorter than a quarter of a second is
// one nobody watching would see, and under load, when guest calls take
// longer, a lower bound recorded it for most items just when the database
// could least afford it (docs/benchmarks.md).
const quietApply = 250 * time.Millisecond

func (e *Engine) password(w *store.ItemWork) ([]byte, error) {
	if w.SealedSecret == nil {
		return nil, fail(CodeSecretUnavailable, "the new password is no longer available")
	}
	pw, err := e.sealer.Open(w.SealedSecret, []byte(w.OperationID+"/"+w.InstanceID))
	if err != nil {
		return nil, fail(CodeSecretUnavailable, "the new password cannot be opened with this server's key")
	}
	return pw, nil
}

func (e *Engine) pastDeadline(w *store.ItemWork) bool {
	return w.Deadline != nil && e.store.Now().After(*w.Deadline)
}

// stepStop brings the machine to stopped following the item's stop mode
// (soft, hard, soft-then-hard), then moves to next.
func (e *Engine) stepStop(ctx context.Context, w *store.ItemWork, m *machine, next string) error {
	ps, err := e.readPower(ctx, m)
	if err != nil {
		return err
	}
	stopping := apiv1.StateStopping
	if w.Kind == apiv1.KindReboot {
		stopping = apiv1.StateRebooting
	}
	if ps == driver.PowerStopped {
		state := apiv1.StateStopped
		switch {
		case w.Kind == apiv1.KindReboot:
			state = apiv1.StateRebooting
		case w.Kind == apiv1.KindResetPassword:
			state = apiv1.StateResettingPassword
		}
		if next == apiv1.StepDone {
			w.Step = apiv1.StepDone
			return nil
		}
		return e.to(ctx, w, m, next, state, 0)
	}
	mode := w.StopMode
	if w.Kind == apiv1.KindResetPassword {
		mode = apiv1.StopSoft
		if w.ForceStop {
			mode = apiv1.StopSoftThenHard
		}
	}
	if w.Step == apiv1.StepQueued && w.Kind == apiv1.KindResetPassword {
		w.WasRunning = true
	}
	switch w.Step {
	case apiv1.StepQueued:
		if mode == apiv1.StopHard {
			if err := e.to(ctx, w, m, apiv1.StepForceStopping, stopping, e.cfg.StopTimeout); err != nil {
				return err
			}
			return mapDriverError(m.power.Stop(ctx, m.ref), "stop")
		}
		if err := e.to(ctx, w, m, apiv1.StepShuttingDown, stopping, e.cfg.ShutdownTimeout); err != nil {
			return err
		}
		return mapDriverError(m.power.Shutdown(ctx, m.ref), "shut down")
	case apiv1.StepShuttingDown:
		if e.pastDeadline(w) {
			if mode != apiv1.StopSoftThenHard {
				return fail(CodeShutdownTimeout, "the instance did not shut down within %s and no forced stop was allowed; it was left %s",
					e.cfg.ShutdownTimeout, ps)
			}
			if err := e.to(ctx, w, m, apiv1.StepForceStopping, stopping, e.cfg.StopTimeout); err != nil {
				return err
			}
			return mapDriverError(m.power.Stop(ctx, m.ref), "stop")
		}
		if ps == driver.PowerRunning {
			// After a crash between recording the step and asking, or a
			// guest that missed the request: asking again is harmless.
			if err := mapDriverError(m.power.Shutdown(ctx, m.ref), "shut down"); err != nil {
				return err
			}
		}
		return errWait{e.cfg.PollInterval}
	case apiv1.StepForceStopping:
		if e.pastDeadline(w) {
			return fail(CodeStopTimeout, "the instance did not stop within %s of a forced stop", e.cfg.StopTimeout)
		}
		if ps == driver.PowerRunning || ps == driver.PowerStopping {
			if err := mapDriverError(m.power.Stop(ctx, m.ref), "stop"); err != nil {
				return err
			}
		}
		return errWait{e.cfg.PollInterval}
	}
	return fail(CodeDriverError, "stop in unexpected step %q", w.Step)
}

// stepStart brings the machine to running, then moves to next.
func (e *Engine) stepStart(ctx context.Context, w *store.ItemWork, m *machine, next string) error {
	ps, err := e.readPower(ctx, m)
	if err != nil {
		return err
	}
	if ps == driver.PowerRunning {
		if next == apiv1.StepDone {
			w.Step = apiv1.StepDone
			return nil
		}
		return e.to(ctx, w, m, next, apiv1.StateResettingPassword, e.cfg.GuestTimeout)
	}
	if w.Step != apiv1.StepStarting {
		state := apiv1.StateStarting
		if w.Kind == apiv1.KindReboot {
			state = apiv1.StateRebooting
		}
		if err := e.to(ctx, w, m, apiv1.StepStarting, state, e.cfg.BootTimeout); err != nil {
			return err
		}
		return mapDriverError(m.power.Start(ctx, m.ref), "start")
	}
	if e.pastDeadline(w) {
		return fail(CodeStartTimeout, "the instance did not start within %s", e.cfg.BootTimeout)
	}
	if ps == driver.PowerStopped {
		// Asked before a crash, or never asked: starting again is harmless.
		if err := mapDriverError(m.power.Start(ctx, m.ref), "start"); err != nil {
			return err
		}
	}
	return errWait{e.cfg.PollInterval}
}

func (e *Engine) stepReboot(ctx context.Context, w *store.ItemWork, m *machine) error {
	switch w.Step {
	case apiv1.StepQueued, apiv1.StepShuttingDown, apiv1.StepForceStopping:
		return e.stepStop(ctx, w, m, apiv1.StepStopped)
	case apiv1.StepStopped, apiv1.StepStarting:
		return e.stepStart(ctx, w, m, apiv1.StepDone)
	}
	return fail(CodeDriverError, "reboot in unexpected step %q", w.Step)
}
