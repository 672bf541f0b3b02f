package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// Replica is one server process's row in the membership table.
type Replica struct {
	ID        string
	Address   string
	Version   string
	StartedAt time.Time
	// HeartbeatAt is the database's time of the replica's last heartbeat.
	HeartbeatAt time.Time
	// StoppedAt is when it stopped gracefully; nil while it runs (or
	// died without a word).
	StoppedAt *time.Time
}

// ErrSuperseded is returned by the item writes of an execution that no
// longer holds its item's fencing token: another execution (usually on
// another replica, after a takeover) started since.
var ErrSuperseded = errors.New("the item's execution was superseded by a newer one")

// clockMS is the SQL expression of "now" in milliseconds for membership:
// the database's own clock on PostgreSQL, so that replicas whose clocks
// drift apart still agree on who is alive; the store's clock on SQLite (a
// single process). args are the expression's placeholder values.
func (s *Store) clockMS() (expr string, args []any) {
	if s.dialect == Postgres {
		return `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)`, nil
	}
	return `?`, []any{ms(s.now())}
}

// DatabaseNow is the membership clock: the database's on PostgreSQL, the
// store's on SQLite.
func (s *Store) DatabaseNow(ctx context.Context) (time.Time, error) {
	expr, args := s.clockMS()
	var v int64
	if err := s.c(s.DB).QueryRowContext(ctx, `SELECT `+expr, args...).Scan(&v); err != nil {
		return time.Time{}, fmt.Errorf("database clock: %w", err)
	}
	return fromMS(v), nil
}

// Heartbeat records that replica r is alive, creating its row at its first
// beat (started_at is then the database's time) and clearing a previous
// stop. It returns the database's time of the beat.
func (s *Store) Heartbeat(ctx context.Context, r Replica) (time.Time, error) {
	expr, args := s.clockMS()
	q := `INSERT INTO replicas (id, address, version, started_at, heartbeat_at, stopped_at)
		SELECT ?, ?, ?, t.now, t.now, NULL FROM (SELECT ` + expr + ` AS now) t WHERE true
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
			heartbeat_at = excluded.heartbeat_at, stopped_at = NULL
		RETURNING heartbeat_at`
	var at int64
	err := s.c(s.DB).QueryRowContext(ctx, q, append(append([]any{}, r.ID, r.Address, r.Version), args...)...).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("heartbeat: %w", err)
	}
	return fromMS(at), nil
}

// StopReplica marks replica id stopped (a graceful stop): the others treat
// it as dead at once instead of after its heartbeat's time-to-live.
func (s *Store) StopReplica(ctx context.Context, id string) error {
	expr, args := s.clockMS()
	_, err := s.c(s.DB).ExecContext(ctx, `UPDATE replicas SET stopped_at = `+expr+` WHERE id = ?`, append(args, id)...)
	if err != nil {
		return fmt.Errorf("stop replica: %w", err)
	}
	return nil
}

// ListReplicas returns every known replica, oldest first, with the
// database's time of the reading (to judge heartbeats against).
func (s *Store) ListReplicas(ctx context.Context) ([]Replica, time.Time, error) {
	expr, args := s.clockMS()
	rows, err := s.c(s.DB).QueryContext(ctx, `SELECT id, address, version, started_at, heartbeat_at, stopped_at, `+expr+`
		FROM replicas ORDER BY started_at, id`, args...)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	var out []Replica
	var now int64
	for rows.Next() {
		var r Replica
		var started, beat int64
		var stopped sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Address, &r.Version, &started, &beat, &stopped, &now); err != nil {
			return nil, time.Time{}, fmt.Errorf("list replicas: %w", err)
		}
		r.StartedAt, r.HeartbeatAt, r.StoppedAt = fromMS(started), fromMS(beat), fromNullMS(stopped)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("list replicas: %w", err)
	}
	if len(out) == 0 {
		t, err := s.DatabaseNow(ctx)
		return nil, t, err
	}
	return out, fromMS(now), nil
}

// ForgetReplica deletes the row of replica id if it is dead: stopped, or
// silent for longer than ttl by the database's clock. A live replica is
// ErrConflict, an unknown one ErrNotFound.
func (s *Store) ForgetReplica(ctx context.Context, id string, ttl time.Duration) error {
	expr, args := s.clockMS()
	res, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM replicas WHERE id = ? AND (stopped_at IS NOT NULL OR heartbeat_at < `+expr+` - ?)`,
		append(append([]any{id}, args...), ttl.Milliseconds())...)
	if err != nil {
		return fmt.Errorf("forget replica: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	var one int
	err = s.c(s.DB).QueryRowContext(ctx, `SELECT 1 FROM replicas WHERE id = ?`, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("replica %s: %w", id, ErrNotFound)
	case err != nil:
		return fmt.Errorf("forget replica: %w", err)
	}
	return fmt.Errorf("replica %s is alive: %w", id, ErrConflict)
}

// PruneReplicas forgets the replicas silent (or stopped) for longer than
// age, by the database's clock, and returns how many.
func (s *Store) PruneReplicas(ctx context.Context, age time.Duration) (int, error) {
	expr, args := s.clockMS()
	res, err := s.c(s.DB).ExecContext(ctx, `DELETE FROM replicas WHERE heartbeat_at < `+expr+` - ?`,
		append(args, age.Milliseconds())...)
	if err != nil {
		return 0, fmt.Errorf("prune replicas: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// BeginExecution starts an execution of an item: it takes the item's next
// fencing token and reads the item with it (ItemWork.ExecSeq), in one
// statement. SaveItem and FinishItem of that ItemWork then succeed only
// while no later execution has begun.
func (s *Store) BeginExecution(ctx context.Context, opID, instanceID string) (ItemWork, error) {
	var seq int64
	sent := time.Now()
	w, err := scanItem(withExtra{s.c(s.DB).QueryRowContext(ctx, `UPDATE items SET exec_seq = exec_seq + 1
		WHERE operation_id = ? AND instance_id = ? RETURNING `+beginColumns+`, exec_seq`, opID, instanceID), &seq})
	if errors.Is(err, sql.ErrNoRows) {
		return w, fmt.Errorf("item %s/%s: %w", opID, instanceID, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("begin execution: %w", err)
	}
	w.ExecSeq, w.TokenAt = seq, sent
	return w, nil
}

// BeginWork is BeginExecution, then GetInstanceForWork of the item's
// instance: what an execution reads before it acts. On PostgreSQL it is
// one statement. The instance is nil when it was removed.
func (s *Store) BeginWork(ctx context.Context, opID, instanceID string) (ItemWork, *apiv1.Instance, LinkHolding, error) {
	if s.dialect != Postgres {
		// SQLite cannot modify rows in a WITH; its statements cost no
		// round trip.
		return s.beginWorkApart(ctx, opID, instanceID)
	}
	var h LinkHolding
	sent := time.Now()
	row := s.c(s.DB).QueryRowContext(ctx, `WITH w AS (UPDATE items SET exec_seq = exec_seq + 1
		WHERE operation_id = ? AND instance_id = ? RETURNING `+beginColumns+`, exec_seq)
		SELECT w.*, `+instanceForWork+` FROM w JOIN instances i ON i.id = w.instance_id`, opID, instanceID)
	// One row, scanned by the item's and the instance's scanners nested:
	// each converts its own columns once the row is read.
	var w ItemWork
	var seq int64
	in, err := scanInstance(withCounts{scanFunc(func(instance ...any) error {
		var err error
		w, err = scanItem(scanFunc(func(item ...any) error {
			return row.Scan(append(append(item, &seq), instance...)...)
		}))
		return err
	}), &h.Power, &h.Guest})
	if errors.Is(err, sql.ErrNoRows) {
		// The item, or only its instance, is gone: the two statements
		// tell which (and take the token again, which costs nothing).
		return s.beginWorkApart(ctx, opID, instanceID)
	}
	if err != nil {
		return w, nil, h, fmt.Errorf("begin execution: %w", err)
	}
	w.ExecSeq, w.TokenAt = seq, sent
	ownLinks(in, &h)
	return w, &in, h, nil
}

// beginWorkApart is BeginWork in two statements.
func (s *Store) beginWorkApart(ctx context.Context, opID, instanceID string) (ItemWork, *apiv1.Instance, LinkHolding, error) {
	w, err := s.BeginExecution(ctx, opID, instanceID)
	if err != nil {
		return w, nil, LinkHolding{}, err
	}
	in, h, err := s.GetInstanceForWork(ctx, s.DB, instanceID)
	if errors.Is(err, ErrNotFound) {
		return w, nil, h, nil
	}
	if err != nil {
		return w, nil, h, err
	}
	return w, &in, h, nil
}

type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// beginColumns are itemColumns as an UPDATE of items returns them (the
// operation's tenant and item count by subqueries: RETURNING sees only
// the updated table).
var beginColumns = strings.NewReplacer("i.", "",
	"o.tenant_id", "(SELECT o.tenant_id FROM operations o WHERE o.id = items.operation_id) AS op_tenant",
	"o.total", "(SELECT o.total FROM operations o WHERE o.id = items.operation_id) AS op_total").Replace(itemColumns)

// withExtra scans a row's last columns into extra after the ones its
// caller asks for.
type withExtra struct {
	row   interface{ Scan(...any) error }
	extra *int64
}

func (w withExtra) Scan(dest ...any) error { return w.row.Scan(append(dest, w.extra)...) }

// CheckExecution returns ErrSuperseded when w's execution no longer holds
// its item's fencing token (nil for an ItemWork read without one). The
// engine asks before each action on a machine.
func (s *Store) CheckExecution(ctx context.Context, q Querier, w *ItemWork) error {
	if w.ExecSeq == 0 {
		return nil
	}
	var seq int64
	err := s.c(q).QueryRowContext(ctx, `SELECT exec_seq FROM items WHERE operation_id = ? AND instance_id = ?`,
		w.OperationID, w.InstanceID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("item %s/%s: %w", w.OperationID, w.InstanceID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("check execution: %w", err)
	}
	if seq != w.ExecSeq {
		return fmt.Errorf("item %s/%s (execution %d, now %d): %w", w.OperationID, w.InstanceID, w.ExecSeq, seq, ErrSuperseded)
	}
	return nil
}

// lockBootstrap is the lock namespace of a server's first-start work (the
// admin key, the demo fleets): see BootstrapLock.
const lockBootstrap int32 = 40

// BootstrapLock is the WithSessionLock namespace servers starting together
// on one database take turns under to create the first admin key once.
const BootstrapLock = lockBootstrap
