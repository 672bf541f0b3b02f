package store

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// maxCached bounds the statement cache: queries with IN lists of many
// lengths must not grow it without end.
const maxCached = 512

// stmtCache keeps prepared statements: the pure Go SQLite driver spends
// about as long parsing a statement as running it, and the engine runs the
// same few statements for every item.
type stmtCache struct {
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool
	closed  bool
}

// get returns the prepared statement for query, or nil when it is not
// prepared yet. Preparing needs a connection, and SQLite mode has just one,
// which a transaction in progress holds: so a miss prepares in the
// background, and the next use of the query finds it ready.
func (c *stmtCache) get(db *sql.DB, query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.stmts[query]; ok {
		return st
	}
	if c.closed || len(c.stmts)+len(c.pending) >= maxCached || c.pending[query] {
		return nil
	}
	if c.pending == nil {
		c.pending = make(map[string]bool)
		c.stmts = make(map[string]*sql.Stmt)
	}
	c.pending[query] = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := db.PrepareContext(ctx, query)
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.pending, query)
		if err != nil {
			return // the query keeps running unprepared; its own errors are reported there
		}
		if c.closed {
			st.Close()
			return
		}
		c.stmts[query] = st
	}()
	return nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts, c.closed = nil, true
}

// cached runs queries of q through prepared statements.
type cached struct {
	s *Store
	q Querier
}

// c wraps q so its queries use the statement cache.
func (s *Store) c(q Querier) cached { return cached{s: s, q: q} }

func (c cached) stmt(ctx context.Context, query string) *sql.Stmt {
	if c.s.dialect == Postgres {
		// pgx prepares and caches statements per connection itself.
		return nil
	}
	st := c.s.stmts.get(c.s.DB, query)
	if st == nil {
		return nil
	}
	if tx, ok := c.q.(*sql.Tx); ok {
		// Closed with the transaction.
		return tx.StmtContext(ctx, st)
	}
	return st
}

func (c cached) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	c.s.statements.Add(1)
	if c.s.dialect == Postgres {
		return c.q.ExecContext(ctx, c.s.binds.rebind(query), args...)
	}
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.q.ExecContext(ctx, query, args...)
}

func (c cached) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	c.s.statements.Add(1)
	if c.s.dialect == Postgres {
		return c.q.QueryContext(ctx, c.s.binds.rebind(query), args...)
	}
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.q.QueryContext(ctx, query, args...)
}

func (c cached) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.s.statements.Add(1)
	if c.s.dialect == Postgres {
		return c.q.QueryRowContext(ctx, c.s.binds.rebind(query), args...)
	}
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.q.QueryRowContext(ctx, query, args...)
}
