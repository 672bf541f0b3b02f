package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultMaxConns is the PostgreSQL pool size when the URL does not set
// pool_max_conns: enough for the engine's workers, whose steps hold a
// connection only for a short transaction each.
const DefaultMaxConns = 32

// OpenPostgres connects to the PostgreSQL database at url (a postgres://
// URL or a key=value connection string, as libpq takes) and brings its
// schema up to date, under a lock so that servers starting together
// migrate once.
func OpenPostgres(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message names the problem and never repeats the password.
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "fleetpass"
	}
	// A transaction left open by a stalled process holds its row locks;
	// fleetpass's own transactions last milliseconds.
	if rp["idle_in_transaction_session_timeout"] == "" {
		rp["idle_in_transaction_session_timeout"] = "60000"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// A pool's connection that was dropped (a restarted PostgreSQL) fails
	// once and is replaced; the check before reuse keeps that rare.
	cfg.HealthCheckPeriod = 5 * time.Second
	where := describe(cfg.ConnConfig.Config)
	counter := &statementCounter{}
	cfg.ConnConfig.Tracer = counter

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, connectError(where, err)
	}
	var version int
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s: %w", where, err)
	}
	if version < 150000 {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s is version %d.%d; fleetpass needs 15 or newer", where, version/10000, version%10000)
	}
	lcfg := cfg.Copy()
	lcfg.MaxConns = 2
	lcfg.MinConns = 0
	listen, err := pgxpool.NewWithConfig(ctx, lcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s: %w", where, err)
	}
	s := &Store{DB: stdlib.OpenDBFromPool(pool), now: time.Now, dialect: Postgres, pg: pool, listen: listen,
		pgStatements: counter}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// statementCounter counts the statements of a pgx pool.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// ListenerPool is the PostgreSQL pool for LISTEN (River's notifier), nil
// on SQLite.
func (s *Store) ListenerPool() *pgxpool.Pool { return s.listen }

// describe names the database for messages: user, host and database,
// never the password.
func describe(c pgconn.Config) string {
	host := c.Host
	if !strings.HasPrefix(host, "/") {
		host = net.JoinHostPort(host, fmt.Sprint(c.Port))
	}
	return fmt.Sprintf("%s (user %s, database %s)", host, c.User, c.Database)
}

// connectError says in an operator's words why the first connection
// failed.
func connectError(where string, err error) error {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000"):
		return fmt.Errorf("PostgreSQL at %s refused the credentials (check the user and password of the database URL): %w", where, err)
	case errors.As(err, &pe) && pe.Code == "3D000":
		return fmt.Errorf("PostgreSQL at %s: the database does not exist (create it first, see docs/postgresql.md): %w", where, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("PostgreSQL at %s did not answer in time: %w", where, err)
	default:
		return fmt.Errorf("cannot connect to PostgreSQL at %s: %w", where, err)
	}
}
