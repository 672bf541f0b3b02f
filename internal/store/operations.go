package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// ItemWork is an item with everything the engine needs to advance it.
type ItemWork struct {
	apiv1.Item
	OperationID string
	Tenant      string
	Kind        string
	Seq         int
	ForceStop   bool
	StopMode    string
	// WasRunning records that a reset found its machine on, so that a
	// reset that fails once the machine is off starts it again.
	WasRunning bool
	// Deadline bounds the current waiting step (shutdown, boot, guest).
	Deadline *time.Time
	// SealedSecret is the sealed new password; nil once the item ended.
	SealedSecret []byte
	// StepSince is when the item last changed (step latency metrics).
	StepSince time.Time
	// ExecSeq is the fencing token of the execution that read the item
	// (BeginExecution); zero: writes are not fenced.
	ExecSeq int64
	// TokenAt is when BeginExecution sent the statement that took
	// ExecSeq: the database confirmed the token no earlier than that.
	TokenAt time.Time
	// OperationTotal is the number of items of the operation. An
	// operation of one item can end in the transaction that ends the item
	// (EndOperationIn): no other item can end beside it.
	OperationTotal int
}

// Terminal reports whether the item has ended.
func (w *ItemWork) Terminal() bool {
	return w.State == apiv1.ItemSucceeded || w.State == apiv1.ItemFailed
}

// CreateOperation inserts an operation, its items and the audit line of
// its acceptance, and returns the operation as GetOperation reads it back:
// the caller's answer and its event need no second read of what was just
// written. On PostgreSQL the operation, the audit line and the first
// hundred items are one statement, so one round trip.
func (s *Store) CreateOperation(ctx context.Context, tx *sql.Tx, op apiv1.Operation, requestID string, items []ItemWork,
	audit apiv1.AuditEntry) (apiv1.Operation, error) {
	now := ms(s.now())
	opRow := []any{op.ID, op.Tenant, op.Kind, op.Status, op.RequestedBy.Kind, op.RequestedBy.ID, op.RequestedBy.Address,
		requestID, len(items), ms(op.CreatedAt)}
	auditRow := []any{now, audit.Tenant, audit.Actor.Kind, audit.Actor.ID, audit.Actor.Address, audit.Action, audit.Target,
		audit.OperationID, audit.RequestID}
	const (
		insertOp = `INSERT INTO operations (id, tenant_id, kind, status, requester_kind, requester_id,
			requester_addr, request_id, total, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
		insertAudit = `INSERT INTO audit_log (at, tenant_id, actor_kind, actor_id, actor_addr, action, target, operation_id,
			request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
		insertItems = `INSERT INTO items (operation_id, instance_id, seq, instance_name, kind, state, step,
			mode, method, user_name, force_stop, stop_mode, sealed_secret, updated_at, shutdown) VALUES `
		// Many rows a statement: one statement per item was a third of
		// the statements of a whole reset on PostgreSQL.
		itemRow = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	)
	itemRows := func(chunk []ItemWork) (string, []any) {
		args := make([]any, 0, 15*len(chunk))
		for _, it := range chunk {
			args = append(args, op.ID, it.InstanceID, it.Seq, it.InstanceName, op.Kind, it.State, it.Step, it.Mode, it.Method, it.User,
				boolInt(it.ForceStop), it.StopMode, it.SealedSecret, now, boolInt(it.Shutdown))
		}
		return insertItems + strings.TrimSuffix(strings.Repeat(itemRow+", ", len(chunk)), ", "), args
	}
	rest := items
	if s.dialect == Postgres && len(items) > 0 {
		// The items' foreign key is checked at the statement's end, when
		// the operation's row is there.
		first := items[:min(len(items), insertChunk)]
		rest = items[len(first):]
		q, args := itemRows(first)
		_, err := s.c(tx).ExecContext(ctx, `WITH o AS (`+insertOp+`), a AS (`+insertAudit+`) `+q,
			append(append(opRow, auditRow...), args...)...)
		if err != nil {
			return apiv1.Operation{}, fmt.Errorf("create operation: %w", err)
		}
	} else {
		if _, err := s.c(tx).ExecContext(ctx, insertOp, opRow...); err != nil {
			return apiv1.Operation{}, fmt.Errorf("create operation: %w", err)
		}
		if _, err := s.c(tx).ExecContext(ctx, insertAudit, auditRow...); err != nil {
			return apiv1.Operation{}, fmt.Errorf("audit: %w", err)
		}
	}
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), insertChunk)]
		rest = rest[len(chunk):]
		q, args := itemRows(chunk)
		if _, err := s.c(tx).ExecContext(ctx, q, args...); err != nil {
			return apiv1.Operation{}, fmt.Errorf("create items: %w", err)
		}
	}
	created := apiv1.Operation{ID: op.ID, Tenant: op.Tenant, Kind: op.Kind, Status: op.Status,
		RequestedBy: apiv1.Requester{Kind: op.RequestedBy.Kind, ID: op.RequestedBy.ID, Address: op.RequestedBy.Address},
		CreatedAt:   fromMS(ms(op.CreatedAt)), Summary: apiv1.Summary{Total: len(items)}, Items: make([]apiv1.Item, 0, len(items))}
	bySeq := slices.Clone(items)
	slices.SortStableFunc(bySeq, func(a, b ItemWork) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, it := range bySeq {
		created.Items = append(created.Items, storedItem(it.Item))
	}
	fillSummary(&created)
	return created, nil
}

// insertChunk bounds the rows of one multi-row INSERT, well within both
// databases' limits on a statement's parameters.
const insertChunk = 100

// storedItem is it as the items table keeps it: the columns an Item is
// read back from, times to the millisecond.
func storedItem(it apiv1.Item) apiv1.Item {
	return apiv1.Item{InstanceID: it.InstanceID, InstanceName: it.InstanceName, State: it.State, Step: it.Step,
		Mode: it.Mode, Shutdown: it.Shutdown, Method: it.Method, User: it.User, ErrorCode: it.ErrorCode,
		Message: it.Message, Detail: it.Detail, Attempts: it.Attempts,
		StartedAt: fromNullMS(nullMS(it.StartedAt)), FinishedAt: fromNullMS(nullMS(it.FinishedAt))}
}

const itemColumns = `i.operation_id, o.tenant_id, i.instance_id, i.seq, i.instance_name, i.kind, i.state, i.step, i.mode,
	i.user_name, i.force_stop, i.stop_mode, i.deadline, i.error_code, i.message, i.detail, i.attempts, i.sealed_secret,
	i.started_at, i.finished_at, i.updated_at, i.method, i.was_running, i.shutdown, o.total`

func scanItem(sc interface{ Scan(...any) error }) (ItemWork, error) {
	var w ItemWork
	var force, wasRunning, shutdown int
	var deadline, started, finished sql.NullInt64
	var updated int64
	err := sc.Scan(&w.OperationID, &w.Tenant, &w.InstanceID, &w.Seq, &w.InstanceName, &w.Kind, &w.State, &w.Step,
		&w.Mode, &w.User, &force, &w.StopMode, &deadline, &w.ErrorCode, &w.Message, &w.Detail, &w.Attempts, &w.SealedSecret,
		&started, &finished, &updated, &w.Method, &wasRunning, &shutdown, &w.OperationTotal)
	if err != nil {
		return w, err
	}
	w.WasRunning = wasRunning == 1
	w.Shutdown = shutdown == 1
	w.StepSince = fromMS(updated)
	w.ForceStop = force == 1
	w.Deadline = fromNullMS(deadline)
	w.StartedAt = fromNullMS(started)
	w.FinishedAt = fromNullMS(finished)
	return w, nil
}

// GetItem reads one item for the engine.
func (s *Store) GetItem(ctx context.Context, q Querier, opID, instanceID string) (ItemWork, error) {
	w, err := scanItem(s.c(q).QueryRowContext(ctx, `SELECT `+itemColumns+` FROM items i JOIN operations o ON o.id = i.operation_id
		WHERE i.operation_id = ? AND i.instance_id = ?`, opID, instanceID))
	if errors.Is(err, sql.ErrNoRows) {
		return w, fmt.Errorf("item %s/%s: %w", opID, instanceID, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("get item: %w", err)
	}
	return w, nil
}

// SaveItem writes an item's progress. It does not end the item: see
// FinishItem.
//
// An ItemWork read by BeginExecution is saved only while its execution
// holds the item's fencing token: ErrSuperseded otherwise.
func (s *Store) SaveItem(ctx context.Context, q Querier, w *ItemWork) error {
	res, err := s.c(q).ExecContext(ctx, `UPDATE items SET state = ?, step = ?, mode = ?, method = ?, was_running = ?, deadline = ?,
		error_code = ?, message = ?, detail = ?, attempts = ?, sealed_secret = ?, started_at = ?, finished_at = ?, updated_at = ?
		WHERE operation_id = ? AND instance_id = ? AND (CAST(? AS BIGINT) = 0 OR exec_seq = ?)`,
		w.State, w.Step, w.Mode, w.Method, boolInt(w.WasRunning), nullMS(w.Deadline), w.ErrorCode, w.Message, w.Detail, w.Attempts, w.SealedSecret,
		nullMS(w.StartedAt), nullMS(w.FinishedAt), ms(s.now()), w.OperationID, w.InstanceID, w.ExecSeq, w.ExecSeq)
	if err != nil {
		return fmt.Errorf("save item: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 && w.ExecSeq != 0 {
		return s.CheckExecution(ctx, q, w)
	}
	return nil
}

// FinishItem ends an item (its State must be succeeded or failed): it drops
// the sealed secret, releases the instance (recording instState, the state
// its machine was found in, unless empty) and runs then (the caller's other
// writes of the transaction, such as its events; nil: none). It does not
// touch the operation: once the transaction has committed, EndOperation
// ends the operation if this was its last item. Like SaveItem, it refuses
// a superseded execution (ErrSuperseded), changing nothing.
//
// Counting each end into the operation's row here, as a first version did,
// made that row the hottest of the database: every item of an operation
// waited for the previous one's commit to take its lock (on PostgreSQL,
// 50-117 ms of a finish, most of a reset's time).
func (s *Store) FinishItem(ctx context.Context, tx *sql.Tx, w *ItemWork, instState string, then func() error) error {
	now := s.now()
	w.SealedSecret = nil
	w.Deadline = nil
	w.FinishedAt = ptr(fromMS(ms(now)))
	// Only the transition into a terminal state writes, so a finish
	// retried after a crash keeps the first end.
	res, err := s.c(tx).ExecContext(ctx, `UPDATE items SET state = ?, step = ?, error_code = ?, message = ?, detail = ?, attempts = ?,
		sealed_secret = NULL, deadline = NULL, finished_at = ?, updated_at = ?
		WHERE operation_id = ? AND instance_id = ? AND state NOT IN (?, ?) AND (CAST(? AS BIGINT) = 0 OR exec_seq = ?)`,
		w.State, w.Step, w.ErrorCode, w.Message, w.Detail, w.Attempts, ms(now), ms(now), w.OperationID, w.InstanceID,
		apiv1.ItemSucceeded, apiv1.ItemFailed, w.ExecSeq, w.ExecSeq)
	if err != nil {
		return fmt.Errorf("finish item: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 && w.ExecSeq != 0 {
		// A superseded execution changes nothing: neither the instance's
		// lock nor the operation belongs to it any more.
		if err := s.CheckExecution(ctx, tx, w); err != nil {
			return err
		}
	}
	latest := apiv1.OpStateSuccess
	if w.State == apiv1.ItemFailed {
		latest = apiv1.OpStateFailed
	}
	if err := s.ReleaseInstance(ctx, tx, w.InstanceID, w.OperationID, latest, instState); err != nil {
		return err
	}
	if then != nil {
		return then()
	}
	return nil
}

// EndOperation ends operation opID if it is running and every item of it
// has ended: it records the status and the summary, runs then in the same
// transaction (the caller's event) with the ended operation, its summary
// but not its items, and reports ended. Exactly one caller
// ends an operation, however many call at once.
//
// Call it after the transaction that ended an item has committed, never
// inside it: two last items ending at once would each see the other still
// running. After its commit, each sees every item that committed before
// its own check, so at least one of the last two sees them all (on
// PostgreSQL every statement of READ COMMITTED takes a new snapshot). A
// process that dies between the two is covered by its item's job, which
// River runs again and which calls EndOperation for an ended item too.
func (s *Store) EndOperation(ctx context.Context, opID string, then func(tx *sql.Tx, op apiv1.Operation) error) (ended bool, err error) {
	// The probe finds nothing to do when an item is still to end, or when
	// another caller ended the operation already: the last few items of a
	// batch often all see every item ended, and each would otherwise run
	// a transaction of three statements for nothing. It uses the partial
	// index of unfinished items: one index lookup, however many items have
	// ended. The states are literals, as in the index's condition: with
	// parameters, a generic plan could not prove that the index applies.
	var one int
	err = s.c(s.DB).QueryRowContext(ctx, `SELECT 1 FROM operations o WHERE o.id = ? AND (o.status <> '`+
		apiv1.OperationRunning+`' OR EXISTS (SELECT 1 FROM items WHERE operation_id = o.id AND state NOT IN ('`+
		apiv1.ItemSucceeded+`', '`+apiv1.ItemFailed+`')))`, opID).Scan(&one)
	if err == nil {
		return false, nil // an item is still to end, or the operation ended
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("end operation: %w", err)
	}
	err = s.InTx(ctx, func(tx *sql.Tx) error {
		// Another caller holding the operation's row is ending it: its
		// probe, like this one's, saw every item ended, and its statement
		// sees no less. Waiting for its commit to find that out held a
		// connection and a worker for nothing (on PostgreSQL; SQLite's
		// one writer never meets another).
		op, ok, err := s.endOperation(ctx, tx, opID, true)
		if ended = ok; err != nil || !ok || then == nil {
			return err
		}
		return then(tx, op)
	})
	return ended, err
}

// EndOperationIn ends operation opID in tx if it is running and every item
// of it has ended, as seen from tx, in one statement. It returns the ended
// operation, its summary but not its items, and whether it ended it.
//
// EndOperation calls it after an item's end has committed. The engine
// calls it in the transaction that ends the only item of an operation:
// with one item, no other end can be committing beside it.
func (s *Store) EndOperationIn(ctx context.Context, tx *sql.Tx, opID string) (apiv1.Operation, bool, error) {
	return s.endOperation(ctx, tx, opID, false)
}

// endOperation is EndOperationIn; with skipLocked, on PostgreSQL, it also
// leaves an operation whose row another transaction holds (only another
// ending caller writes a running operation's row) without waiting for it.
func (s *Store) endOperation(ctx context.Context, tx *sql.Tx, opID string, skipLocked bool) (apiv1.Operation, bool, error) {
	const ok, failed = `'` + apiv1.ItemSucceeded + `'`, `'` + apiv1.ItemFailed + `'`
	running := `'` + apiv1.OperationRunning + `'`
	with, from, args := "", "", []any{}
	if skipLocked && s.dialect == Postgres {
		with = `WITH free AS (SELECT id AS free_id FROM operations WHERE id = ? AND status = ` + running + ` FOR NO KEY UPDATE SKIP LOCKED) `
		from, args = "free, ", append(args, opID)
	}
	// The counts are named apart from the operation's columns, which
	// RETURNING names bare.
	op, err := scanOperation(s.c(tx).QueryRowContext(ctx, with+`UPDATE operations SET
		status = CASE WHEN c.n_failed = 0 THEN '`+apiv1.OperationSucceeded+`'
			WHEN c.n_ok = 0 THEN '`+apiv1.OperationFailed+`' ELSE '`+apiv1.OperationPartial+`' END,
		succeeded = c.n_ok, failed = c.n_failed, finished_at = ?
		FROM `+from+`(SELECT count(*) AS n_items, coalesce(sum(CASE WHEN state = `+ok+` THEN 1 ELSE 0 END), 0) AS n_ok,
			coalesce(sum(CASE WHEN state = `+failed+` THEN 1 ELSE 0 END), 0) AS n_failed
			FROM items WHERE operation_id = ?) AS c
		WHERE operations.id = ? AND operations.status = `+running+` AND c.n_ok + c.n_failed = c.n_items
		RETURNING `+operationColumns, append(args, ms(s.now()), opID, opID)...))
	if errors.Is(err, sql.ErrNoRows) {
		return op, false, nil // an item is still to end, or another caller ended (or is ending) it
	}
	if err != nil {
		return op, false, fmt.Errorf("end operation: %w", err)
	}
	return op, true, nil
}

func ptr[T any](v T) *T { return &v }

const operationColumns = `id, tenant_id, kind, status, requester_kind, requester_id, requester_addr, total, succeeded, failed,
	created_at, finished_at`

func scanOperation(sc interface{ Scan(...any) error }) (apiv1.Operation, error) {
	var op apiv1.Operation
	var created int64
	var finished sql.NullInt64
	err := sc.Scan(&op.ID, &op.Tenant, &op.Kind, &op.Status, &op.RequestedBy.Kind, &op.RequestedBy.ID,
		&op.RequestedBy.Address, &op.Summary.Total, &op.Summary.Succeeded, &op.Summary.Failed, &created, &finished)
	op.CreatedAt = fromMS(created)
	op.FinishedAt = fromNullMS(finished)
	return op, err
}

// GetOperation reads an operation with its items.
func (s *Store) GetOperation(ctx context.Context, q Querier, id string) (apiv1.Operation, error) {
	op, err := scanOperation(s.c(q).QueryRowContext(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return op, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return op, fmt.Errorf("get operation: %w", err)
	}
	items, err := s.itemsOf(ctx, q, []string{id})
	if err != nil {
		return op, err
	}
	op.Items = items[id]
	fillSummary(&op)
	return op, nil
}

func fillSummary(op *apiv1.Operation) {
	if op.Items == nil {
		op.Items = []apiv1.Item{}
	}
	// From the items, not the operation's columns: those are written
	// once, when the operation ends (see EndOperation).
	op.Summary.Pending, op.Summary.Running, op.Summary.Succeeded, op.Summary.Failed = 0, 0, 0, 0
	for _, it := range op.Items {
		switch it.State {
		case apiv1.ItemPending:
			op.Summary.Pending++
		case apiv1.ItemRunning:
			op.Summary.Running++
		case apiv1.ItemSucceeded:
			op.Summary.Succeeded++
		case apiv1.ItemFailed:
			op.Summary.Failed++
		}
	}
}

func (s *Store) itemsOf(ctx context.Context, q Querier, opIDs []string) (map[string][]apiv1.Item, error) {
	out := make(map[string][]apiv1.Item, len(opIDs))
	if len(opIDs) == 0 {
		return out, nil
	}
	rows, err := s.c(q).QueryContext(ctx, `SELECT `+itemColumns+` FROM items i JOIN operations o ON o.id = i.operation_id
		WHERE i.operation_id IN (`+placeholders(len(opIDs))+`) ORDER BY i.operation_id, i.seq`, anys(opIDs)...)
	if err != nil {
		return nil, fmt.Errorf("items: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		w, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("items: %w", err)
		}
		out[w.OperationID] = append(out[w.OperationID], w.Item)
	}
	return out, rows.Err()
}

// OperationFilter selects operations. Empty fields match everything.
type OperationFilter struct {
	Tenant     string
	InstanceID string
	Status     string
	// Before is the position before which the page starts (created, id),
	// newest first.
	BeforeCreated int64
	BeforeID      string
	Limit         int
}

// ListOperations lists a page of operations newest first, with their items.
func (s *Store) ListOperations(ctx context.Context, f OperationFilter) ([]apiv1.Operation, error) {
	var where []string
	var args []any
	if f.Tenant != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.Tenant)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, f.Status)
	}
	if f.InstanceID != "" {
		where, args = append(where, "id IN (SELECT operation_id FROM items WHERE instance_id = ?)"), append(args, f.InstanceID)
	}
	if f.BeforeID != "" {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, f.BeforeCreated, f.BeforeCreated, f.BeforeID)
	}
	query := `SELECT ` + operationColumns + ` FROM operations`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, f.Limit)
	rows, err := s.c(s.DB).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	var ops []apiv1.Operation
	var ids []string
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list operations: %w", err)
		}
		ops = append(ops, op)
		ids = append(ids, op.ID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	items, err := s.itemsOf(ctx, s.DB, ids)
	if err != nil {
		return nil, err
	}
	out := make([]apiv1.Operation, 0, len(ops))
	for _, op := range ops {
		op.Items = items[op.ID]
		fillSummary(&op)
		out = append(out, op)
	}
	return out, nil
}

// UnfinishedItems lists the items not yet ended, by operation.
func (s *Store) UnfinishedItems(ctx context.Context, q Querier) ([]ItemWork, error) {
	rows, err := s.c(q).QueryContext(ctx, `SELECT `+itemColumns+` FROM items i JOIN operations o ON o.id = i.operation_id
		WHERE i.state NOT IN (?, ?) ORDER BY i.operation_id, i.seq`, apiv1.ItemSucceeded, apiv1.ItemFailed)
	if err != nil {
		return nil, fmt.Errorf("unfinished items: %w", err)
	}
	defer rows.Close()
	var out []ItemWork
	for rows.Next() {
		w, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("unfinished items: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// Idempotency is a remembered request.
type Idempotency struct {
	RequestHash []byte
	OperationID string
}

// GetIdempotency looks up a remembered request of principal.
func (s *Store) GetIdempotency(ctx context.Context, q Querier, principal, key string) (Idempotency, error) {
	var r Idempotency
	err := s.c(q).QueryRowContext(ctx, `SELECT request_hash, operation_id FROM idempotency_keys WHERE principal = ? AND key = ?`,
		principal, key).Scan(&r.RequestHash, &r.OperationID)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("idempotency: %w", err)
	}
	return r, nil
}

// PutIdempotency remembers a request; ErrConflict if the key is taken.
func (s *Store) PutIdempotency(ctx context.Context, q Querier, principal, key string, r Idempotency) error {
	res, err := s.c(q).ExecContext(ctx, `INSERT INTO idempotency_keys (principal, key, request_hash, operation_id, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, principal, key, r.RequestHash, r.OperationID, ms(s.now()))
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrConflict
	}
	return nil
}

// PruneIdempotency forgets keys older than before.
func (s *Store) PruneIdempotency(ctx context.Context, before time.Time) error {
	_, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at < ?`, ms(before))
	if err != nil {
		return fmt.Errorf("prune idempotency: %w", err)
	}
	return nil
}

// EventRow is one row of the event log.
type EventRow struct {
	ID     int64
	Tenant string
	Type   string
	Ref    string
	Data   []byte
	At     time.Time
}

// InsertEvent appends an event to the log, in the caller's transaction.
//
// Readers follow the log by id, so no event may appear below an id a
// reader already passed. SQLite's single writer commits in id order. On
// PostgreSQL ids are handed out at insert and transactions commit in any
// order, so EventsAfter holds back what follows a missing id until every
// transaction that could still hold it has ended (see gapWatch). The
// insert takes its transaction id before its event id, which that wait
// relies on.
func (s *Store) InsertEvent(ctx context.Context, q Querier, tenant, typ, ref string, data []byte) error {
	query := `INSERT INTO events (tenant_id, type, ref, data, created_at) VALUES (?, ?, ?, ?, ?)`
	if s.dialect == Postgres {
		// OFFSET 0 keeps the subquery (and its transaction id) evaluated
		// before the row's identity default.
		query = `INSERT INTO events (tenant_id, type, ref, data, created_at)
			SELECT ?, ?, ?, ?, ? FROM (SELECT pg_current_xact_id() OFFSET 0) AS x`
	}
	_, err := s.c(q).ExecContext(ctx, query, tenant, typ, ref, string(data), ms(s.now()))
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	s.eventWritten(q)
	return nil
}

// NewEvent is an event to append with InsertEvents.
type NewEvent struct {
	Tenant, Type, Ref string
	Data              []byte
}

// InsertEvents appends events to the log in their order, in the caller's
// transaction, a few statements for many events.
func (s *Store) InsertEvents(ctx context.Context, q Querier, evs []NewEvent) error {
	now := ms(s.now())
	for len(evs) > 0 {
		chunk := evs[:min(len(evs), insertChunk)]
		evs = evs[len(chunk):]
		args := make([]any, 0, 5*len(chunk))
		for _, e := range chunk {
			args = append(args, e.Tenant, e.Type, e.Ref, string(e.Data), now)
		}
		// The casts type the VALUES for PostgreSQL, which would read
		// them as text.
		values := strings.TrimSuffix(strings.Repeat(`(CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT)), `, len(chunk)), ", ")
		query := `INSERT INTO events (tenant_id, type, ref, data, created_at) VALUES ` + values
		if s.dialect == Postgres {
			// As in InsertEvent: the transaction id before the identity.
			query = `INSERT INTO events (tenant_id, type, ref, data, created_at)
				SELECT v.* FROM (SELECT pg_current_xact_id() OFFSET 0) AS x, (VALUES ` + values + `) AS v`
		}
		if _, err := s.c(q).ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		s.eventWritten(q)
	}
	return nil
}

// EventsAfter reads up to limit events with id > after, oldest first. On
// PostgreSQL it stops before an id still missing while a transaction that
// could hold it is open: that event may commit later, and a reader that
// moved past it would never see it.
func (s *Store) EventsAfter(ctx context.Context, after int64, limit int) ([]EventRow, error) {
	query := `SELECT id, tenant_id, type, ref, data, created_at, '' FROM events WHERE id > ? ORDER BY id LIMIT ?`
	if s.dialect == Postgres {
		// The xmin of the very snapshot the rows come from.
		query = `SELECT id, tenant_id, type, ref, data, created_at, pg_snapshot_xmin(pg_current_snapshot())::text
			FROM events WHERE id > ? ORDER BY id LIMIT ?`
	}
	rows, err := s.c(s.DB).QueryContext(ctx, query, after, limit)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	defer rows.Close()
	var out []EventRow
	var xmin string
	for rows.Next() {
		var e EventRow
		var data string
		var at int64
		if err := rows.Scan(&e.ID, &e.Tenant, &e.Type, &e.Ref, &data, &at, &xmin); err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		e.Data, e.At = []byte(data), fromMS(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	rows.Close()
	if s.dialect != Postgres || len(out) == 0 {
		return out, nil
	}
	return s.gaps.final(ctx, s, after, out, xmin)
}

// LastEventID is the newest event's id (0 when there is none).
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT max(id) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	return id.Int64, nil
}

// FirstOperationEvent is the id and tenant of operation ref's first event
// (the one its acceptance wrote); ok is false when the log holds none,
// because there is no such operation or its events were pruned.
func (s *Store) FirstOperationEvent(ctx context.Context, ref string) (id int64, tenant string, ok bool, err error) {
	err = s.c(s.DB).QueryRowContext(ctx, `SELECT id, tenant_id FROM events WHERE type = 'operation' AND ref = ?
		ORDER BY id LIMIT 1`, ref).Scan(&id, &tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("first operation event: %w", err)
	}
	return id, tenant, true, nil
}

// SettledLastEventID is the newest event's id once no event with a
// smaller id can still appear: a position a reader can start from without
// reading the log up to it. On PostgreSQL an id below the newest may
// belong to a transaction still open (see gapWatch), so it waits, for at
// most wait, until every transaction that could hold one has ended; ok is
// false if one had not. A log that ends at or before known (a position
// the caller already knows to be settled) returns known at once.
func (s *Store) SettledLastEventID(ctx context.Context, known int64, wait time.Duration) (id int64, ok bool, err error) {
	if s.dialect != Postgres {
		// One writer at a time: an id visible means every smaller one
		// committed or rolled back.
		id, err := s.LastEventID(ctx)
		return max(id, known), err == nil, err
	}
	var end sql.NullInt64
	var xmin, xmax string
	if err := s.DB.QueryRowContext(ctx, `SELECT max(id), pg_snapshot_xmin(pg_current_snapshot())::text,
		pg_snapshot_xmax(pg_current_snapshot())::text FROM events`).Scan(&end, &xmin, &xmax); err != nil {
		return 0, false, fmt.Errorf("last event: %w", err)
	}
	if end.Int64 <= known {
		return known, true, nil
	}
	// Every transaction that took an id below end had a transaction id by
	// then (InsertEvent makes sure), below this snapshot's xmax: once a
	// snapshot's xmin reaches it, they have all ended.
	target, err := strconv.ParseUint(xmax, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("last event: snapshot xmax %q: %w", xmax, err)
	}
	deadline := time.Now().Add(wait)
	for pause := time.Millisecond; ; pause = min(2*pause, 20*time.Millisecond) {
		low, err := strconv.ParseUint(xmin, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("last event: snapshot xmin %q: %w", xmin, err)
		}
		if low >= target {
			return end.Int64, true, nil
		}
		if time.Until(deadline) < pause {
			return known, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(pause):
		}
		if err := s.DB.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&xmin); err != nil {
			return 0, false, fmt.Errorf("last event: %w", err)
		}
	}
}

// PruneEvents deletes events older than before.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) error {
	_, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM events WHERE created_at < ?`, ms(before))
	if err != nil {
		return fmt.Errorf("prune events: %w", err)
	}
	return nil
}
