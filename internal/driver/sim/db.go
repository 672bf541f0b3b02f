package sim

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetpass/fleetpass/internal/store"
)

// The fleet's table in a shared database. The sim package creates it
// itself (CREATE TABLE IF NOT EXISTS) rather than through the store's
// migrations: it is a simulator's table, which a production database
// should never carry, and the sim's tests and tools open it without the
// rest of the schema. Its columns are those of the fleet file (on SQLite,
// the same schema: sqliteTable).
const (
	dbTable = "sim_machines"

	pgSchema = `CREATE TABLE IF NOT EXISTS sim_machines (
	id            TEXT PRIMARY KEY,
	os            TEXT NOT NULL,
	power         TEXT NOT NULL,
	since_ns      BIGINT NOT NULL,
	boot_ns       BIGINT NOT NULL,
	shutdown_ns   BIGINT NOT NULL,
	hang_shutdown BOOLEAN NOT NULL,
	agent_dead    BOOLEAN NOT NULL,
	transient     INTEGER NOT NULL,
	users         BYTEA NOT NULL,
	busy_by       TEXT NOT NULL,
	busy_until_ns BIGINT NOT NULL,
	overlap_count INTEGER NOT NULL,
	applied       INTEGER NOT NULL
)`

	// pgClock is the database's clock in nanoseconds (to the
	// microsecond). clock_timestamp, not now(): now() is the start of the
	// transaction, before the row lock was granted, so a transaction that
	// waited for the lock could read a time earlier than the one that
	// held it.
	pgClock = `(extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000`
)

// dbQueries are the fleet's statements, in the dialect's spelling.
type dbQueries struct {
	lock, peek, insert, update, delete, list, overlaps, clock string
}

func newDBQueries(dialect store.Dialect) dbQueries {
	q := dbQueries{
		lock:     `SELECT id, ` + machineColumns + ` FROM sim_machines WHERE id = ?`,
		peek:     `SELECT id, ` + machineColumns + ` FROM sim_machines WHERE id = ?`,
		insert:   `INSERT INTO sim_machines (id, ` + machineColumns + `) VALUES (?, ` + machineBinds + `) ON CONFLICT (id) DO NOTHING`,
		update:   `UPDATE sim_machines SET (` + machineColumns + `) = (` + machineBinds + `) WHERE id = ?`,
		delete:   `DELETE FROM sim_machines WHERE id = ?`,
		list:     `SELECT id, ` + machineColumns + ` FROM sim_machines ORDER BY id`,
		overlaps: `SELECT COALESCE(SUM(overlap_count), 0) FROM sim_machines`,
	}
	if dialect == store.Postgres {
		// The clock is read in the statement that takes the row lock,
		// after the lock: a MATERIALIZED CTE runs to completion (locks
		// taken) before the outer SELECT evaluates clock_timestamp().
		q.lock = `WITH m AS MATERIALIZED (SELECT id, ` + machineColumns + ` FROM sim_machines WHERE id = ? FOR UPDATE)
			SELECT m.*, ` + pgClock + ` FROM m`
		q.peek = `SELECT id, ` + machineColumns + `, ` + pgClock + ` FROM sim_machines WHERE id = ?`
		q.clock = `SELECT ` + pgClock
		for _, p := range []*string{&q.lock, &q.peek, &q.insert, &q.update, &q.delete} {
			*p = numberBinds(*p)
		}
	}
	return q
}

// numberBinds rewrites the ? placeholders of q as $1, $2, ... (the queries
// above have no ? anywhere else).
func numberBinds(q string) string {
	var b strings.Builder
	n := 0
	for _, part := range strings.Split(q, "?") {
		if n > 0 {
			b.WriteString("$" + strconv.Itoa(n))
		}
		b.WriteString(part)
		n++
	}
	return b.String()
}

// dbFleet keeps a fleet in a database table, with nothing in memory.
type dbFleet struct {
	db      *sql.DB
	dialect store.Dialect
	q       dbQueries
	// now is the clock when the database's is not used (dbClock false).
	now     func() time.Time
	dbClock bool
	closed  atomic.Bool
}

// OpenDB opens the fleet kept in the table sim_machines of db, a
// PostgreSQL or SQLite database (dialect), creating the table if needed.
// Any number of Fleet values, in any number of processes, may open the
// same database: they see and change one fleet, machine by machine under
// row locks. Close does not close db.
//
// On SQLite, db should wait for locks (a busy_timeout): each call takes
// the database's write lock (BEGIN IMMEDIATE).
func OpenDB(ctx context.Context, db *sql.DB, dialect store.Dialect, opts Options) (*Fleet, error) {
	b := &dbFleet{db: db, dialect: dialect, q: newDBQueries(dialect), now: clockOf(opts),
		dbClock: dialect == store.Postgres && opts.Now == nil}
	switch dialect {
	case store.Postgres, store.SQLite:
	default:
		return nil, fmt.Errorf("sim: open fleet in the database: unknown dialect %q", dialect)
	}
	if err := b.createTable(ctx); err != nil {
		return nil, fmt.Errorf("sim: open fleet in the database: %w", err)
	}
	return &Fleet{b: b, actionTime: opts.ActionTime}, nil
}

func (b *dbFleet) createTable(ctx context.Context) error {
	return b.inTx(ctx, func(q querier) error {
		ddl := sqliteTable(dbTable)
		if b.dialect == store.Postgres {
			// Concurrent CREATE TABLE IF NOT EXISTS can fail on
			// PostgreSQL (a unique violation in its catalog): replicas
			// starting together take turns. The one-key advisory lock
			// space is apart from the store's two-key one.
			ddl = pgSchema
			if _, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('fleetpass.sim_machines'))`); err != nil {
				return err
			}
		}
		if _, err := q.ExecContext(ctx, ddl); err != nil {
			return err
		}
		// A table of another shape (an older or newer fleetpass) is
		// refused here rather than misread later.
		rows, err := q.QueryContext(ctx, `SELECT id, `+machineColumns+` FROM `+dbTable+` WHERE 1 = 0`)
		if err != nil {
			return fmt.Errorf("table %s has an unexpected shape: %w", dbTable, err)
		}
		return rows.Close()
	})
}

// querier is what a transaction offers.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// maxAttempts bounds the runs of one transaction that the database
// aborted as a deadlock victim or found busy.
const maxAttempts = 10

// inTx runs fn in a transaction that writes (on SQLite, BEGIN IMMEDIATE,
// so that reading and then writing a row cannot fail halfway), again from
// the start when the database asks for a retry.
func (b *dbFleet) inTx(ctx context.Context, fn func(q querier) error) error {
	return store.Retry(ctx, maxAttempts, func() error { return b.inTxOnce(ctx, fn) })
}

func (b *dbFleet) inTxOnce(ctx context.Context, fn func(q querier) error) error {
	if b.dialect == store.Postgres {
		tx, err := b.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	// database/sql has no BEGIN IMMEDIATE: run it on a connection of our
	// own, and never give that connection back inside a transaction.
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	err = fn(conn)
	end := `COMMIT`
	if err != nil {
		end = `ROLLBACK`
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, endErr := conn.ExecContext(ectx, end); endErr != nil {
		_, _ = conn.ExecContext(ectx, `ROLLBACK`)
		_ = conn.Raw(func(any) error { return sqldriver.ErrBadConn })
		if err == nil {
			err = endErr
		}
	}
	return err
}

func (b *dbFleet) close() error {
	b.closed.Store(true)
	return nil
}

// clock reads the fleet's time: the database's, or the local clock.
func (b *dbFleet) clock(ctx context.Context, q querier) (time.Time, error) {
	if !b.dbClock {
		return b.now(), nil
	}
	var ns int64
	if err := q.QueryRowContext(ctx, b.q.clock).Scan(&ns); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns).UTC(), nil
}

func (b *dbFleet) time(ctx context.Context) (time.Time, error) {
	if b.closed.Load() {
		return time.Time{}, ErrClosed
	}
	return b.clock(ctx, b.db)
}

func (b *dbFleet) insert(ctx context.Context, id string, st state) error {
	if b.closed.Load() {
		return ErrClosed
	}
	cols, err := columns(st)
	if err != nil {
		return err
	}
	res, err := b.db.ExecContext(ctx, b.q.insert, append([]any{id}, cols...)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrMachineExists
	}
	return nil
}

func (b *dbFleet) remove(ctx context.Context, id string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	res, err := b.db.ExecContext(ctx, b.q.delete, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return notFound(id)
	}
	return nil
}

func (b *dbFleet) update(ctx context.Context, id string, readMostly bool, fn func(s *state, now time.Time) bool) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if readMostly {
		// One statement instead of a transaction's four, for the calls
		// that only read (State and Ping, polled while machines boot):
		// what fn saw was the machine's committed state at that moment.
		s, now, err := b.read(ctx, b.db, b.q.peek, id)
		if err != nil {
			return err
		}
		if !fn(&s, now) {
			return nil
		}
	}
	return b.inTx(ctx, func(q querier) error {
		s, now, err := b.read(ctx, q, b.q.lock, id)
		if err != nil {
			return err
		}
		if !fn(&s, now) {
			return nil
		}
		cols, err := columns(s)
		if err != nil {
			return err
		}
		_, err = q.ExecContext(ctx, b.q.update, append(cols, id)...)
		return err
	})
}

// read reads machine id with query (peek or lock) and the time.
func (b *dbFleet) read(ctx context.Context, q querier, query, id string) (state, time.Time, error) {
	var (
		s     state
		clock int64
		err   error
	)
	row := q.QueryRowContext(ctx, query, id)
	if b.dialect == store.Postgres {
		_, s, err = scanMachine(row, &clock)
	} else {
		_, s, err = scanMachine(row)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return state{}, time.Time{}, notFound(id)
	}
	if err != nil {
		return state{}, time.Time{}, err
	}
	if b.dbClock {
		return s, time.Unix(0, clock).UTC(), nil
	}
	return s, b.now(), nil
}

func (b *dbFleet) list(ctx context.Context) ([]Snapshot, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	now, err := b.clock(ctx, b.db)
	if err != nil {
		return nil, err
	}
	rows, err := b.db.QueryContext(ctx, b.q.list)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var snaps []Snapshot
	for rows.Next() {
		id, s, err := scanMachine(rows)
		if err != nil {
			return nil, err
		}
		// Settled in the snapshot only: the result of a transition is a
		// function of time, so nothing needs writing back.
		s.settle(now)
		snaps = append(snaps, s.snapshot(id))
	}
	return snaps, rows.Err()
}

func (b *dbFleet) overlaps(ctx context.Context) (int, error) {
	if b.closed.Load() {
		return 0, ErrClosed
	}
	var n int
	err := b.db.QueryRowContext(ctx, b.q.overlaps).Scan(&n)
	return n, err
}
