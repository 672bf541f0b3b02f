// Package store keeps fleetpass's state in SQL: tenants, API keys,
// instances, operations and their items, idempotency keys, the event log
// behind /v1/events and the audit trail. It is the only package that writes
// SQL for them; River keeps its own tables beside them in the same database.
//
// Every piece of state another replica would need lives here, never in one
// process's memory: the per-instance lock is a column set in the transaction
// that accepts an operation, and events are rows that every replica reads.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the pure Go SQLite driver, so serve needs nothing installed
)

// Both dialects' migrations, with the same version numbers: one schema.
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Errors the store returns; callers test them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Store is a handle on the database. It is safe for concurrent use.
type Store struct {
	DB *sql.DB
	// now is the clock; tests may replace it.
	now     func() time.Time
	stmts   stmtCache
	dialect Dialect
	binds   rebinder
	// pg is the PostgreSQL connection pool behind DB, listen a small pool
	// for LISTEN (River's notifier); both nil on SQLite.
	pg, listen *pgxpool.Pool
	// statements counts the store's own statements; pgStatements every
	// statement on the PostgreSQL pool, River's included (benchmarks).
	statements   atomic.Int64
	pgStatements *statementCounter
	// gaps holds back events after a missing id (PostgreSQL).
	gaps gapWatch
	// notify is the cross-replica wake-ups (PostgreSQL, notify.go).
	notify notifier
	closed atomic.Bool
}

// Statements is the number of SQL statements the store has run.
func (s *Store) Statements() int64 { return s.statements.Load() }

// DatabaseStatements is the number of statements run on the PostgreSQL
// pool by anyone (the store, River), or -1 on SQLite.
func (s *Store) DatabaseStatements() int64 {
	if s.pgStatements == nil {
		return -1
	}
	return s.pgStatements.n.Load()
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	// WAL lets readers proceed beside the writer; synchronous=NORMAL is
	// durable across process crashes (only a power loss can drop the last
	// commits), which is what "kill the server at any moment" needs.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=cache_size(-65536)&_pragma=temp_store(memory)&_pragma=locking_mode(EXCLUSIVE)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One connection: SQLite has a single writer anyway, and River's SQLite
	// driver recommends it to avoid SQLITE_BUSY between pool connections.
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	s := &Store{DB: db, now: time.Now, dialect: SQLite}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// ErrSchemaTooNew is returned when the database was migrated by a newer
// fleetpass than this one: running on it could corrupt what that version
// wrote.
var ErrSchemaTooNew = errors.New("the database schema is newer than this fleetpass")

// migrate brings the schema up to date. Each migration runs in its own
// transaction, so a failure leaves the schema at the last whole version.
func (s *Store) migrate(ctx context.Context) error {
	dir, gd := "migrations/sqlite", goose.DialectSQLite3
	if s.dialect == Postgres {
		dir, gd = "migrations/postgres", goose.DialectPostgres
	}
	sub, err := fs.Sub(migrations, dir)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// Out of order: migrations are numbered as branches are planned, and
	// one with a lower number may land after a higher one was applied.
	// Each is independent of the others' order.
	p, err := goose.NewProvider(gd, s.DB, sub, goose.WithDisableGlobalRegistry(true), goose.WithAllowOutofOrder(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	return s.WithSessionLock(ctx, lockMigrate, "schema", func(ctx context.Context) error {
		srcs := p.ListSources()
		known := srcs[len(srcs)-1].Version
		have, err := p.GetDBVersion(ctx)
		if err != nil {
			return fmt.Errorf("migrate: read the schema version: %w", err)
		}
		if have > known {
			return fmt.Errorf("%w: it is at version %d, this fleetpass knows versions up to %d; run a fleetpass at least as new as the one that last ran on it", ErrSchemaTooNew, have, known)
		}
		if _, err := p.Up(ctx); err != nil {
			return s.explainMigration(ctx, fmt.Errorf("migrate: %w", err))
		}
		return nil
	})
}

// WithSessionLock runs fn while holding a database-wide lock named by (ns,
// key), so two servers starting at once against one PostgreSQL database
// migrate (or bootstrap) once, one after the other. SQLite needs none: its
// data directory is locked to one process.
func (s *Store) WithSessionLock(ctx context.Context, ns int32, key string, fn func(context.Context) error) error {
	if s.dialect != Postgres {
		return fn(ctx)
	}
	conn, err := s.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, ns, key); err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, ns, key); err != nil {
			// A lock we cannot release must not go back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return fn(ctx)
}

// MigrationLock is the lock namespace for schema migrations, for callers
// (the engine's River migration) that migrate tables of their own.
const MigrationLock = lockMigrate

// Close closes the database.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.stmts.close()
	err := s.DB.Close()
	if s.pg != nil {
		s.pg.Close()
	}
	if s.listen != nil {
		s.listen.Close()
	}
	return err
}

// SetClock replaces the store's clock (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Querier is what both *sql.DB and *sql.Tx offer.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// maxTxAttempts bounds the runs of one InTx when PostgreSQL picks its
// transaction as a deadlock or serialization victim.
const maxTxAttempts = 8

// InTx runs fn in a transaction, committing if it returns nil. A
// transaction the database aborted as a deadlock or serialization victim
// is run again from the start (after a short random pause), so fn must
// set everything it reports from scratch on each run.
func (s *Store) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return Retry(ctx, maxTxAttempts, func() error { return s.inTx(ctx, fn) })
}

// inSnapshot runs the reads of fn in one snapshot of the database: a
// read-only REPEATABLE READ transaction on PostgreSQL, whose READ COMMITTED
// default takes a new snapshot per statement.
func (s *Store) inSnapshot(ctx context.Context, fn func(tx *sql.Tx) error) error {
	opts := &sql.TxOptions{}
	if s.dialect == Postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	return s.inTxOpts(ctx, opts, fn)
}

func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.inTxOpts(ctx, nil, fn)
}

func (s *Store) inTxOpts(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	tx, err := s.DB.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		s.txEnded(tx, false)
		return err
	}
	if err := tx.Commit(); err != nil {
		// The commit's outcome is unknown: a needless wake-up is cheap.
		s.txEnded(tx, true)
		return fmt.Errorf("commit: %w", err)
	}
	s.txEnded(tx, true)
	return nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}

// placeholders returns "?, ?, ?" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
